"""The one way vlmtune opens an image: training, evaluation, predict, ``data check``, the report and the readers.

The rules follow transformers' own ``load_image`` and ``convert_to_rgb``, so that a model sees the image a user
sees in a viewer:

- EXIF orientation is applied (``ImageOps.exif_transpose``): sizes and box coordinates are those of the upright
  image, everywhere.
- Transparency is composited on white (RGBA, LA, PA, palette images with a transparent colour), as transformers'
  ``convert_to_rgb`` does; dropping the alpha channel would expose whatever colour transparent pixels store.
- High-bit-depth greyscale (PIL modes ``I;16*``, ``I``, ``F``) is scaled to 8 bits by its bit depth (16-bit:
  65535 -> 255; 0..1 floats: 1.0 -> 255) or, for values beyond that, by its real range; PIL's own conversion would
  clip everything above 255 to white.
- Multi-frame files (animated GIF, APNG, multi-page TIFF) give their first frame; :func:`frame_count` lets a
  caller warn about it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

Size = tuple[int, int]

RULES = "exif_transpose, alpha on white, high-bit greyscale by depth, first frame"
"""The loading rules in one string: the rendered-sample cache keys on it, so pixels cached under other rules
(before EXIF orientation or alpha were applied) are rendered afresh."""

_ORIENTATION = 0x0112  # the EXIF tag ImageOps.exif_transpose reads
_TRANSPOSED = (5, 6, 7, 8)  # orientations that swap width and height
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_HIGH_BIT_MODES = ("I", "F")


def load_image(path: str | Path) -> Image.Image:
    """The first frame of an image file as an upright 8-bit RGB image, by the rules of this module."""
    with Image.open(path) as im:
        return to_rgb(ImageOps.exif_transpose(im))


def to_rgb(im: Image.Image) -> Image.Image:
    """An opened (upright) image as 8-bit RGB: alpha composited on white, high-bit-depth greyscale scaled."""
    if im.mode.startswith("I;16") or im.mode in _HIGH_BIT_MODES:
        im = _high_bit_to_l(im)
    if im.mode == "RGB":
        im.load()
        return im
    if im.mode in _ALPHA_MODES or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return im.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def image_size(path: str | Path) -> Size:
    """``(width, height)`` of the upright image (EXIF orientation applied), from the file's header alone."""
    with Image.open(path) as im:
        return upright_size(im)


def upright_size(im: Image.Image) -> Size:
    """``(width, height)`` of an opened image once :func:`load_image` has applied its EXIF orientation."""
    width, height = im.size
    return (height, width) if im.getexif().get(_ORIENTATION) in _TRANSPOSED else (width, height)


def frame_count(im: Image.Image) -> int:
    """Frames in an opened image file (1 for still images); :func:`load_image` uses the first."""
    return int(getattr(im, "n_frames", 1) or 1)


def _high_bit_to_l(im: Image.Image) -> Image.Image:
    """Greyscale of more than 8 bits as mode L, by its bit depth, or by its range where values exceed it."""
    values = np.asarray(im.convert("I") if im.mode.startswith("I;16") else im, dtype=np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if im.mode == "F" and low >= 0 and high <= 1:
        scaled = values * 255
    elif low >= 0 and high <= 65535 and im.mode != "F":
        scaled = values * (255 / 65535)
    else:  # floats beyond 0..1, 32-bit integers beyond 16 bits: the real range spans 0..255
        scaled = (values - low) * (255 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))
