"""How a model family writes boxes and points as text, and how to read them back.

A :class:`GroundingConvention` is a syntax (Qwen2-VL's special tokens or the cookbooks' JSON) plus a coordinate
space: either a relative ``0..grid`` grid over the image, or absolute pixels of the image *after* the
processor's resize. Boxes and points in a :class:`~vlmtune.core.sample.Sample` are in pixels of the ORIGINAL
image; the convention maps them into its space when writing and back when parsing, so it needs both sizes.
It never opens files: callers pass the original size and the model size (:func:`model_image_size`).

Precision of a round trip (format, then parse) along an axis of ``n`` original pixels: integers in a space of
extent ``m`` are off by at most half a unit, i.e. ``n / (2 m)`` original pixels. On the 0-1000 grid that is
``n / 2000`` (at most 1 px for images up to 2000 px); in model pixels it is ``n / (2 * model_n)``, at most 1 px
unless the processor shrinks the image to under half its size (``max_pixels``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from .. import bounded_json
from ..core.sample import BoxPart, GroundingPart, PointPart

Size = tuple[int, int]
"""``(width, height)`` in pixels."""


def model_image_size(original: Size, factor: int, min_pixels: int, max_pixels: int) -> Size:
    """``(width, height)`` the Qwen-VL image processor resizes an ``original`` ``(width, height)`` image to.

    Uses transformers' own ``smart_resize`` (the PIL backend's copy, identical to the torchvision one and
    importable without torchvision), so it agrees with ``image_grid_thw * patch_size`` by construction.
    """
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    width, height = original
    resized_height, resized_width = smart_resize(
        height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    return resized_width, resized_height


@dataclass(frozen=True)
class GroundingConvention:
    """One family's grounding text: ``syntax`` and coordinate space, with where it was taken from."""

    syntax: Literal["ref_box_tokens", "json", "ref_box_tags"]
    """``ref_box_tokens``: ``<|object_ref_start|>label<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>``
    (a point is one pair). ``json``: ``{"bbox_2d": [x1, y1, x2, y2], "label": ...}`` / ``{"point_2d": [x, y], ...}``.
    ``ref_box_tags``: ``<ref>label</ref><box>[[x1, y1, x2, y2]]</box>`` (InternVL; boxes only)."""
    grid: int | None
    """Coordinates are integers on a relative ``0..grid`` scale of the image; None: integer pixels of the
    image as the processor resized it (the model size)."""
    source: str = ""

    def format(self, part: GroundingPart, original_size: Size, model_size: Size) -> str:
        """The text for ``part`` (original-image pixels), as the model should read or write it. ValueError for a
        point in a syntax that has none."""
        if self.syntax == "ref_box_tags" and isinstance(part, PointPart):
            raise ValueError("has a point, and this family's grounding syntax (<ref>..</ref><box>[[..]]</box>) "
                             "writes boxes only")
        (sx, sy), (ex, ey) = self._scale(original_size, model_size), self._extent(model_size)
        numbers = []
        for i, c in enumerate(part.box if isinstance(part, BoxPart) else part.point):
            scale, extent = (sx, ex) if i % 2 == 0 else (sy, ey)
            # Clamped to [0, extent], not extent - 1: a box edge on the right/bottom border stays exact.
            numbers.append(min(max(round(c / scale), 0), extent))
        if self.syntax == "json":
            key = "bbox_2d" if isinstance(part, BoxPart) else "point_2d"
            obj: dict[str, Any] = {key: numbers}
            if part.label is not None:
                obj["label"] = part.label
            return json.dumps(obj, ensure_ascii=False)
        if self.syntax == "ref_box_tags":
            ref = "" if part.label is None else f"<ref>{part.label}</ref>"
            return f"{ref}<box>[[{', '.join(map(str, numbers))}]]</box>"
        pairs = ",".join(f"({x},{y})" for x, y in zip(numbers[::2], numbers[1::2], strict=True))
        ref = "" if part.label is None else f"<|object_ref_start|>{part.label}<|object_ref_end|>"
        return f"{ref}<|box_start|>{pairs}<|box_end|>"

    @property
    def markers(self) -> tuple[str, ...]:
        """The tags the syntax writes around labels and boxes (special tokens in the families that use them): an
        answer must keep them when it is decoded, or its boxes are lost."""
        return {"ref_box_tokens": _TOKENS, "ref_box_tags": _TAGS}.get(self.syntax, ())

    def parse(self, text: str, original_size: Size, model_size: Size) -> list[GroundingPart]:
        """Every box and point written in ``text``, in ORIGINAL-image pixels (floats, not clamped), in order.

        Malformed pieces (wrong number of coordinates, broken JSON, non-numbers) are skipped. Parts refer to
        image 0; callers with several images know which one the answer is about.
        """
        found = {"json": _parse_json, "ref_box_tags": _parse_tags}.get(self.syntax, _parse_tokens)(text)
        sx, sy = self._scale(original_size, model_size)
        parts: list[GroundingPart] = []
        for coords, label in found:
            scaled = tuple(float(c) * (sx if i % 2 == 0 else sy) for i, c in enumerate(coords))
            parts.append(BoxPart(scaled, 0, label) if len(scaled) == 4 else PointPart(scaled, 0, label))
        return parts

    def _extent(self, model_size: Size) -> Size:
        return (self.grid, self.grid) if self.grid is not None else model_size

    def _scale(self, original_size: Size, model_size: Size) -> tuple[float, float]:
        """Original pixels per text unit along x and y."""
        ex, ey = self._extent(model_size)
        return original_size[0] / ex, original_size[1] / ey


