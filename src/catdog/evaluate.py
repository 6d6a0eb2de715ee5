"""`catdog evaluate`: sample quality, class fidelity and autoencoder quality of a run, as eval.json.

Samples are N/2 cats and N/2 dogs from the EMA model. Reported (N always stated):
- fid / fid_cat / fid_dog: against the real training cats+dogs / cats / dogs (Inception pool3 stats);
- kid, kid_std: against the 2,000 real test images' features (KID needs features, not stats);
- precision / recall: improved precision and recall (Kynkaanniemi et al. 2019, k = 3) in the Inception
  features, against as many real training images as there are samples (a fixed draw): fidelity and
  coverage apart, so that a change trading one for the other shows;
- class_fidelity: share of samples the independent ResNet-20 labels as the requested class, next to
  its accuracy on real test images (class_fidelity_real_test) and on this AE's reconstructions
  (class_fidelity_recon, the ceiling this decoder allows);
- latent_class_fidelity: share of sampled latents a logistic regression fitted on real training
  latents assigns to the requested class (is the prior in the right region, whatever the decoder);
- the decoding floor: the run's reconstructions of N real images of the same classes as the samples
  (test images; training images only where N exceeds the test set, `floor_images` says how many of
  each), scored like the samples: floor_fid (refined, where the run has a refiner) and floor_fid_raw
  against the same training statistics, and prior_gap = fid - floor_fid, what the latent prior costs
  on top of what decoding costs; their recon_psnr, recon_fid (against those originals) and class
  fidelity use the same N images;
- recon_psnr_train: PSNR on as many training images as there are test images; far above recon_psnr,
  it says the autoencoder has memorised its training set (overfitting); probe_acc: latent linear probe;
- with a refiner: the samples are refined (`unrefined` holds the same latents decoded only, with its
  prior_gap against floor_fid_raw), and recon_*_refined score the refined reconstructions;
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
from catdog.metrics import copying_report, fit_probe, pixel_rms_rows, precision_recall, psnr_db
from catdog.lineage import data_digest
from catdog.run_dir import load_run, run_latents, unmirrored

REF_SPLITS = ("all", "cat", "dog")
PR_NEIGHBOURS = 3                                                # k of improved precision / recall


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
    """The Inception network with the real reference statistics, the real test features, and features of
    real training images for precision / recall."""

    def __init__(self, data, ref_stats, inception, device):
        self.net, self.device = load_inception(inception, device), device
        self.ref = reference_stats(data, ref_stats, self.net, device)
        self.test_features = cached_features(create_cat_dog_dataset("test", data)[0], "test", self.net, device)
        self.train_images = create_cat_dog_dataset("train", data)[0]

    def features(self, images: np.ndarray, desc: str) -> np.ndarray:
        return inception_features(images, self.net, self.device, desc=desc)

    def cached(self, images: np.ndarray, name: str) -> np.ndarray:
        """Features of a fixed image set, cached on disk by content: real images, and reconstructions
        (the same decoder and refiner seed repeat them, so runs sharing those stages share the floor)."""
        return cached_features(images, name, self.net, self.device)

    def train_features(self, n: int) -> np.ndarray:
        """Features of n training images, a fixed draw (the first n of a seeded permutation)."""
        order = np.random.default_rng(0).permutation(len(self.train_images))[:n]
        return self.cached(self.train_images[np.sort(order)], f"train{n}")

    def score(self, images: np.ndarray, labels: np.ndarray, features: np.ndarray | None = None) -> dict:
        """FID (all, per class; vs training stats), KID (vs the real test features), precision and recall
        (vs as many real training images); `features` if already computed."""
        features = self.features(images, "samples") if features is None else features
        result = {"fid": fid_or_none(features, self.ref["all"])}
        for c, name in enumerate(CLASS_NAMES):
            result[f"fid_{name}"] = fid_or_none(features[labels == c], self.ref[name])
        result["kid"], result["kid_std"] = kernel_inception_distance(features, self.test_features)
        n_real = min(len(features), len(self.train_images))
        result["precision"], result["recall"] = (None, None) if min(len(features), n_real) <= PR_NEIGHBOURS else \
            precision_recall(self.train_features(n_real), features, PR_NEIGHBOURS)
        return result


def fid_or_none(features: np.ndarray, ref: tuple[np.ndarray, np.ndarray]) -> float | None:
    """FID of feature rows against reference stats; None for fewer than 2 rows (no covariance)."""
    return frechet_distance(*feature_stats(features), *ref) if len(features) > 1 else None


def score_samples(images: np.ndarray, labels: np.ndarray, judge, fid: FidScorer | None) -> dict:
    """FID / KID (unless fid is None) and class fidelity of uint8 images with requested labels 0/1."""
    result = {"n_samples": int(len(images)), **{f"n_{name}": int((labels == c).sum())
                                                for c, name in enumerate(CLASS_NAMES)}}
    result.update(fid.score(images, labels) if fid is not None else
                  {"fid": None, "fid_cat": None, "fid_dog": None, "kid": None, "kid_std": None,
                   "precision": None, "recall": None})
    result["class_fidelity"] = class_accuracy(judge, images, labels)
    return result


def evaluate_run(run_dir: Path, n: int, sample: SampleConfig = SampleConfig(), data=None,
                 ref_stats: Path | None = None, inception: Path | None = None, judge_path: Path | None = None,
                 device: torch.device = torch.device("cpu"), sweep_guidance=(), sweep_steps=(),
                 skip_fid: bool = False) -> dict:
    """All metrics of a trained run; written to run_dir/eval.json and returned. A run with only an
    autoencoder (`catdog train-ae`) gets the autoencoder's metrics alone."""
    start = time.perf_counter()
    run = load_run(run_dir, device, need_diffusion=False, data_sha256=data_digest(data))
    autoencoder, diffusion = run.autoencoder, run.diffusion
    settings = [("main", sample)]
    settings += [("sweep_guidance", replace(sample, guidance=float(g))) for g in sweep_guidance]
    settings += [("sweep_steps", replace(sample, steps=int(s))) for s in sweep_steps]
    if diffusion is None:                                        # an autoencoder-only run
        settings = []
    for _, setting in settings:                                  # refuse before any work
        validate_sampling(setting, diffusion.n_steps)
    test_images, test_labels = create_cat_dog_dataset("test", data)
    train_images = create_cat_dog_dataset("train", data)[0]
    labels = np.arange(n) % 2                                    # the samples' classes
    judge = load_judge(judge_path)
    fid = None if skip_fid else FidScorer(data, ref_stats, inception, device)

    # 1. autoencoder: the latent probe, then the decoding floor: reconstructions of N real images of
    #    the samples' classes, decoded (and refined if the run has a refiner), scored like the samples
    latents = run_latents(run, data)
    probe = fit_probe(*(v.numpy() for v in unmirrored(latents, run.config.ae.hflip)))
    originals, real_labels, original_features, floor_counts = floor_originals(labels, fid, data)
    seen = train_images[:len(test_images)]                       # as many training images, for the gap
    result = {
        "run_dir": str(run.paths.root), "sampler": sample.sampler, "steps": sample.steps,
        "guidance": sample.guidance, "eta": sample.eta, "guidance_interval": sample.guidance_interval,
        "seed": sample.seed, "refiner": run.refiner is not None and sample.refiner,
        "refiner_steps": sample.refiner_steps,
        "floor_images": floor_counts,
        "recon_psnr_train": psnr_db(seen, autoencoder.reconstruct_images(seen)),
        "probe_acc": float(probe.score(latents["test_latents"].numpy(), latents["test_labels"].numpy())),
        "class_fidelity_real_test": class_accuracy(judge, test_images, test_labels),
    }
    raw = reconstruction_scores(autoencoder.reconstruct_images(originals), originals, real_labels, judge, fid,
                                original_features)
    result.update(recon_psnr=raw["psnr"], recon_fid=raw["fid_vs_originals"], class_fidelity_recon=raw["judge"],
                  floor_fid_raw=raw["floor_fid"], floor_fid=raw["floor_fid"])
    refined = run.refine_reconstructions(originals, real_labels, sample)
    if refined is not None:
        row = reconstruction_scores(refined, originals, real_labels, judge, fid, original_features)
        result.update(recon_psnr_refined=row["psnr"], recon_fid_refined=row["fid_vs_originals"],
                      class_fidelity_recon_refined=row["judge"], floor_fid=row["floor_fid"])

    # 2. samples (half cats, half dogs) at the main setting (also unrefined, if refined), then at each
    #    sweep setting; the main samples' distances to their nearest training images (copying check)
    if settings and result["refiner"]:
        settings.insert(1, ("unrefined", replace(sample, refiner=False)))
    for key, s in settings:
        images, sampled = run.generate(labels, s, progress=True, return_latents=True)
        row = {**score_samples(images, labels, judge, fid),
               "latent_class_fidelity": float((probe.predict(sampled) == labels).mean())}
        if key == "main":
            result.update(row, prior_gap=difference(row["fid"], result["floor_fid"]))
            result["copying"] = copying(images, test_images, train_images, judge)
        elif key == "unrefined":
            result["unrefined"] = {**row, "prior_gap": difference(row["fid"], result["floor_fid_raw"])}
        else:
            result.setdefault(key, []).append({"guidance": s.guidance, "steps": s.steps, **row})
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["config"] = config_to_dict(run.config)
    run.paths.eval.write_text(json.dumps(result, indent=2) + "\n")
    return result


