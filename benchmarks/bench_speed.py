"""Speed benchmark: training throughput of both stages and sampling throughput per step count.

    python benchmarks/bench_speed.py [--preset cpu] [--device cpu] [--repeats 5]
    python benchmarks/bench_speed.py --config pretrained/config.json --only diffusion --set unet_widths=[512,256]

Warmed up, repeated, median (and min/max) reported with the machine, torch version and commit
(airbench style). Uses random inputs of the real shapes, so no trained run is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from catdog.autoencoder import SimpleAutoencoder  # noqa: E402
from catdog.config import PRESETS, config_from_dict, override  # noqa: E402
from catdog.diffusion import build_diffusion  # noqa: E402
from catdog.device import pick_device  # noqa: E402
from catdog.sample import sample_latents  # noqa: E402
from catdog.device import autocast, uses_bf16  # noqa: E402


def timed(fn, device, warmup: int, repeats: int) -> list[float]:
    """Wall seconds of fn() per repeat, after warm-up; synchronised on CUDA."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def summary(name: str, per_call: list[float], units: float, unit: str) -> str:
    rates = sorted(units / t for t in per_call)
    return (f"{name:34s} {statistics.median(rates):10.1f} {unit}  "
            f"(min {rates[0]:.1f}, max {rates[-1]:.1f}, n={len(rates)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    parser.add_argument("--device", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps-per-repeat", type=int, default=5)
    parser.add_argument("--no-bf16", action="store_true", help="float32 training steps (as --no-bf16)")
    parser.add_argument("--config", type=Path, default=None, help="a run's config.json instead of --preset")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                        help="override a config field, e.g. unet_widths=[512,256] (repeatable)")
    parser.add_argument("--only", choices=("autoencoder", "diffusion"), default=None,
                        help="time one stage's training steps and nothing else")
    args = parser.parse_args()
    device = pick_device(args.device)
    config = config_from_dict(json.loads(args.config.read_text())) if args.config else PRESETS[args.preset]
    changes = {k: json.loads(v) for k, _, v in (item.partition("=") for item in args.set)}
    config = override(config, {**changes, **({"bf16": False} if args.no_bf16 else {})})
    ae_cfg, dif_cfg = config.ae, config.diffusion
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip() or "unknown"
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    precision = "bf16 autocast" if uses_bf16(device, config.run.bf16) else "float32"
    print(f"{args.config or 'preset ' + args.preset} {' '.join(args.set)} | device {device} ({machine}) "
          f"| torch {torch.__version__} | commit {commit} | training in {precision}")
    torch.manual_seed(0)

    # 1. autoencoder training steps
    model = SimpleAutoencoder(ae_cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    b = ae_cfg.ae_batch_size
    x, y = torch.rand(b, 3, 32, 32, device=device) * 2 - 1, torch.randint(0, 2, (b,), device=device)

    def ae_steps():
        for _ in range(args.steps_per_repeat):
            with autocast(device, config.run.bf16):
                loss, _, _ = model.loss(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    if args.only != "diffusion":
        t = timed(ae_steps, device, 1, args.repeats)
        print(summary(f"autoencoder train (batch {b})", t, b * args.steps_per_repeat, "img/s"))

    # 2. diffusion training steps
    diffusion = build_diffusion(ae_cfg.latent_dim, dif_cfg).to(device)
    opt = torch.optim.AdamW(diffusion.parameters(), lr=1e-4)
    b = dif_cfg.diffusion_batch_size
    z, y = torch.randn(b, ae_cfg.latent_dim, device=device), torch.randint(0, 2, (b,), device=device)
    g = torch.Generator().manual_seed(0)

    def diffusion_steps():
        for _ in range(args.steps_per_repeat):
            with autocast(device, config.run.bf16):
                loss = diffusion.loss(z, y, *(v.to(device) for v in diffusion.draw(b, z.shape[1], g)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    if args.only != "autoencoder":
        t = timed(diffusion_steps, device, 1, args.repeats)
        print(summary(f"diffusion train (batch {b})", t, args.steps_per_repeat, "steps/s"))
    if args.only:
        return

    # 3. sampling latents (guidance 2: two network calls per step) and decoding them
    diffusion.eval()
    n = 1000
    labels = (torch.arange(n) % 2).to(device)
    for sampler, steps in [("ddim", 10), ("ddim", 25), ("ddim", 50), ("ddpm", dif_cfg.n_steps)]:
        reps = args.repeats if steps <= 50 else 1
        t = timed(lambda: sample_latents(diffusion, labels, 0, steps, 2.0, sampler=sampler), device,
                  1 if steps <= 50 else 0, reps)
        print(summary(f"sample {n} latents, {sampler} {steps} steps", t, n, "samples/s"))
    with torch.no_grad():
        zs = torch.randn(n, ae_cfg.latent_dim, device=device)
        t = timed(lambda: model.decode(zs), device, 1, args.repeats)
    print(summary(f"decode {n} latents", t, n, "img/s"))

    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")
    print(f"peak host memory (max RSS): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
