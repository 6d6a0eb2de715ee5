"""Measurements: PSNR, the latent linear probe, nearest neighbours, improved precision and recall (FID and
KID: fid.py; class fidelity: judge.py)."""

from __future__ import annotations

import numpy as np
import torch


def psnr_db(originals: np.ndarray, reconstructions: np.ndarray) -> float:
    """Mean over images of PSNR (dB) between uint8 image sets (N, 32, 32, 3), peak 255."""
    diff = originals.astype(np.float64) - reconstructions.astype(np.float64)
    mse = (diff ** 2).reshape(len(diff), -1).mean(1)
    return float(np.mean(10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))))


def ssim(originals: np.ndarray, others: np.ndarray, window: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004) between uint8 image sets (N, H, W, 3): per channel with a Gaussian
    window (11 x 11, sigma 1.5) over the positions where it fits, K1 = 0.01, K2 = 0.03, L = 255; the mean
    over positions, channels and images."""
    x, y = (torch.as_tensor(v, dtype=torch.float64).permute(0, 3, 1, 2) for v in (originals, others))
    g = torch.exp(-(torch.arange(window, dtype=torch.float64) - (window - 1) / 2) ** 2 / (2 * sigma ** 2))
    kernel = (g[:, None] * g[None]) / g.sum() ** 2
    channels = x.shape[1]
    blur = lambda v: torch.nn.functional.conv2d(v, kernel.expand(channels, 1, window, window), groups=channels)
    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y, cov = blur(x * x) - mu_x ** 2, blur(y * y) - mu_y ** 2, blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return float(value.mean())


def fit_probe(train_latents: np.ndarray, train_labels: np.ndarray):
    """Logistic regression on standardised latents (the 'linear probe')."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(train_latents, train_labels)


def linear_probe_accuracy(train_latents: np.ndarray, train_labels: np.ndarray,
                          test_latents: np.ndarray, test_labels: np.ndarray) -> float:
    """Accuracy on the test latents of a logistic regression fitted on the training latents."""
    return float(fit_probe(train_latents, train_labels).score(test_latents, test_labels))


def pixel_rms_rows(images: np.ndarray) -> np.ndarray:
    """uint8 images (N, H, W, C) -> rows (N, H*W*C) scaled so that Euclidean distance between rows is
    the RMS pixel difference on the 0..255 scale."""
    rows = images.reshape(len(images), -1).astype(np.float64)
    return rows / np.sqrt(rows.shape[1])


def nearest_neighbours(queries: np.ndarray, references: np.ndarray, batch_size: int = 1000
                       ) -> tuple[np.ndarray, np.ndarray]:
    """For each row of queries (N, ...), the Euclidean distance to its nearest row of references (M, ...)
    and that row's index: (distances (N,), indices (N,)). Rows are flattened; float32 blocks (for
    images on the pixel-RMS scale, distances come out within about 0.1 of 255)."""
    ref = torch.as_tensor(references.reshape(len(references), -1), dtype=torch.float32)
    ref_sq = (ref * ref).sum(1)
    distances, indices = [], []
    for start in range(0, len(queries), batch_size):
        q = torch.as_tensor(queries[start:start + batch_size].reshape(-1, ref.shape[1]), dtype=torch.float32)
        d2 = ((q * q).sum(1)[:, None] - 2 * q @ ref.T + ref_sq[None]).clamp_min(0)   # (n, M) squared
        best, index = d2.min(1)
        distances.append(best.sqrt().numpy())
        indices.append(index.numpy())
    return np.concatenate(distances), np.concatenate(indices)


def copying_report(samples: np.ndarray, test: np.ndarray, train: np.ndarray) -> dict:
    """Nearest-training-image distances of samples against those of real test images (the same space):
    median and 1st percentile of each. Samples much closer than test images are to the training set
    would be copies."""
    d_samples, _ = nearest_neighbours(samples, train)
    d_test, _ = nearest_neighbours(test, train)
    return {"samples_median": float(np.median(d_samples)), "samples_p1": float(np.percentile(d_samples, 1)),
            "test_median": float(np.median(d_test)), "test_p1": float(np.percentile(d_test, 1))}


def _squared_distances(queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """(n, M) squared Euclidean distances between float64 rows."""
    return ((queries * queries).sum(1)[:, None] - 2 * queries @ references.T
            + (references * references).sum(1)[None]).clamp_min(0)


def kth_neighbour_radii(features: np.ndarray, k: int, batch_size: int = 1000) -> np.ndarray:
    """Each row's distance to its k-th nearest other row (N,): the radius of its ball in the estimated
    manifold of Kynkaanniemi et al. 2019."""
    rows = torch.as_tensor(features, dtype=torch.float64)
    radii = []
    for start in range(0, len(rows), batch_size):
        d2 = _squared_distances(rows[start:start + batch_size], rows)
        radii.append(d2.kthvalue(k + 1, dim=1).values.sqrt())     # the 1st smallest is the row itself
    return torch.cat(radii).numpy()


def manifold_coverage(queries: np.ndarray, references: np.ndarray, radii: np.ndarray,
                      batch_size: int = 1000) -> float:
    """Share of query rows inside at least one reference row's ball (distance <= that row's radius)."""
    ref = torch.as_tensor(references, dtype=torch.float64)
    r2 = torch.as_tensor(radii, dtype=torch.float64).square()
    inside = []
    for start in range(0, len(queries), batch_size):
        q = torch.as_tensor(queries[start:start + batch_size], dtype=torch.float64)
        inside.append((_squared_distances(q, ref) <= r2[None]).any(1))
    return float(torch.cat(inside).double().mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of fake feature rows against real ones:
    precision, the share of fakes inside the real manifold (fidelity); recall, the share of reals inside
    the fake manifold (coverage). Each manifold is the union of balls reaching each row's k-th neighbour."""
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision/recall with k = {k} needs more than {k} rows of each set")
    precision = manifold_coverage(fake, real, kth_neighbour_radii(real, k))
    recall = manifold_coverage(real, fake, kth_neighbour_radii(fake, k))
    return precision, recall
