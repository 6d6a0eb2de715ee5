"""Cat <-> dog translation measured like the image-translation benchmarks (SDEdit / ILVR / EGSDE on AFHQ):
the test cats turned into dogs and the test dogs into cats at several strengths, each scored for

- realism of the target class: FID of the translations against the *target* class's training statistics
  (cat -> dog against the training dogs, dog -> cat against the training cats), and their mean;
- class: how often the independent ResNet-20 judge calls a translation the target class;
- faithfulness to the source: PSNR and SSIM against the source image (strength 0, the plain refined
  reconstruction, is the upper bound).

    python benchmarks/translation.py --run-dir pretrained --strengths 0,0.3,0.5,0.7 \\
        --out runs/translation --plot docs/figures/translation_tradeoff.png

Writes OUT/translation.json (one row per strength) and the trade-off plot (x: PSNR to the source,
y: target-class FID, one point per strength). Nothing here trains, samples or selects with the judge or
Inception; they only score finished images.
"""

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from catdog.config import SampleConfig  # noqa: E402
from catdog.data import CLASS_NAMES, create_cat_dog_dataset  # noqa: E402
from catdog.evaluate import FidScorer, fid_or_none  # noqa: E402
from catdog.judge import class_accuracy, load_judge  # noqa: E402
from catdog.metrics import psnr_db, ssim  # noqa: E402
from catdog.run_dir import load_run  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--run-dir", type=Path, default=ROOT / "pretrained")
parser.add_argument("--strengths", default="0,0.3,0.5,0.7")
parser.add_argument("--per-class", type=int, default=1000, help="test images translated per direction")
parser.add_argument("--ref-stats", type=Path, default=ROOT.parent / "shared" / "fid_stats")
parser.add_argument("--out", type=Path, default=ROOT / "runs" / "translation")
parser.add_argument("--plot", type=Path, default=None)
parser.add_argument("--replot", action="store_true", help="only redraw --plot from OUT/translation.json")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()
torch.set_num_threads(args.threads)


def plot(rows: list[dict], path: Path, per_class: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    ax.plot([r["psnr"] for r in rows], [r["fid_target"] for r in rows], "o-")
    for r in rows:
        ax.annotate(f"s={r['strength']:g}\n{100 * r['class_fidelity']:.0f}% target", (r["psnr"], r["fid_target"]),
                    fontsize=7, textcoords="offset points", xytext=(4, 4))
    ax.margins(x=0.12, y=0.2)
    ax.set_xlabel("PSNR to the source (dB): faithfulness")
    ax.set_ylabel("FID vs the target class's training images")
    ax.set_title(f"cat <-> dog img2img, {per_class} + {per_class} test images", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    print(f"wrote {path}")


def measure() -> list[dict]:
    run = load_run(args.run_dir)
    sample = replace(SampleConfig(), seed=args.seed)
    images, labels = create_cat_dog_dataset("test")
    sources = {c: images[labels == c][:args.per_class] for c in range(2)}
    judge = load_judge(None)
    fid = FidScorer(None, args.ref_stats, None, torch.device("cpu"))
    rows = []
    args.out.mkdir(parents=True, exist_ok=True)
    for strength in (float(s) for s in args.strengths.split(",")):
        start = time.perf_counter()
        row = {"strength": strength, "steps_run": int(sample.steps * strength), "n_per_direction": args.per_class}
        fids, fidelity, psnrs, ssims = [], [], [], []
        for source_class in range(2):
            target = 1 - source_class
            src = sources[source_class]
            out = run.img2img(src, np.full(len(src), target), strength, sample, progress=True)
            name = f"{CLASS_NAMES[source_class]}_to_{CLASS_NAMES[target]}"
            features = fid.features(out, name)
            row[f"fid_{name}"] = fid_or_none(features, fid.ref[CLASS_NAMES[target]])
            row[f"class_fidelity_{name}"] = class_accuracy(judge, out, np.full(len(out), target))
            row[f"psnr_{name}"], row[f"ssim_{name}"] = psnr_db(src, out), ssim(src, out)
            fids.append(row[f"fid_{name}"]), fidelity.append(row[f"class_fidelity_{name}"])
            psnrs.append(row[f"psnr_{name}"]), ssims.append(row[f"ssim_{name}"])
        row.update(fid_target=float(np.mean(fids)), class_fidelity=float(np.mean(fidelity)),
                   psnr=float(np.mean(psnrs)), ssim=float(np.mean(ssims)),
                   seconds=round(time.perf_counter() - start, 1))
        rows.append(row)
        print(json.dumps(row), flush=True)
        record = {"run_dir": str(args.run_dir), "sample": sample.__dict__, "rows": rows}
        (args.out / "translation.json").write_text(json.dumps(record, indent=2) + "\n")
    return rows


if args.replot:
    rows = json.loads((args.out / "translation.json").read_text())["rows"]
else:
    rows = measure()
if args.plot is not None:
    plot(rows, args.plot, rows[0]["n_per_direction"])
