"""Refiner training-step speed on this machine: widths x crop size x precision (seconds per step).

    python benchmarks/bench_refiner.py [--widths 48,96,96 64,128,128] [--crops 16 32] [--batch 64]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from catdog.config import RefinerConfig  # noqa: E402
from catdog.device import autocast  # noqa: E402
from catdog.refiner import Refiner  # noqa: E402
from catdog.training_loop import make_optimizer  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--widths", nargs="+", default=["48,96,96", "64,128,128"])
parser.add_argument("--crops", nargs="+", type=int, default=[16, 32])
parser.add_argument("--batch", type=int, default=64)
parser.add_argument("--steps", type=int, default=8)
args = parser.parse_args()
torch.set_num_threads(2)
cpu = torch.device("cpu")
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
for widths in args.widths:
    cfg = RefinerConfig(refiner_widths=tuple(int(w) for w in widths.split(",")))
    refiner = Refiner(cfg)
    n_params = sum(p.numel() for p in refiner.parameters())
    opt = make_optimizer(refiner, 1e-3, 0.0)
    for crop in args.crops:
        for bf16 in (True, False):
            x, x_hat = torch.rand(args.batch, 3, crop, crop) * 2 - 1, torch.rand(args.batch, 3, crop, crop) * 2 - 1
            y = torch.randint(0, 2, (args.batch,))
            times = []
            for i in range(args.steps + 2):
                t, noise, _ = refiner.draw(args.batch, (3, crop, crop))
                start = time.perf_counter()
                with autocast(cpu, bf16):
                    loss = refiner.loss_on(x, x_hat, y, t, noise)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if i >= 2:
                    times.append(time.perf_counter() - start)
            print(f"widths {widths} ({n_params / 1e6:.2f} M), crop {crop}, bf16 {bf16}: "
                  f"{statistics.mean(times) * 1000:.0f} +- {statistics.stdev(times) * 1000:.0f} ms/step")