_NUMBER = r"\s*(-?\d+(?:\.\d+)?)\s*"
_BOX_BODY = re.compile(rf"\s*\({_NUMBER},{_NUMBER}\)\s*(?:,\s*\({_NUMBER},{_NUMBER}\)\s*)?")
_TOKENS = ("<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>")


class _Next:
    """The next occurrence of ``needle`` in ``text`` at or after a position that only grows: each stretch of the
    text is searched once, so finding every marker stays linear in the length of the text."""

    def __init__(self, text: str, needle: str):
        self.text, self.needle, self.at, self.since = text, needle, -1, -1

    def find(self, pos: int) -> int:
        if self.since == -1 or (self.at != -1 and self.at < pos):
            self.at, self.since = self.text.find(self.needle, pos), pos
        return self.at


def _marked(text: str, markers: tuple[str, str, str, str]) -> Iterator[tuple[str, int, int, str]]:
    """``(kind, start, end, body)`` for each ``ref`` (``markers[0] body markers[1]``) and ``box``
    (``markers[2] body markers[3]``) in ``text``, left to right: as a lazy regex ``open(.*?)close`` per kind would
    find them, without its quadratic retries on long text full of unclosed markers."""
    kinds = {"ref": (_Next(text, markers[0]), _Next(text, markers[1]), len(markers[0]), len(markers[1])),
             "box": (_Next(text, markers[2]), _Next(text, markers[3]), len(markers[2]), len(markers[3]))}
    pos = 0
    while kinds:
        opened = [(found, kind) for kind, (opening, *_) in kinds.items() if (found := opening.find(pos)) != -1]
        if not opened:
            return
        start, kind = min(opened)
        _, closing, open_len, close_len = kinds[kind]
        close = closing.find(start + open_len)
        if close == -1:  # nothing closes this kind from here on
            del kinds[kind]
            continue
        yield kind, start, close + close_len, text[start + open_len:close]
        pos = close + close_len


def _labelled_boxes(markers: tuple[str, str, str, str], text: str) -> Iterator[tuple[str, str | None]]:
    """``(box body, label)`` for each box of ``text`` (see :func:`_marked`). A ref names the boxes that follow it
    directly ("<ref>sheep</ref><box>..</box><box>..</box>"); text between ends it."""
    label, last_end = None, 0
    for kind, start, end, body in _marked(text, markers):
        if text[last_end:start].strip():
            label = None
        last_end = end
        if kind == "ref":
            label = body.strip() or None
        else:
            yield body, label


def _parse_tokens(text: str) -> list[tuple[list[float], str | None]]:
    found: list[tuple[list[float], str | None]] = []
    for box, label in _labelled_boxes(_TOKENS, text):
        body = _BOX_BODY.fullmatch(box)
        if body is not None:
            found.append(([float(n) for n in body.groups() if n is not None], label))
    return found


_TAGS = ("<ref>", "</ref>", "<box>", "</box>")


def _parse_tags(text: str) -> list[tuple[list[float], str | None]]:
    """``<ref>label</ref><box>[[x1, y1, x2, y2], ...]</box>``: every box of a <box> list."""
    found: list[tuple[list[float], str | None]] = []
    for box, label in _labelled_boxes(_TAGS, text):
        try:
            boxes = bounded_json.loads(box)
        except bounded_json.NotJson:
            continue
        for coords in boxes if isinstance(boxes, list) else ():
            if isinstance(coords, list) and len(coords) == 4 and all(_is_number(c) for c in coords):
                found.append(([float(c) for c in coords], label))
    return found


def _parse_json(text: str) -> list[tuple[list[float], str | None]]:
    found: list[tuple[list[float], str | None]] = []
    decoder, i = json.JSONDecoder(), text.find("{")
    while i != -1:
        try:
            value, end = bounded_json.decode_at(decoder, text, i)
        except bounded_json.NotJson:
            end = i + 1  # not an object here (broken or truncated): try the next "{", maybe one inside it
        else:
            found.extend(_json_parts(value))
        i = text.find("{", end)
    return found


def _json_parts(value: Any) -> Iterator[tuple[list[float], str | None]]:
    if isinstance(value, list):
        for item in value:
            yield from _json_parts(item)
        return
    if not isinstance(value, dict):
        return
    label = value.get("label") if isinstance(value.get("label"), str) else None
    for key, n in (("bbox_2d", 4), ("point_2d", 2)):
        coords = value.get(key)
        if isinstance(coords, list) and len(coords) == n and all(_is_number(c) for c in coords):
            yield [float(c) for c in coords], label
    for nested in value.values():
        if isinstance(nested, list | dict):
            yield from _json_parts(nested)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
