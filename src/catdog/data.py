"""CIFAR-10 cats and dogs as uint8 arrays, and the one label map (cat 0, dog 1, null 2).

Sources, first that works: an explicit path (an .npz with `train_images`/`train_labels`/
`test_images`/`test_labels`, or a folder of the official CIFAR-10 *binary* batches, parsed as raw
bytes: nothing downloaded is ever unpickled); the project's committed copy `data/cifar10_catdog.npz`;
on request (`download`) the official binary archive, md5-checked, into a cache folder.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from catdog.errors import UserError

CLASS_NAMES = ("cat", "dog")
CAT, DOG = 0, 1
NULL_CLASS = len(CLASS_NAMES)              # the "no label" class for classifier-free guidance
CIFAR_LABELS = {3: CAT, 5: DOG}            # CIFAR-10 label -> ours

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
RECORD_BYTES = 1 + 32 * 32 * 3             # label byte + CHW pixels
TRAIN_BATCHES = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST_BATCHES = ["test_batch.bin"]
NPZ_NAME = "cifar10_catdog.npz"


def cache_dir() -> Path:
    """Where `--data download` puts the CIFAR-10 archive (CATDOG_CACHE or ~/.cache/catdog)."""
    return Path(os.environ.get("CATDOG_CACHE", Path.home() / ".cache" / "catdog"))


def default_npz_candidates() -> list[Path]:
    """The project's own copy: $CATDOG_DATA, ./data, then the repository the package sits in."""
    found = []
    if os.environ.get("CATDOG_DATA"):
        found.append(Path(os.environ["CATDOG_DATA"]))
    found.append(Path.cwd() / "data" / NPZ_NAME)
    found.append(Path(__file__).resolve().parents[2] / "data" / NPZ_NAME)
    return found


