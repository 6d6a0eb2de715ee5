"""Data loading: the committed copy, CIFAR-10 binary batches parsed as bytes, and clear errors.
Run: pytest tests/test_data.py"""

import numpy as np
import pytest

from catdog.data import (RECORD_BYTES, TEST_BATCHES, TRAIN_BATCHES, class_index, create_cat_dog_dataset,
                         in_batches, to_model_range, to_uint8)
from catdog.errors import UserError


def test_committed_copy_has_both_splits():
    """Oracle: data/SOURCE.md (10,000 train and 2,000 test, half cats, half dogs)."""
    for split, n in (("train", 10000), ("test", 2000)):
        images, labels = create_cat_dog_dataset(split)
        assert images.shape == (n, 32, 32, 3) and images.dtype == np.uint8
        assert set(np.unique(labels)) == {0, 1} and (labels == 0).sum() == n // 2


def _write_binary_batches(folder, rng):
    """Fake CIFAR-10 binary batches: labels 0..9, pixel value = record number (mod 256)."""
    for name in TRAIN_BATCHES + TEST_BATCHES:
        n = 20
        records = np.zeros((n, RECORD_BYTES), np.uint8)
        records[:, 0] = np.arange(n) % 10
        records[:, 1:] = rng.integers(0, 256, (n, RECORD_BYTES - 1), dtype=np.uint8)
        records.tofile(folder / name)


def test_binary_batches_keep_cats_and_dogs(tmp_path):
    """Oracle: CIFAR label 3 -> cat (0), 5 -> dog (1); pixels stored CHW become HWC."""
    rng = np.random.default_rng(0)
    _write_binary_batches(tmp_path, rng)
    images, labels = create_cat_dog_dataset("test", tmp_path)
    raw = np.fromfile(tmp_path / "test_batch.bin", np.uint8).reshape(-1, RECORD_BYTES)
    keep = np.isin(raw[:, 0], (3, 5))
    assert list(labels) == [0 if l == 3 else 1 for l in raw[keep, 0]]
    np.testing.assert_array_equal(images[0], raw[keep][0, 1:].reshape(3, 32, 32).transpose(1, 2, 0))
    train, _ = create_cat_dog_dataset("train", tmp_path)
    assert len(train) == 5 * 4


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", b"PK\x03\x04truncated"])
def test_corrupt_npz_is_a_clear_error(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(UserError, match="bad.npz"):
        create_cat_dog_dataset("train", path)


def test_wrong_shapes_dtypes_and_labels_are_refused(tmp_path):
    good = np.zeros((4, 32, 32, 3), np.uint8)
    cases = {
        "float": dict(train_images=good.astype(np.float32), train_labels=np.zeros(4, np.int64)),
        "shape": dict(train_images=np.zeros((4, 28, 28, 3), np.uint8), train_labels=np.zeros(4, np.int64)),
        "labels": dict(train_images=good, train_labels=np.array([0, 1, 2, 1])),
        "keys": dict(images=good),
    }
    for name, arrays in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(UserError):
            create_cat_dog_dataset("train", tmp_path / f"{name}.npz")


def test_missing_path_and_folder_without_batches(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        create_cat_dog_dataset("train", tmp_path / "nope.npz")
    (tmp_path / "readme.txt").write_text("not data")
    with pytest.raises(UserError, match="binary batches"):
        create_cat_dog_dataset("train", tmp_path)


def test_nothing_found_names_the_options(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CATDOG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("catdog.data.default_npz_candidates", lambda: [tmp_path / "none.npz"])
    with pytest.raises(UserError, match="--data download"):
        create_cat_dog_dataset("train")


def test_class_names_and_pixel_round_trip():
    assert class_index("cat") == 0 and class_index("dog") == 1
    with pytest.raises(UserError, match="unknown class"):
        class_index("horse")
    images, _ = create_cat_dog_dataset("test")
    x = to_model_range(images[:8])
    assert x.shape == (8, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(to_uint8(x), images[:8])


def test_in_batches_covers_every_item_once_in_order():
    calls = in_batches(lambda batch: list(batch), list(range(11)), 4)
    assert calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    assert in_batches(len, [], 4) == []
