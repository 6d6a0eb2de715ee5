"""Wall time of `catdog sample --n 64` inside one process: 64 dogs, refined and raw, warm.

    python benchmarks/time_sampling.py pretrained [other_run ...]

Per run folder: one warm-up call, then three timed `generate_images` calls (seeds 0-2, DDIM 50,
guidance 6, refiner 10 steps), with and without the run's refiner. Compare folders within one run:
machines differ in speed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from catdog.run_dir import load_run  # noqa: E402
from catdog.sample import generate_images  # noqa: E402


def main(folders: list[str]) -> None:
    labels = np.ones(64, dtype=np.int64)
    for folder in folders:
        run = load_run(Path(folder))
        for name, refiner in (("refined", run.refiner), ("raw", None)):
            generate_images(run.autoencoder, run.diffusion, labels[:8], refiner=refiner)
            times = []
            for seed in range(3):
                start = time.perf_counter()
                generate_images(run.autoencoder, run.diffusion, labels, seed=seed, refiner=refiner)
                times.append(time.perf_counter() - start)
            print(f"{folder} {name}: " + " ".join(f"{t:.2f}" for t in times) + f" s, median {sorted(times)[1]:.2f} s")


if __name__ == "__main__":
    main(sys.argv[1:] or ["pretrained"])
