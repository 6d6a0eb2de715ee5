"""`catdog evaluate`: sample quality, class fidelity and autoencoder quality of a run, as eval.json.

Samples are N/2 cats and N/2 dogs from the EMA model. Reported (N always stated):
- fid / fid_cat / fid_dog: against the real training cats+dogs / cats / dogs (Inception pool3 stats);
- kid, kid_std: against the 2,000 real test images' features (KID needs features, not stats);
- class_fidelity: share of samples the independent ResNet-20 labels as the requested class, next to
  its accuracy on real test images (class_fidelity_real_test) and on this AE's test reconstructions
  (class_fidelity_recon, the ceiling this decoder allows);
- latent_class_fidelity: share of sampled latents a logistic regression fitted on real training
  latents assigns to the requested class (is the prior in the right region, whatever the decoder);
- recon_psnr, recon_fid (test reconstructions vs test originals), probe_acc (latent linear probe).
The evaluation networks never touch training or sampling.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from catdog.config import config_to_dict
from catdog.data import CLASS_NAMES, cache_dir, check_images, create_cat_dog_dataset
from catdog.errors import UserError
from catdog.fid import (feature_stats, frechet_distance, inception_features, kernel_inception_distance,
                        load_inception, load_stats, save_stats)
from catdog.judge import class_accuracy, load_judge
from catdog.metrics import fit_probe, psnr_db
from catdog.pipeline import load_autoencoder, load_diffusion, require_run
from catdog.sample import generate_images
from catdog.train import encode_images, reconstruct_images

REF_SPLITS = ("all", "cat", "dog")


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def reference_stats(data, ref_stats: Path | None, net, device) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """FID statistics of the real training images (all, cats, dogs): given, cached, or computed once."""
    folder = Path(ref_stats) if ref_stats else None
    if folder is None:
        images, labels = create_cat_dog_dataset("train", data)
        folder = cache_dir() / "fid_stats" / _digest(images)
        if not all((folder / f"fid_ref_train_{s}.npz").is_file() for s in REF_SPLITS):
            print(f"computing FID reference statistics of {len(images)} training images once "
                  f"(about 30 min on 2 CPU cores) -> {folder}")
            features = inception_features(images, net, device, desc="reference")
            save_stats(folder / "fid_ref_train_all.npz", features)
            for c, name in enumerate(CLASS_NAMES):
                save_stats(folder / f"fid_ref_train_{name}.npz", features[labels == c])
    stats = {}
    for split in REF_SPLITS:
        path = folder / f"fid_ref_train_{split}.npz"
        if not path.is_file():
            raise UserError(f"--ref-stats {folder}: missing {path.name}")
        mu, sigma, _ = load_stats(path)
        stats[split] = (mu, sigma)
    return stats


def cached_features(images: np.ndarray, name: str, net, device) -> np.ndarray:
    """Inception features of a fixed real image set, cached by content hash (float32 on disk)."""
    path = cache_dir() / "features" / f"{name}_{_digest(images)}.npy"
    if path.is_file():
        return np.load(path).astype(np.float64)
    features = inception_features(images, net, device, desc=name)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, features.astype(np.float32))
    return features


def score_samples(images: np.ndarray, labels: np.ndarray, ref, test_features: np.ndarray, judge, net,
                  device) -> dict:
    """FID (all and per class), KID and class fidelity of uint8 images with requested labels 0/1."""
    features = inception_features(images, net, device, desc="samples")
    result = {"n_samples": int(len(images)), "fid": frechet_distance(*feature_stats(features), *ref["all"])}
    for c, name in enumerate(CLASS_NAMES):
        own = features[labels == c]
        result[f"fid_{name}"] = frechet_distance(*feature_stats(own), *ref[name]) if len(own) > 1 else None
        result[f"n_{name}"] = int(len(own))
    result["kid"], result["kid_std"] = kernel_inception_distance(features, test_features)
    result["class_fidelity"] = class_accuracy(judge, images, labels)
    return result


def evaluate_run(run_dir: Path, n: int, steps: int, guidance: float, seed: int = 0, data=None,
                 ref_stats: Path | None = None, inception: Path | None = None, judge_path: Path | None = None,
                 device: torch.device = torch.device("cpu"), sweep_guidance=(), sweep_steps=()) -> dict:
    """All metrics of a trained run; written to run_dir/eval.json and returned."""
    paths = require_run(run_dir, "autoencoder", "diffusion")
    start = time.perf_counter()
    autoencoder, config = load_autoencoder(paths.root, device)
    diffusion, _ = load_diffusion(paths.root, device)
    if not 1 <= steps <= diffusion.n_steps:
        raise UserError(f"--steps must be in 1..{diffusion.n_steps} (the model's n_steps), got {steps}")
    net, judge = load_inception(inception, device), load_judge(judge_path)
    ref = reference_stats(data, ref_stats, net, device)
    test_images, test_labels = create_cat_dog_dataset("test", data)
    train_images, train_labels = create_cat_dog_dataset("train", data)
    test_features = cached_features(test_images, "test", net, device)

    # 1. autoencoder: reconstructions, their PSNR / FID / judge accuracy, and the latent probe
    test_latents = encode_images(autoencoder, test_images, device)
    train_latents = encode_images(autoencoder, train_images, device)
    recon = reconstruct_images(autoencoder, test_images, device)
    recon_features = inception_features(recon, net, device, desc="reconstructions")
    probe = fit_probe(train_latents.numpy(), train_labels)
    result = {
        "run_dir": str(paths.root), "steps": steps, "guidance": guidance, "seed": seed,
        "recon_psnr": psnr_db(test_images, recon),
        "recon_fid": frechet_distance(*feature_stats(recon_features), *feature_stats(test_features)),
        "probe_acc": float(probe.score(test_latents.numpy(), test_labels)),
        "class_fidelity_real_test": class_accuracy(judge, test_images, test_labels),
        "class_fidelity_recon": class_accuracy(judge, recon, test_labels),
    }

    # 2. samples: half cats, half dogs
    labels = np.arange(n) % 2
    images, latents = generate_images(autoencoder, diffusion, labels, seed, steps, guidance,
                                      return_latents=True)
    result.update(score_samples(images, labels, ref, test_features, judge, net, device))
    result["latent_class_fidelity"] = float((probe.predict(latents) == labels).mean())

    # 3. optional sweeps: the same scores at other guidance scales / step counts
    for key, values in (("sweep_guidance", sweep_guidance), ("sweep_steps", sweep_steps)):
        rows = []
        for value in values:
            g, s = (value, steps) if key == "sweep_guidance" else (guidance, int(value))
            if not 1 <= s <= diffusion.n_steps:
                raise UserError(f"--sweep-steps {s}: must be in 1..{diffusion.n_steps}")
            imgs, lat = generate_images(autoencoder, diffusion, labels, seed, s, g, return_latents=True)
            row = {"guidance": g, "steps": s, **score_samples(imgs, labels, ref, test_features, judge, net, device),
                   "latent_class_fidelity": float((probe.predict(lat) == labels).mean())}
            rows.append(row)
        if rows:
            result[key] = rows
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["config"] = config_to_dict(config)
    (paths.root / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def evaluate_samples_file(path: Path, data=None, ref_stats=None, inception=None, judge_path=None,
                          device=torch.device("cpu")) -> dict:
    """Score images from any generator: an .npz with `images` uint8 (n, 32, 32, 3) and `labels` 0/1."""
    try:
        with np.load(path, allow_pickle=False) as f:
            images, labels = f["images"], f["labels"]
    except (OSError, KeyError, ValueError) as e:
        raise UserError(f"{path}: needs arrays 'images' and 'labels' ({type(e).__name__}: {e})") from None
    check_images(images, labels, str(path))
    net, judge = load_inception(inception, device), load_judge(judge_path)
    ref = reference_stats(data, ref_stats, net, device)
    test_features = cached_features(create_cat_dog_dataset("test", data)[0], "test", net, device)
    return {"samples": str(path), **score_samples(images, labels, ref, test_features, judge, net, device)}


def format_table(result: dict) -> str:
    """A short human-readable table of the main numbers (and sweeps, if any)."""
    keys = ["n_samples", "fid", "fid_cat", "fid_dog", "kid", "kid_std", "class_fidelity",
            "class_fidelity_real_test", "class_fidelity_recon", "latent_class_fidelity", "recon_psnr",
            "recon_fid", "probe_acc", "steps", "guidance"]
    lines = [f"{k:26s} {_fmt(result[k])}" for k in keys if k in result]
    for key in ("sweep_guidance", "sweep_steps"):
        if key in result:
            lines.append(f"\n{key}:\n{'guidance':>9s} {'steps':>6s} {'fid':>8s} {'kid':>8s} "
                         f"{'class_fid':>9s} {'latent_cf':>9s}")
            for r in result[key]:
                lines.append(f"{r['guidance']:9.2f} {r['steps']:6d} {r['fid']:8.2f} {r['kid']:8.4f} "
                             f"{r['class_fidelity']:9.3f} {r['latent_class_fidelity']:9.3f}")
    return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)
