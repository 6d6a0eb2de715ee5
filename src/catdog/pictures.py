"""A user's picture file -> the 32x32 RGB image the models take, read the same way by the demo page's
upload and by `catdog img2img`: PNG or JPEG of any size, centre-cropped to a square, then resized."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from catdog.data import check_images, read_npz
from catdog.errors import UserError

MAX_UPLOAD_BYTES = 10 * 2**20
MAX_UPLOAD_PIXELS = 40_000_000           # 10000 x 10000 is refused before it is decoded
MIN_UPLOAD_SIDE = 8
UPLOAD_FORMATS = ("PNG", "JPEG")


def read_upload(upload: bytes) -> np.ndarray:
    """A PNG or JPEG of any size -> uint8 (32, 32, 3): centre-cropped to a square, then resized.
    Anything else is a UserError that says what was wrong."""
    if len(upload) > MAX_UPLOAD_BYTES:
        raise UserError(f"the file is {len(upload) / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB")
    if not upload:
        raise UserError("the file is empty")
    try:
        with warnings.catch_warnings():                          # the size is checked below, by our limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(upload))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise UserError("not an image: upload a PNG or JPEG") from None
    if image.format not in UPLOAD_FORMATS:
        raise UserError(f"{image.format} images are not accepted: upload a PNG or JPEG")
    w, h = image.size
    if w * h > MAX_UPLOAD_PIXELS:
        raise UserError(f"the image is {w}x{h} pixels; the limit is {MAX_UPLOAD_PIXELS // 10**6} megapixels")
    if min(w, h) < MIN_UPLOAD_SIDE:
        raise UserError(f"the image is {w}x{h} pixels; it needs at least {MIN_UPLOAD_SIDE} on each side")
    try:
        image.load()
    except (OSError, SyntaxError, ValueError):
        raise UserError("the image is truncated or corrupt") from None
    side = min(w, h)
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    square = image.convert("RGB").crop(box)
    return np.array(square.resize((32, 32), Image.Resampling.LANCZOS, reducing_gap=2.0), dtype=np.uint8)


def read_pictures(path: Path) -> np.ndarray:
    """uint8 (N, 32, 32, 3) from a file: an .npz with 'images' uint8 (N, 32, 32, 3), or one PNG/JPEG read
    as `read_upload` reads it. Errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.suffix.lower() == ".npz":
        images = read_npz(path, ("images",))["images"]
        check_images(images, None, str(path))
        return images
    try:
        return read_upload(path.read_bytes())[None]
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
