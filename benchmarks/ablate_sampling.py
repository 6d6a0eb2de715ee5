"""Sampling ablations of a run's latent prior at one N, scored like `catdog evaluate` scores samples.

    python benchmarks/ablate_sampling.py --run-dir pretrained --n 2000 --out runs/ablate_sampling --no-refiner
    python benchmarks/ablate_sampling.py --run-dir runs/prior_new --floor-from pretrained/eval.json \
        --n 2000 --out runs/ablate_prior_new --variants ddim50_g6

Each variant is a set of SampleConfig fields (autoguidance and CFG rescale lost and left the package:
docs/experiments.md, session 18; rerunnable at commit 21e143e). Per variant:
N samples with the classes and seeds `catdog evaluate` uses, scored by the same code (FID against the
same training statistics, KID, precision / recall, the ResNet-20 judge) into OUT/<name>[_raw].json;
`prior_gap` is that FID minus the run's decoding floor from its eval.json (same N, refined or raw), or with
--own-floor minus the floor measured at the variant's own refiner steps (OUT/floor_refiner<k>.json, the
refined reconstructions of the same N real images `catdog evaluate` uses, scored by the same code).
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
from catdog.evaluate import FidScorer, floor_originals, reconstruction_scores, score_samples  # noqa: E402
from catdog.judge import load_judge  # noqa: E402
from catdog.run_dir import load_run  # noqa: E402

VARIANTS = {                                     # name: SampleConfig fields (guidance always named: defaults move)
    "ddim50_g6": {"guidance": 6.0},
    "ddim50_g6_eta1": {"guidance": 6.0, "eta": 1.0},
    "ddim50_g6_interval0.5_10": {"guidance": 6.0, "guidance_interval": (0.5, 10.0)},
    "ddim50_g9_interval0.5_10": {"guidance": 9.0, "guidance_interval": (0.5, 10.0)},
    "ddim50_g3": {"guidance": 3.0},
    "ddim50_g7.5": {"guidance": 7.5},
    "ddim50_g9": {"guidance": 9.0},
    "ddim50_g9_seed1000": {"guidance": 9.0, "seed": 1000},       # other draws: batches seeded 1000, 1001, ...
    "ddim50_g12": {"guidance": 12.0},
    "ddim50_g9_refiner20": {"guidance": 9.0, "refiner_steps": 20},   # --own-floor: its own, else the run's
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
parser.add_argument("--own-floor", action="store_true",
                    help="measure the refined floor at each variant's refiner steps instead of reading it")
parser.add_argument("--ref-stats", type=Path, default=ROOT.parent / "shared/fid_stats")
args = parser.parse_args()


def own_floor(sample: SampleConfig) -> float:
    """The decoding floor at `sample`'s refiner steps: FID of the refined reconstructions (cached in OUT)."""
    path = args.out / f"floor_refiner{sample.refiner_steps}.json"
    if not path.exists():
        originals, real_labels, features, counts = floor_originals(labels, fid, None)
        refined = run.refine_reconstructions(originals, real_labels, sample)
        row = reconstruction_scores(refined, originals, real_labels, judge, fid, features)
        path.write_text(json.dumps({**row, "refiner_steps": sample.refiner_steps, "floor_images": counts},
                                   indent=2) + "\n")
    return json.loads(path.read_text())["floor_fid"]


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
    fields = VARIANTS[name]
    sample = replace(SampleConfig(), **fields, refiner=not args.no_refiner)
    if path.exists():                                           # finished; --own-floor may still add its floor
        row = json.loads(path.read_text())
        if not args.own_floor or args.no_refiner or row.get("floor_own"):
            continue
    fid = fid or FidScorer(None, args.ref_stats, None, torch.device("cpu"))
    if not path.exists():
        row = score_samples(run.generate(labels, sample), labels, judge, fid)
        row.update(variant=name, **fields, refiner=not args.no_refiner)
    own = args.own_floor and not args.no_refiner
    variant_floor = own_floor(sample) if own else floor if same_n else None
    row.update(floor_fid=variant_floor, floor_own=own,
               prior_gap=None if variant_floor is None else row["fid"] - variant_floor)
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
