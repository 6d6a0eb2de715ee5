"""Measurements: PSNR, SSIM, the latent linear probe, and (see fid.py / judge.py) FID, KID, class fidelity."""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F


def psnr_db(originals: np.ndarray, reconstructions: np.ndarray) -> float:
    """Mean over images of PSNR (dB) between uint8 image sets (N, 32, 32, 3), peak 255."""
    diff = originals.astype(np.float64) - reconstructions.astype(np.float64)
    mse = (diff ** 2).reshape(len(diff), -1).mean(1)
    return float(np.mean(10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))))


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


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0, size: int = 11, sigma: float = 1.5
         ) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004) of image batches (B, C, H, W): Gaussian window `size` x `size`
    (std `sigma`), valid positions only, per channel; `data_range` 2 for images in [-1, 1]. In float32.
    The window sums are two matrix products (2x faster on the CPU than depthwise convolutions)."""
    x, y = x.float(), y.float()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    with torch.autocast(x.device.type, enabled=False):
        stacked = torch.cat([x, y, x * x, y * y, x * y], 1)  # blur all five in one product
        blurred = _window(x.shape[-2], size, sigma, x.device).T @ stacked @ _window(x.shape[-1], size, sigma, x.device)
    mx, my, mxx, myy, mxy = blurred.chunk(5, 1)
    vx, vy, cov = mxx - mx * mx, myy - my * my, mxy - mx * my
    ssim_map = (2 * mx * my + c1) * (2 * cov + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return ssim_map.mean()


@functools.cache
def _window(n: int, size: int, sigma: float, device: torch.device) -> torch.Tensor:
    """(n, n - size + 1): column j is the normalised Gaussian window over positions j .. j + size - 1,
    so that `h @ _window(...)` is the windowed mean along h's last dimension at each valid position.
    Built once per shape and device (it is constant), not on every training step."""
    g = torch.exp(-((torch.arange(size, device=device) - (size - 1) / 2) ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return torch.stack([F.pad(g, (j, n - size - j)) for j in range(n - size + 1)], 1)
