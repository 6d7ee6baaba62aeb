"""The image checks of ``vlmtune data check``: each image decodes, has pixels, stays under the decoding safety
limit, and holds the sample's boxes and points."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..core.sample import BoxPart, PointPart, Sample
from .formats.coords import inside
from .images import frame_count, upright_size
from .videos import VideoReadError, probe


class ImageProblem(ValueError):
    """Why an image file cannot be used (its message says it)."""


MULTI_FRAME = "image '{}' has {} frames (an animation or several pages); only the first is used"


def inspect_image(path: Path) -> tuple[tuple[int, int], int]:
    """``((width, height), frames)`` of an image after checking it decodes; ImageProblem says why it does not.

    The size is the upright image's (EXIF orientation applied), as training and boxes see it."""
    try:
        if path.stat().st_size == 0:
            raise ImageProblem("empty image file (0 bytes)")
        with Image.open(path) as im:
            width, height = im.size
            if width * height > Image.MAX_IMAGE_PIXELS:
                raise ImageProblem(f"image is {width}x{height} pixels, over the {Image.MAX_IMAGE_PIXELS} pixel "
                                   "safety limit for decoding; downscale it first")
            if width == 0 or height == 0:
                raise ImageProblem(f"image has no pixels ({width}x{height})")
            size, frames = upright_size(im), frame_count(im)  # before draft mode changes im.size
            # JPEG draft mode decodes at 1/8 scale: truncated files still fail, at a fraction of the cost.
            im.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            im.load()
    except ImageProblem:
        raise
    except Image.DecompressionBombError as e:
        raise ImageProblem(f"image is over the pixel safety limit for decoding ({e}); downscale it first") from None
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise ImageProblem(f"cannot decode image: {e}") from None
    return size, frames


def image_problem(sample: Sample, sizes: dict, frames: dict) -> tuple[str, str | None] | None:
    """Why the sample's images (or its boxes and points on them) cannot be used, and the field at fault.

    ``sizes`` and ``frames`` map each image path seen so far to its size (or, for an unusable image, why) and its
    frame count: filled here, so an image shared by many samples is decoded once."""
    for path in sample.images:
        if path not in sizes:
            try:
                sizes[path], frames[path] = inspect_image(path)
            except ImageProblem as e:
                sizes[path] = str(e)
        if isinstance(sizes[path], str):
            return f"{path.name}: {sizes[path]}", None
    for part in sample.video_parts:
        if part.path not in sizes:
            try:
                info = probe(part.path)
                sizes[part.path], frames[part.path] = (info.width, info.height), info.frames
            except (OSError, VideoReadError) as e:
                sizes[part.path] = f"cannot use video: {e}"
        if isinstance(sizes[part.path], str):
            return f"{part.path.name}: {sizes[part.path]}", None
    images = sample.images
    for message in sample.messages:
        for part in message.content:
            if isinstance(part, BoxPart | PointPart):
                width, height = sizes[images[part.image]]
                coords = part.box if isinstance(part, BoxPart) else part.point
                if not inside(coords, (width, height)):
                    return (f"{'box' if isinstance(part, BoxPart) else 'point'} {list(coords)} lies outside its "
                            f"{width}x{height} image {images[part.image].name} (coordinates are pixels of the "
                            "original image)"), part.source_field
    return None
