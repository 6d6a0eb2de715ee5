"""Sampling ablations of a run's latent prior at one N, scored like `catdog evaluate` scores samples.

    python benchmarks/ablate_sampling.py --run-dir pretrained --n 2000 --out runs/ablate_sampling --no-refiner
    python benchmarks/ablate_sampling.py --run-dir runs/prior_new --floor-from pretrained/eval.json \
        --n 2000 --out runs/ablate_prior_new --variants ddim50_g6

Each variant is a set of SampleConfig fields (autoguidance and CFG rescale lost and left the package:
docs/experiments.md, session 18; rerunnable at commit 21e143e). Per variant:
N samples with the classes and seeds `catdog evaluate` uses, scored by the same code (FID against the
same training statistics, KID, precision / recall, the ResNet-20 judge) into OUT/<name>[_raw].json;
`prior_gap` is that FID minus the run's decoding floor from its eval.json (same N, refined or raw).
One Inception network serves every variant, so a variant costs its sampling and its features (~4 min
at N = 2,000 on 2 cores). A finished variant is skipped; the table of all of them ends the output.
"""

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from catdog.config import SampleConfig  # noqa: E402
from catdog.evaluate import FidScorer, score_samples  # noqa: E402
from catdog.judge import load_judge  # noqa: E402
from catdog.run_dir import load_run  # noqa: E402

VARIANTS = {                                     # name: SampleConfig fields (guidance always named: defaults move)
    "ddim50_g6": {"guidance": 6.0},
    "ddim50_g6_eta1": {"guidance": 6.0, "eta": 1.0},
    "ddim50_g6_interval0.5_10": {"guidance": 6.0, "guidance_interval": (0.5, 10.0)},
    "ddim50_g9_interval0.5_10": {"guidance": 9.0, "guidance_interval": (0.5, 10.0)},
    "ddim50_g3": {"guidance": 3.0},
    "ddim50_g9": {"guidance": 9.0},
    "ddim50_g12": {"guidance": 12.0},
    "ddim50_g9_refiner20": {"guidance": 9.0, "refiner_steps": 20},   # its floor is the 10-step refiner's
    "ddim200_g6": {"guidance": 6.0, "steps": 200},
    "ddpm_g6": {"guidance": 6.0, "sampler": "ddpm"},
}

parser = argparse.ArgumentParser()
parser.add_argument("--run-dir", type=Path, required=True)
parser.add_argument("--n", type=int, default=2000)
parser.add_argument("--out", type=Path, required=True)
parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
parser.add_argument("--no-refiner", action="store_true")
parser.add_argument("--floor-from", type=Path, default=None,
                    help="the eval.json with the decoding floor (default: the run's; another run's with the same "
                         "autoencoder, decoder and refiner, e.g. for a new prior)")
parser.add_argument("--ref-stats", type=Path, default=ROOT.parent / "shared/fid_stats")
args = parser.parse_args()

names = args.variants.split(",")
if unknown := [v for v in names if v not in VARIANTS]:
    sys.exit(f"--variants: unknown {', '.join(unknown)}")
run = load_run(args.run_dir)
floor_file = args.floor_from or run.paths.eval
evaluated = json.loads(floor_file.read_text()) if floor_file.is_file() else {}
same_n = evaluated.get("n_samples") == args.n                     # a floor is only comparable at the same N
floor = evaluated.get("floor_fid_raw") if args.no_refiner else \
    evaluated.get("floor_fid") if evaluated.get("refiner") else None
labels = np.arange(args.n) % 2                                   # as `catdog evaluate` samples
suffix = "_raw" if args.no_refiner else ""
args.out.mkdir(parents=True, exist_ok=True)
fid, judge = None, load_judge(None)
for name in names:
    path = args.out / f"{name}{suffix}.json"
    if path.exists():
        continue
    fields = VARIANTS[name]
    images = run.generate(labels, replace(SampleConfig(), **fields, refiner=not args.no_refiner))
    fid = fid or FidScorer(None, args.ref_stats, None, torch.device("cpu"))
    row = score_samples(images, labels, judge, fid)
    row.update(variant=name, **fields, refiner=not args.no_refiner, floor_fid=floor if same_n else None,
               prior_gap=row["fid"] - floor if same_n and floor is not None else None)
    path.write_text(json.dumps(row, indent=2) + "\n")
    print(f"{name}: FID {row['fid']:.2f}", flush=True)

print(f"\n| variant (N = {args.n}{', raw' if args.no_refiner else ', refined'}) | FID | gap | KID | precision / recall "
      "| class fidelity |\n|---|---|---|---|---|---|")
for name in names:
    path = args.out / f"{name}{suffix}.json"
    if path.exists():
        r = json.loads(path.read_text())
        gap = "" if r["prior_gap"] is None else f"{r['prior_gap']:.1f}"
        print(f"| {name} | {r['fid']:.1f} | {gap} | {r['kid']:.4f} | {r['precision']:.3f} / {r['recall']:.3f} "
              f"| {100 * r['class_fidelity']:.1f}% |")