def create_cat_dog_dataset(split: str = "train", data: str | os.PathLike | None = None
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Cat/dog images uint8 (N, 32, 32, 3) and labels int64 (N,) in {0=cat, 1=dog} for `split`."""
    if split not in ("train", "test"):
        raise UserError(f"split must be 'train' or 'test', got {split!r}")
    images, labels = _load(split, data)
    check_images(images, labels, f"{split} split")
    return images, labels


def _load(split: str, data) -> tuple[np.ndarray, np.ndarray]:
    if data is not None and str(data) == "download":
        return load_cifar_binary(download_cifar(), split)
    if data is not None:
        path = Path(data)
        if not path.exists():
            raise UserError(f"--data {path}: no such file or folder")
        if path.is_dir():
            return load_cifar_binary(_find_binary_folder(path), split)
        return load_npz(path, split)
    for candidate in default_npz_candidates():
        if candidate.is_file():
            return load_npz(candidate, split)
    cached = cache_dir() / "cifar-10-batches-bin"
    if cached.is_dir():
        return load_cifar_binary(cached, split)
    raise UserError(
        "no cat/dog data found: pass --data PATH (a cifar10_catdog.npz or a folder of CIFAR-10 "
        f"binary batches), put the project's copy at ./data/{NPZ_NAME}, "
        "or use --data download (needs internet)")


def load_npz(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read `{split}_images` / `{split}_labels` from an .npz, refusing pickled objects."""
    arrays = read_npz(path, (f"{split}_images", f"{split}_labels"))
    return arrays[f"{split}_images"], arrays[f"{split}_labels"]


def read_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named arrays of an .npz file; a missing key, a corrupt file or pickled Python objects (never
    loaded) are a UserError naming the file."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):      # a .npy: one bare array, no named keys
            raise UserError(f"{path}: a single .npy array, not an .npz archive with keys {list(keys)} "
                            "(write one with numpy.savez)")
        with loaded as f:
            missing = [k for k in keys if k not in f.files]
            if missing:
                raise UserError(f"{path}: missing key(s) {missing}; has {sorted(f.files)}")
            return {k: f[k] for k in keys}
    except UserError:
        raise
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise UserError(f"{path}: refused, it holds pickled Python objects, not plain arrays") from None
        raise UserError(f"{path}: unreadable .npz ({type(e).__name__})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"{path}: unreadable .npz ({type(e).__name__}: {str(e)[:120]})") from None


def _find_binary_folder(path: Path) -> Path:
    for folder in (path, path / "cifar-10-batches-bin"):
        if (folder / TEST_BATCHES[0]).is_file():
            return folder
    raise UserError(f"{path}: no CIFAR-10 binary batches (expected {TEST_BATCHES[0]} "
                    "and data_batch_1..5.bin) and not an .npz file")


def load_cifar_binary(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse official CIFAR-10 binary batches as raw bytes; keep cats and dogs."""
    images, labels = [], []
    for name in TRAIN_BATCHES if split == "train" else TEST_BATCHES:
        path = folder / name
        if not path.is_file():
            raise UserError(f"{path}: missing CIFAR-10 batch")
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % RECORD_BYTES:
            raise UserError(f"{path}: size {raw.size} is not a whole number of "
                            f"{RECORD_BYTES}-byte records")
        records = raw.reshape(-1, RECORD_BYTES)
        cifar_label = records[:, 0]
        keep = np.isin(cifar_label, list(CIFAR_LABELS))
        pixels = records[keep, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # CHW -> HWC
        images.append(pixels)
        labels.append(np.vectorize(CIFAR_LABELS.get)(cifar_label[keep]).astype(np.int64))
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


def download_cifar() -> Path:
    """Fetch the official binary archive once, verify its md5, unpack the .bin files."""
    folder = cache_dir() / "cifar-10-batches-bin"
    if all((folder / n).is_file() for n in TRAIN_BATCHES + TEST_BATCHES):
        return folder
    archive = cache_dir() / "cifar-10-binary.tar.gz"
    archive.parent.mkdir(parents=True, exist_ok=True)
    if not archive.is_file() or _md5(archive) != CIFAR_MD5:
        partial = archive.with_suffix(".part")
        try:
            urllib.request.urlretrieve(CIFAR_URL, partial)
        except OSError as e:
            raise UserError(f"--data download: cannot fetch {CIFAR_URL} ({e}); use --data PATH "
                            f"or the project's copy ./data/{NPZ_NAME}") from None
        if _md5(partial) != CIFAR_MD5:
            partial.unlink()
            raise UserError(f"--data download: {CIFAR_URL} failed its md5 check")
        partial.replace(archive)
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():     # extract only the known .bin names: no path tricks
            name = Path(member.name).name
            if member.isfile() and name in TRAIN_BATCHES + TEST_BATCHES:
                (folder / name).write_bytes(tar.extractfile(member).read())
    return folder


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_images(images: np.ndarray, labels: np.ndarray | None, what: str) -> None:
    """Raise UserError unless images are uint8 (N, 32, 32, 3) and labels are 0/1 of length N."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise UserError(f"{what}: images must be uint8, got {getattr(images, 'dtype', type(images))}")
    if images.ndim != 4 or images.shape[1:] != (32, 32, 3) or len(images) == 0:
        raise UserError(f"{what}: images must have shape (N, 32, 32, 3), got {images.shape}")
    if labels is None:
        return
    if labels.shape != (len(images),):
        raise UserError(f"{what}: labels must have shape ({len(images)},), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or not np.isin(labels, (CAT, DOG)).all():
        raise UserError(f"{what}: labels must be 0 (cat) or 1 (dog)")


def check_training_data(data=None, min_per_class: int = 2) -> None:
    """Refuse, before any training, data a run cannot finish with: every split needs both classes, at
    least `min_per_class` images of each (the latent probe and the figures compare the classes)."""
    for split in ("train", "test"):
        images, labels = create_cat_dog_dataset(split, data)
        counts = [int((labels == c).sum()) for c in range(len(CLASS_NAMES))]
        if min(counts) < min_per_class:
            found = ", ".join(f"{n} {name}s" for n, name in zip(counts, CLASS_NAMES))
            raise UserError(f"{split} split has {found}; a run needs at least {min_per_class} of each class")


def class_index(name: str) -> int:
    """'cat' -> 0, 'dog' -> 1; anything else is a UserError."""
    if name not in CLASS_NAMES:
        raise UserError(f"unknown class {name!r}; choose from {', '.join(CLASS_NAMES)}")
    return CLASS_NAMES.index(name)


def to_model_range(images) -> torch.Tensor:
    """uint8 (N, 32, 32, 3) -> float x in [-1, 1], (N, 3, 32, 32)."""
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float x in [-1, 1], (N, 3, 32, 32) -> uint8 (N, 32, 32, 3), clamped."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def in_batches(fn: Callable, items, batch_size: int) -> list:
    """[fn(items[i:i + batch_size]) for each batch]: bounded memory for any number of items."""
    return [fn(items[i:i + batch_size]) for i in range(0, len(items), batch_size)]


def random_crops(x: torch.Tensor, corners: torch.Tensor, size: int) -> torch.Tensor:
    """Crop x (B, C, H, W) to (B, C, size, size) at per-example top-left corners (B, 2)."""
    offsets = torch.arange(size, device=x.device)
    rows = (corners[:, :1] + offsets)[:, :, None]                # (B, size, 1)
    cols = (corners[:, 1:] + offsets)[:, None, :]                # (B, 1, size)
    batch = torch.arange(len(x), device=x.device)[:, None, None]
    return x.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
