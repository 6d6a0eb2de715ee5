"""Did a refactor change any number? Capture a run's outputs at two commits and compare them bitwise.

    git worktree add /tmp/old 9fb6fcb && (cd /tmp/old && PYTHONPATH=src python $OLDPWD/benchmarks/equivalence.py capture /tmp/eq_old)
    PYTHONPATH=src python benchmarks/equivalence.py capture /tmp/eq_new
    PYTHONPATH=src python benchmarks/equivalence.py compare /tmp/eq_old /tmp/eq_new

Captured: 16 samples of pretrained/ (seed 0, DDIM 50, guidance 6), a `tiny` run, and a `tiny` run
with bf16 and the adversarial term; compared: images, every weight file and latent cache, and the
metrics.jsonl rows except their timing. Works with the API before and after the restructuring.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

STAGES = ("autoencoder", "diffusion", "latents")


def capture(out: Path) -> None:
    from catdog import PRESETS, generate_images
    from catdog.config import override
    from catdog.pipeline import run_all
    torch.set_num_threads(2)
    out.mkdir(parents=True, exist_ok=True)
    try:
        from catdog.run_dir import load_run
        run = load_run("pretrained")
        autoencoder, diffusion = run.autoencoder, run.diffusion
    except ImportError:                                          # before the restructuring
        from catdog import load_autoencoder, load_diffusion
        autoencoder, _ = load_autoencoder("pretrained")
        diffusion, _ = load_diffusion("pretrained")
    np.save(out / "pretrained_samples.npy",
            generate_images(autoencoder, diffusion, np.array([1] * 8 + [0] * 8), seed=0, steps=50, guidance=6.0))
    import inspect
    new_api = "until" in inspect.signature(run_all).parameters
    kw = dict(until="diffusion", figures=False) if new_api else dict(stages=("ae", "diffusion"))
    adv = {"bf16": True, "adv_weight": 0.8, "adv_start_step": 10, "adv_scale_every_steps": 3,
           "ae_train_steps": 25, "diffusion_train_steps": 15}
    run_all(PRESETS["tiny"], out / "tiny", **kw)
    run_all(override(PRESETS["tiny"], adv), out / "tiny_adv", **kw)


def compare(a: Path, b: Path) -> bool:
    from catdog.checkpoint import load_weights
    same = np.array_equal(np.load(a / "pretrained_samples.npy"), np.load(b / "pretrained_samples.npy"))
    print(f"pretrained samples equal: {same}")
    for run in ("tiny", "tiny_adv"):
        for stage in STAGES:
            x, y = (load_weights(d / run / f"{stage}.safetensors")[0] for d in (a, b))
            equal = x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
            print(f"{run} {stage}: {'equal' if equal else 'DIFFERENT'}")
            same &= equal
        rows = [[{k: v for k, v in json.loads(line).items() if k != "samples_per_s"}
                 for line in (d / run / "metrics.jsonl").read_text().splitlines()] for d in (a, b)]
        print(f"{run} metrics rows equal: {rows[0] == rows[1]}")
        same &= rows[0] == rows[1]
    return same


if __name__ == "__main__":
    if sys.argv[1] == "capture":
        capture(Path(sys.argv[2]))
    else:
        sys.exit(0 if compare(Path(sys.argv[2]), Path(sys.argv[3])) else 1)
