"""Wall time of `catdog sample --n 64` inside one process: 64 dogs, refined and raw, warm.

    python benchmarks/time_sampling.py pretrained [other_run ...] [--refiner-steps 20]

Per run folder: one warm-up call, then three timed `generate_images` calls (seeds 0-2, the sampling
defaults: DDIM 50, guidance 9, refiner 10 steps unless given), with and without the run's refiner.
Compare folders within one run: machines differ in speed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from catdog.config import SampleConfig  # noqa: E402
from catdog.run_dir import load_run  # noqa: E402
from catdog.sample import generate_images  # noqa: E402


def main(folders: list[str], refiner_steps: int) -> None:
    labels = np.ones(64, dtype=np.int64)
    for folder in folders:
        run = load_run(Path(folder))
        for name, refiner in (("refined", run.refiner), ("raw", None)):
            generate_images(run.autoencoder, run.diffusion, labels[:8], refiner=refiner, refiner_steps=refiner_steps)
            times = []
            for seed in range(3):
                start = time.perf_counter()
                generate_images(run.autoencoder, run.diffusion, labels, seed=seed, refiner=refiner,
                                refiner_steps=refiner_steps)
                times.append(time.perf_counter() - start)
            label = f"{name}, {refiner_steps} refiner steps" if refiner else name
            print(f"{folder} {label}: " + " ".join(f"{t:.2f}" for t in times) + f" s, median {sorted(times)[1]:.2f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("folders", nargs="*", default=["pretrained"])
    parser.add_argument("--refiner-steps", type=int, default=SampleConfig().refiner_steps)
    args = parser.parse_args()
    main(args.folders, args.refiner_steps)