def floor_originals(labels: np.ndarray, fid: FidScorer | None, data=None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, int]]:
    """The real images of the decoding floor for samples of classes `labels` (`floor_indices`): uint8
    images, their labels, their Inception features (None without `fid`) and how many of each split."""
    test_images, test_labels = create_cat_dog_dataset("test", data)
    train_images, train_labels = create_cat_dog_dataset("train", data)
    test_idx, train_idx = floor_indices(labels, test_labels, train_labels)
    originals = np.concatenate([test_images[test_idx], train_images[train_idx]])
    real_labels = np.concatenate([test_labels[test_idx], train_labels[train_idx]])
    features = None if fid is None else np.concatenate(
        [fid.test_features[test_idx]] + ([fid.cached(train_images[train_idx], "floor_train")]
                                         if len(train_idx) else []))
    return originals, real_labels, features, {"test": int(len(test_idx)), "train": int(len(train_idx))}


def floor_indices(labels: np.ndarray, test_labels: np.ndarray, train_labels: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Real images with the samples' class counts, as indices: the first test images of each class, then
    (only where N exceeds them) the first training images of that class. Refuses an N the data cannot fill."""
    test_idx, train_idx = [], []
    for c in range(len(CLASS_NAMES)):
        need = int((labels == c).sum())
        test_idx.append(np.flatnonzero(test_labels == c)[:need])
        train_idx.append(np.flatnonzero(train_labels == c)[:need - len(test_idx[-1])])
        if len(test_idx[-1]) + len(train_idx[-1]) < need:
            raise UserError(f"--n {len(labels)}: {need} {CLASS_NAMES[c]}s needed for the decoding floor, "
                            f"the data set has {len(test_idx[-1]) + len(train_idx[-1])}")
    return np.concatenate(test_idx), np.concatenate(train_idx)


def reconstruction_scores(recon: np.ndarray, originals: np.ndarray, labels: np.ndarray, judge,
                          fid: FidScorer | None, original_features: np.ndarray | None) -> dict:
    """PSNR to the originals, the judge's accuracy, and (with FID) the FID against the originals'
    features and against the training statistics (the decoding floor)."""
    row = {"psnr": psnr_db(originals, recon), "judge": class_accuracy(judge, recon, labels),
           "fid_vs_originals": None, "floor_fid": None}
    if fid is not None:
        features = fid.cached(recon, "reconstructions")
        row["fid_vs_originals"] = fid_or_none(features, feature_stats(original_features))
        row["floor_fid"] = fid_or_none(features, fid.ref["all"])
    return row


def difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def copying(samples: np.ndarray, test_images: np.ndarray, train_images: np.ndarray, judge) -> dict:
    """Nearest-training-image distances of the samples and of the real test images, in pixels (RMS over
    0..255) and in the judge's 64-d feature space (Euclidean)."""
    real = lambda images, name: cached_features(images, name, None, None, lambda x: judge_features(judge, x))
    return {"pixel_rms": copying_report(*(pixel_rms_rows(im) for im in (samples, test_images, train_images))),
            "judge_features": copying_report(judge_features(judge, samples), real(test_images, "judge_test"),
                                             real(train_images, "judge_train"))}


def check_fid_size(per_class, what: str) -> None:
    """FID (overall and per class) needs a covariance, so at least 2 images of each class."""
    if min(per_class) < 2:
        raise UserError(f"{what}: FID needs at least 2 images of each class, got {list(map(int, per_class))} "
                        "(cat, dog); give more, or --skip-fid")


def evaluate_samples_file(path: Path, data=None, ref_stats=None, inception=None, judge_path=None,
                          device=torch.device("cpu"), skip_fid: bool = False) -> dict:
    """Score images from any generator: an .npz with `images` uint8 (n, 32, 32, 3) and `labels` 0/1."""
    if not Path(path).is_file():
        raise UserError(f"--samples {path}: no such file")
    arrays = read_npz(path, ("images", "labels"))
    images, labels = arrays["images"], arrays["labels"]
    check_images(images, labels, str(path))
    if not skip_fid:
        check_fid_size(np.bincount(labels, minlength=2), f"--samples {path}")
    fid = None if skip_fid else FidScorer(data, ref_stats, inception, device)
    return {"samples": str(path), **score_samples(images, labels, load_judge(judge_path), fid)}


def format_table(result: dict) -> str:
    """A short human-readable table of the main numbers (and sweeps, if any)."""
    keys = ["n_samples", "fid", "floor_fid", "prior_gap", "floor_fid_raw", "fid_cat", "fid_dog", "kid", "kid_std",
            "precision", "recall", "class_fidelity",
            "class_fidelity_real_test", "class_fidelity_recon", "class_fidelity_recon_refined",
            "latent_class_fidelity", "recon_psnr", "recon_psnr_refined", "recon_psnr_train", "recon_fid",
            "recon_fid_refined", "probe_acc", "sampler", "steps", "guidance", "refiner", "refiner_steps"]
    lines = [f"{k:30s} {_fmt(result[k])}" for k in keys if k in result]
    for k, v in result.get("unrefined", {}).items():
        if k in ("fid", "prior_gap", "kid", "precision", "recall", "class_fidelity"):
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
