"""One rule for the boxes and points every reader makes, in pixels of the original image.

A box is ``[x1, y1, x2, y2]``, a point ``[x, y]``: finite numbers, none negative, a box with ``x1 < x2`` and
``y1 < y2``, and inside its image, ``0 <= x <= width`` and ``0 <= y <= height``, where the image's size is known
(readers that open the image check it as they read; ``data check`` and training check the others against the
decoded image). Anything else is refused, naming the record and the field; nothing is clamped.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ...core.sample import BoxPart, PointPart
from .common import Where

_SIZES = {"box": 4, "point": 2}


def grounding_part(kind: str, value: Any, where: Where, field: str, image: int = 0, label: str | None = None,
                   size: tuple[int, int] | None = None, unit: str = "pixels of the original image",
                   what: str = "image") -> BoxPart | PointPart:
    """The box or point ``value`` of a record as a part, or a RecordError naming ``field``.

    ``kind``: ``box`` or ``point``. ``size``: ``(width, height)`` of its image where the reader knows it (``what``
    names that image in the error, ``unit`` the coordinates)."""
    n = _SIZES[kind]
    shown = json.dumps(value)[:80]
    if (not isinstance(value, list | tuple) or len(value) != n
            or not all(isinstance(c, int | float) and not isinstance(c, bool) for c in value)):
        raise where.error(f"{kind} must be a list of {n} numbers ({unit}), got {shown}", field)
    coords = tuple(_finite(c) for c in value)
    if any(c is None for c in coords):
        raise where.error(f"{kind} {shown} has a coordinate that is not a finite number ({unit})", field)
    if min(coords) < 0:
        raise where.error(f"{kind} {shown} has a negative coordinate ({unit}, from 0)", field)
    if kind == "box" and (coords[2] <= coords[0] or coords[3] <= coords[1]):
        raise where.error(f"box {shown} is empty or inverted: need x1 < x2 and y1 < y2", field)
    if size is not None and not inside(coords, size):
        raise where.error(f"{kind} {shown} lies outside the {size[0]}x{size[1]} {what}", field)
    if kind == "box":
        return BoxPart(coords, image, label, source_field=field)
    return PointPart(coords, image, label, source_field=field)


def inside(coords: tuple[float, ...], size: tuple[int, int]) -> bool:
    """Whether a box's or point's coordinates lie within a ``(width, height)`` image (its edges included)."""
    width, height = size
    return max(coords[0::2]) <= width and max(coords[1::2]) <= height


def _finite(value: int | float) -> float | None:
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        return None
    return number if math.isfinite(number) else None
