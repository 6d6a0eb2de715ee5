"""`catdog evaluate`: sample quality, class fidelity and autoencoder quality of a run, as eval.json.

Samples are N/2 cats and N/2 dogs from the EMA model. Reported (N always stated):
- fid / fid_cat / fid_dog: against the real training cats+dogs / cats / dogs (Inception pool3 stats);
- kid, kid_std: against the 2,000 real test images' features (KID needs features, not stats);
- class_fidelity: share of samples the independent ResNet-20 labels as the requested class, next to
  its accuracy on real test images (class_fidelity_real_test) and on this AE's test reconstructions
  (class_fidelity_recon, the ceiling this decoder allows);
- latent_class_fidelity: share of sampled latents a logistic regression fitted on real training
  latents assigns to the requested class (is the prior in the right region, whatever the decoder);
- recon_psnr, recon_fid (test reconstructions vs test originals), probe_acc (latent linear probe);
- recon_psnr_train: PSNR on as many training images as there are test images; far above recon_psnr,
  it says the autoencoder has memorised its training set (overfitting);
- with a refiner: the samples are refined (`unrefined` holds the same latents decoded only), and
  recon_*_refined score the refined test reconstructions;
- copying: each sample's distance to its nearest training image, in pixels and in the judge's
  features, as median and 1st percentile next to the same for the real test images.
The evaluation networks never touch training or sampling.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from catdog.config import SampleConfig, config_to_dict, validate_sampling
from catdog.data import CLASS_NAMES, cache_dir, check_images, create_cat_dog_dataset, read_npz
from catdog.errors import UserError
from catdog.fid import (feature_stats, frechet_distance, inception_features, kernel_inception_distance,
                        load_inception, load_stats, save_stats)
from catdog.judge import class_accuracy, judge_features, load_judge
from catdog.metrics import copying_report, fit_probe, pixel_rms_rows, psnr_db
from catdog.run_dir import load_run, run_latents, unmirrored

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


def cached_features(images: np.ndarray, name: str, net, device, compute=None) -> np.ndarray:
    """Features of a fixed real image set (Inception's, or `compute(images)`), cached by name and content
    hash (float32 on disk)."""
    path = cache_dir() / "features" / f"{name}_{_digest(images)}.npy"
    if path.is_file():
        return np.load(path).astype(np.float64)
    features = compute(images) if compute else inception_features(images, net, device, desc=name)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, features.astype(np.float32))
    return features


class FidScorer:
    """The Inception network with the real reference statistics and real test features."""

    def __init__(self, data, ref_stats, inception, device):
        self.net, self.device = load_inception(inception, device), device
        self.ref = reference_stats(data, ref_stats, self.net, device)
        self.test_features = cached_features(create_cat_dog_dataset("test", data)[0], "test", self.net, device)

    def features(self, images: np.ndarray, desc: str) -> np.ndarray:
        return inception_features(images, self.net, self.device, desc=desc)

    def score(self, images: np.ndarray, labels: np.ndarray) -> dict:
        """FID (all, per class; vs training stats) and KID (vs the real test features)."""
        features = self.features(images, "samples")
        result = {"fid": frechet_distance(*feature_stats(features), *self.ref["all"])}
        for c, name in enumerate(CLASS_NAMES):
            own = features[labels == c]
            result[f"fid_{name}"] = frechet_distance(*feature_stats(own), *self.ref[name]) if len(own) > 1 else None
        result["kid"], result["kid_std"] = kernel_inception_distance(features, self.test_features)
        return result


def score_samples(images: np.ndarray, labels: np.ndarray, judge, fid: FidScorer | None) -> dict:
    """FID / KID (unless fid is None) and class fidelity of uint8 images with requested labels 0/1."""
    result = {"n_samples": int(len(images)), **{f"n_{name}": int((labels == c).sum())
                                                for c, name in enumerate(CLASS_NAMES)}}
    result.update(fid.score(images, labels) if fid is not None else
                  {"fid": None, "fid_cat": None, "fid_dog": None, "kid": None, "kid_std": None})
    result["class_fidelity"] = class_accuracy(judge, images, labels)
    return result


def evaluate_run(run_dir: Path, n: int, sample: SampleConfig = SampleConfig(), data=None,
                 ref_stats: Path | None = None, inception: Path | None = None, judge_path: Path | None = None,
                 device: torch.device = torch.device("cpu"), sweep_guidance=(), sweep_steps=(),
                 skip_fid: bool = False) -> dict:
    """All metrics of a trained run; written to run_dir/eval.json and returned. A run with only an
    autoencoder (`catdog train-ae`) gets the autoencoder's metrics alone."""
    start = time.perf_counter()
    run = load_run(run_dir, device, need_diffusion=False)
    autoencoder, diffusion = run.autoencoder, run.diffusion
    settings = [("main", sample)]
    settings += [("sweep_guidance", replace(sample, guidance=float(g))) for g in sweep_guidance]
    settings += [("sweep_steps", replace(sample, steps=int(s))) for s in sweep_steps]
    if diffusion is None:                                        # an autoencoder-only run
        settings = []
    for _, setting in settings:                                  # refuse before any work
        validate_sampling(setting, diffusion.n_steps)
    judge = load_judge(judge_path)
    fid = None if skip_fid else FidScorer(data, ref_stats, inception, device)
    test_images, test_labels = create_cat_dog_dataset("test", data)
    train_images = create_cat_dog_dataset("train", data)[0]

    # 1. autoencoder: reconstructions (decoded, and refined if the run has a refiner), their PSNR /
    #    FID / judge accuracy, and the latent probe
    latents = run_latents(run, data)
    train_latents, train_labels = unmirrored(latents, run.config.ae.hflip)
    recon = autoencoder.reconstruct_images(test_images)
    seen = train_images[:len(test_images)]                       # as many training images, for the gap
    probe = fit_probe(train_latents.numpy(), train_labels.numpy())
    recon_fid = lambda images: None if fid is None else frechet_distance(
        *feature_stats(fid.features(images, "reconstructions")), *feature_stats(fid.test_features))
    result = {
        "run_dir": str(run.paths.root), "sampler": sample.sampler, "steps": sample.steps,
        "guidance": sample.guidance, "seed": sample.seed, "refiner": run.refiner is not None and sample.refiner,
        "refiner_steps": sample.refiner_steps,
        "recon_psnr": psnr_db(test_images, recon),
        "recon_psnr_train": psnr_db(seen, autoencoder.reconstruct_images(seen)),
        "recon_fid": recon_fid(recon),
        "probe_acc": float(probe.score(latents["test_latents"].numpy(), latents["test_labels"].numpy())),
        "class_fidelity_real_test": class_accuracy(judge, test_images, test_labels),
        "class_fidelity_recon": class_accuracy(judge, recon, test_labels),
    }
    refined = run.refine_reconstructions(test_images, test_labels, sample)
    if refined is not None:
        result.update(recon_psnr_refined=psnr_db(test_images, refined), recon_fid_refined=recon_fid(refined),
                      class_fidelity_recon_refined=class_accuracy(judge, refined, test_labels))

    # 2. samples (half cats, half dogs) at the main setting (also unrefined, if refined), then at each
    #    sweep setting; the main samples' distances to their nearest training images (copying check)
    labels = np.arange(n) % 2
    if settings and result["refiner"]:
        settings.insert(1, ("unrefined", replace(sample, refiner=False)))
    for key, s in settings:
        images, sampled = run.generate(labels, s, progress=True, return_latents=True)
        row = {**score_samples(images, labels, judge, fid),
               "latent_class_fidelity": float((probe.predict(sampled) == labels).mean())}
        if key == "main":
            result.update(row)
            result["copying"] = copying(images, test_images, train_images, judge)
        elif key == "unrefined":
            result["unrefined"] = row
        else:
            result.setdefault(key, []).append({"guidance": s.guidance, "steps": s.steps, **row})
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["config"] = config_to_dict(run.config)
    run.paths.eval.write_text(json.dumps(result, indent=2) + "\n")
    return result


def copying(samples: np.ndarray, test_images: np.ndarray, train_images: np.ndarray, judge) -> dict:
    """Nearest-training-image distances of the samples and of the real test images, in pixels (RMS over
    0..255) and in the judge's 64-d feature space (Euclidean)."""
    real = lambda images, name: cached_features(images, name, None, None, lambda x: judge_features(judge, x))
    return {"pixel_rms": copying_report(*(pixel_rms_rows(im) for im in (samples, test_images, train_images))),
            "judge_features": copying_report(judge_features(judge, samples), real(test_images, "judge_test"),
                                             real(train_images, "judge_train"))}


def evaluate_samples_file(path: Path, data=None, ref_stats=None, inception=None, judge_path=None,
                          device=torch.device("cpu"), skip_fid: bool = False) -> dict:
    """Score images from any generator: an .npz with `images` uint8 (n, 32, 32, 3) and `labels` 0/1."""
    if not Path(path).is_file():
        raise UserError(f"--samples {path}: no such file")
    arrays = read_npz(path, ("images", "labels"))
    images, labels = arrays["images"], arrays["labels"]
    check_images(images, labels, str(path))
    fid = None if skip_fid else FidScorer(data, ref_stats, inception, device)
    return {"samples": str(path), **score_samples(images, labels, load_judge(judge_path), fid)}


def format_table(result: dict) -> str:
    """A short human-readable table of the main numbers (and sweeps, if any)."""
    keys = ["n_samples", "fid", "fid_cat", "fid_dog", "kid", "kid_std", "class_fidelity",
            "class_fidelity_real_test", "class_fidelity_recon", "class_fidelity_recon_refined",
            "latent_class_fidelity", "recon_psnr", "recon_psnr_refined", "recon_psnr_train", "recon_fid",
            "recon_fid_refined", "probe_acc", "sampler", "steps", "guidance", "refiner", "refiner_steps"]
    lines = [f"{k:30s} {_fmt(result[k])}" for k in keys if k in result]
    for k, v in result.get("unrefined", {}).items():
        if k in ("fid", "kid", "class_fidelity"):
            lines.append(f"{'unrefined ' + k:30s} {_fmt(v)}")
    for space, r in result.get("copying", {}).items():
        lines.append(f"{'nearest train, ' + space:30s} samples median {r['samples_median']:.4g} p1 "
                     f"{r['samples_p1']:.4g} | test images median {r['test_median']:.4g} p1 {r['test_p1']:.4g}")
    for key in ("sweep_guidance", "sweep_steps"):
        if key in result:
            lines.append(f"\n{key}:\n{'guidance':>9s} {'steps':>6s} {'fid':>8s} {'kid':>8s} "
                         f"{'class_fid':>9s} {'latent_cf':>9s}")
            for r in result[key]:
                lines.append(f"{r['guidance']:9.2f} {r['steps']:6d} {_fmt(r['fid']):>8s} {_fmt(r['kid']):>8s} "
                             f"{r['class_fidelity']:9.3f} {r['latent_class_fidelity']:9.3f}")
    return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)
