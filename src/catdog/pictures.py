"""A user's picture file -> the 32x32 RGB image the models take, read the same way by the demo page's
upload and by `catdog img2img`: PNG or JPEG of any size, as a browser shows it, centre-cropped to a
square, then resized. Limits keep a hostile file (a decompression bomb) from costing more than ~64 MB."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from catdog.data import check_images, read_npz
from catdog.errors import UserError

MAX_UPLOAD_BYTES = 10 * 2**20
MAX_UPLOAD_PIXELS = {"JPEG": 40_000_000, "MPO": 40_000_000,   # decoded at 1/8 scale or less (draft mode)
                     "PNG": 16_000_000}                        # decoded in full: at most 64 MB as RGBA
MIN_UPLOAD_SIDE = 8
UPLOAD_FORMATS = ("PNG", "JPEG", "MPO")  # MPO: phones' multi-picture JPEGs; the first picture is read
GRAY16_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")     # 16-bit grayscale PNGs open as one of these
WHITE = (255, 255, 255, 255)


def read_upload(upload: bytes) -> np.ndarray:
    """A PNG or JPEG of any size -> uint8 (32, 32, 3), as a browser shows it: EXIF orientation applied,
    16-bit values scaled to 8 bits, transparency composited on white; then centre-cropped to a square
    and resized. Anything else is a UserError that says what was wrong."""
    if len(upload) > MAX_UPLOAD_BYTES:
        raise UserError(f"the file is {len(upload) / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB")
    if not upload:
        raise UserError("the file is empty")
    try:
        with warnings.catch_warnings():                          # the size is checked below, by our limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(upload))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise UserError("not an image (or its metadata is too large): upload a PNG or JPEG") from None
    if image.format not in UPLOAD_FORMATS:
        raise UserError(f"{image.format} images are not accepted: upload a PNG or JPEG")
    w, h = image.size
    limit = MAX_UPLOAD_PIXELS[image.format]
    if w * h > limit:
        raise UserError(f"the image is {w}x{h} pixels; the limit is {limit // 10**6} megapixels for {image.format}")
    if min(w, h) < MIN_UPLOAD_SIDE:
        raise UserError(f"the image is {w}x{h} pixels; it needs at least {MIN_UPLOAD_SIDE} on each side")
    if image.format != "PNG":
        image.draft("RGB", (4 * 32, 4 * 32))                     # JPEG's DCT scaling: never decode all 40 MP
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError):
        raise UserError("the image is truncated or corrupt") from None
    square = _as_rgb(image)
    w, h = square.size
    side = min(w, h)
    square = square.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
    return np.array(square.resize((32, 32), Image.Resampling.LANCZOS, reducing_gap=2.0), dtype=np.uint8)


def _as_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB as a browser shows the picture: 16-bit gray scaled (not clipped), alpha over white."""
    if image.mode in GRAY16_MODES:
        values = np.asarray(image, dtype=np.float64) / 257.0
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8)).convert("RGB")
    if "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE), rgba).convert("RGB")
    return image.convert("RGB")


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
