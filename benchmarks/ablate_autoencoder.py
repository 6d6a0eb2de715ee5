"""Autoencoder ablations at a fixed step budget: reconstruction PSNR, latent probe, judge on recons.

    python benchmarks/ablate_autoencoder.py --steps 700 'base={}' 'narrow4={"ae_channels": [32,64,128,128]}'
    python benchmarks/ablate_autoencoder.py --steps 5200 --train-n 1000 'base={}' 'l1={"l1_weight": 1.0}'

Each variant is the `cpu` preset with the given overrides, trained from scratch for --steps on the
2 CPU cores; the printed numbers are on the 2,000 test images, next to the PSNR on (up to 2,000 of)
the training images it saw (`train_psnr`: far above the test PSNR means memorised). `--train-n`
trains on a random subset, to reach many epochs (memorisation) in a short run. Wall times include
encoding.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from catdog.config import PRESETS, override  # noqa: E402
from catdog.data import create_cat_dog_dataset  # noqa: E402
from catdog.evaluate import cached_features  # noqa: E402
from catdog.fid import feature_stats, frechet_distance, inception_features, load_inception  # noqa: E402
from catdog.judge import class_accuracy, load_judge  # noqa: E402
from catdog.metrics import linear_probe_accuracy, psnr_db  # noqa: E402
from catdog.device import pick_device  # noqa: E402
from catdog.train import train_autoencoder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="+", help="NAME=JSON overrides of the cpu preset")
    parser.add_argument("--steps", type=int, default=700)
    parser.add_argument("--fid-n", type=int, default=0,
                        help="also the recon FID of the first N test images vs those originals (0: skip)")
    parser.add_argument("--train-n", type=int, default=0, help="train on a random subset of this size (0: all)")
    args = parser.parse_args()
    device = pick_device()
    judge = load_judge()
    train_images, train_labels = create_cat_dog_dataset("train")
    if args.train_n:
        keep = np.random.default_rng(0).permutation(len(train_images))[:args.train_n]
        train_images, train_labels = train_images[keep], train_labels[keep]
    test_images, test_labels = create_cat_dog_dataset("test")
    fid_images = test_images[:args.fid_n]
    if args.fid_n:
        fid_ref = feature_stats(cached_features(fid_images, "test", load_inception(), device))
    print(f"{'variant':14s} {'psnr_dB':>8s} {'train_psnr':>10s} {'probe':>6s} {'judge_recon':>11s} "
          f"{'recon_fid':>9s} {'train_s':>8s}  overrides")
    for variant in args.variants:
        name, _, changes = variant.partition("=")
        changes = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(changes or "{}").items()}
        config = override(PRESETS["cpu"], {"ae_train_steps": args.steps, **changes})
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            model = train_autoencoder(config, train_images, train_labels, Path(tmp) / "s.pt",
                                      Path(tmp) / "m.jsonl", device)
            seconds = time.perf_counter() - start
        recon = model.reconstruct_images(test_images)
        probe = linear_probe_accuracy(model.encode_images(train_images).numpy(), train_labels,
                                      model.encode_images(test_images).numpy(), test_labels)
        recon_fid = frechet_distance(*feature_stats(inception_features(recon[:args.fid_n])), *fid_ref) \
            if args.fid_n else float("nan")
        seen = train_images[:len(test_images)]
        train_psnr = psnr_db(seen, model.reconstruct_images(seen))
        print(f"{name:14s} {psnr_db(test_images, recon):8.2f} {train_psnr:10.2f} {probe:6.3f} "
              f"{class_accuracy(judge, recon, test_labels):11.3f} {recon_fid:9.1f} {seconds:8.0f}  "
              f"{json.dumps(changes)}", flush=True)


if __name__ == "__main__":
    main()
