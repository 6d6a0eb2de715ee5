"""Training-step speed of a preset's two networks: eager at several batch sizes, and torch.compile modes.

    python benchmarks/bench_compile.py --preset gpu --mode eager --batches 128,256,512
    python benchmarks/bench_compile.py --preset gpu --mode reduce-overhead

On a machine where each kernel launch is expensive (the H100 lent here is a Firecracker VM) a
step of these small networks costs about the same at any batch size, and CUDA graphs
(`reduce-overhead`) cut the launches. Prints steps/s and img/s (median of 3 timed blocks of
--steps after --warmup steps, which include compilation) and the compile/warm-up time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from catdog.autoencoder import SimpleAutoencoder  # noqa: E402
from catdog.config import PRESETS  # noqa: E402
from catdog.diffusion import build_diffusion  # noqa: E402
from catdog.distributed import LossForward  # noqa: E402
from catdog.device import pick_device  # noqa: E402
from catdog.device import autocast  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(name, model, inputs, batch, device, mode, warmup, steps, bf16):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda" or None)
    fn = LossForward(model)
    if mode != "eager":
        fn = torch.compile(fn, mode=mode)

    def step():
        with autocast(device, bf16):
            out = fn(*inputs())
        loss = out[0] if isinstance(out, tuple) else out
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    start = time.perf_counter()
    for _ in range(warmup):
        step()
    sync(device)
    warm_s = time.perf_counter() - start
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        rates.append(steps / (time.perf_counter() - start))
    r = statistics.median(rates)
    print(f"{name:12s} {mode:16s} batch {batch:5d}: {r:8.1f} steps/s {r * batch:10.0f} samples/s "
          f"(warm-up incl. compile {warm_s:.1f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="gpu", choices=sorted(PRESETS))
    parser.add_argument("--mode", default="eager", choices=["eager", "default", "reduce-overhead"])
    parser.add_argument("--batches", default="", help="comma-separated batch sizes (default: the preset's)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    device = pick_device()
    config = PRESETS[args.preset]
    ae_cfg, dif_cfg = config.ae, config.diffusion
    print(f"preset {args.preset} | {torch.cuda.get_device_name() if device.type == 'cuda' else device} "
          f"| torch {torch.__version__}", flush=True)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    batches = [int(b) for b in args.batches.split(",")] if args.batches else [None]
    for b in batches:
        b_ae = b or ae_cfg.ae_batch_size
        model = SimpleAutoencoder(ae_cfg).to(device)
        x = torch.rand(b_ae, 3, 32, 32, device=device) * 2 - 1
        y = torch.randint(0, 2, (b_ae,), device=device)
        bench("autoencoder", model, lambda: (x, y, torch.randn(b_ae, ae_cfg.latent_dim, device=device)),
              b_ae, device, args.mode, args.warmup, args.steps, config.run.bf16)
    for b in batches:
        b_dif = (b * 4 if b else dif_cfg.diffusion_batch_size)
        diffusion = build_diffusion(ae_cfg.latent_dim, dif_cfg).to(device)
        z = torch.randn(b_dif, ae_cfg.latent_dim, device=device)
        y = torch.randint(0, 2, (b_dif,), device=device)
        bench("diffusion", diffusion,
              lambda: (z, y, *(v.to(device) for v in diffusion.draw(b_dif, z.shape[1], g))),
              b_dif, device, args.mode, args.warmup, args.steps, config.run.bf16)


if __name__ == "__main__":
    main()
