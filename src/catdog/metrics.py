"""Measurements: PSNR and the latent linear probe (FID and KID: fid.py; class fidelity: judge.py)."""

from __future__ import annotations

import numpy as np


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
