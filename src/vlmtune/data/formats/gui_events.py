"""GUI-agent events: JSONL records of a screenshot and an instruction, with the action to take or the text to read.

Two record types, one JSON object a line::

    {"type": "action_description", "screenshot": "shots/001.png", "instruction": "Save the document",
     "action": "click", "bbox": [412, 18, 470, 42], "target": "Save button"}
    {"type": "context_extraction", "screenshot": "shots/002.png", "instruction": "What is the order total?",
     "text": "$42.10"}

Every record has ``type``, ``screenshot`` (alias ``image``; a path relative to the data file's folder) and a
non-empty ``instruction``.

- ``action_description``: the target is exactly one of ``bbox`` (alias ``box``, ``[x1, y1, x2, y2]``) or
  ``point`` (alias ``click``, ``[x, y]``), in pixels of the screenshot and inside it. ``action`` is one word
  (``click`` by default; ``double_click``, ``right_click``, ``type``, ``scroll``, ...). A ``type`` action needs
  the ``text`` to type; other actions take no ``text``. ``target`` optionally describes the element.
- ``context_extraction``: ``text`` is the non-empty answer read off the screen.

The sample is a user turn (screenshot, then instruction) and an assistant answer. An action's answer is the
action, a space and the target as a box or point part labelled with ``target``, then for ``type`` a space and
the text as a JSON string: ``click <box>``, ``type <point> "Berlin"``, the box or point written in the model
family's grounding syntax when rendered. An extraction's answer is its ``text``. Other record fields are kept in
the sample's meta, with ``event`` set to the record type.

:func:`convert_gui_events` turns such a file into the canonical messages form with JPEG screenshots.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ...core.errors import RecordError
from ...core.sample import ImagePart, Message, Part, Sample, TextPart
from ..images import image_size, load_image
from . import register_reader
from .common import ReadOptions, Where, finish, json_records, media_root, record_where
from .coords import grounding_part
from .write import sample_to_record

ACTION, EXTRACTION = "action_description", "context_extraction"
KINDS = (ACTION, EXTRACTION)
_ALIASES = {"screenshot": ("screenshot", "image"), "bbox": ("bbox", "box"), "point": ("point", "click")}
_USED = {"type", "instruction", "action", "text", "target", *(k for keys in _ALIASES.values() for k in keys)}
_ACTION_NAME = re.compile(r"[a-z][a-z0-9_]*")

_Size = tuple[int, int]


class GuiEventsReader:
    name = "gui_events"

    def detect(self, path: Path, first_record: Any) -> bool:
        return (isinstance(first_record, dict) and first_record.get("type") in KINDS
                and "messages" not in first_record)

    def read(self, path: Path, options: ReadOptions) -> Iterator[Sample | RecordError]:
        for _, item in _read(path, options):
            yield item


def _read(path: Path, options: ReadOptions) -> Iterator[tuple[Where, Sample | RecordError]]:
    root = media_root(path, options)
    sizes: dict[Path, _Size | str] = {}  # screenshots are often shared by many records: open each once
    for item in json_records(path):
        where = record_where(path, item, root, options)
        if isinstance(item.record, RecordError):
            yield where, item.record
            continue
        try:
            yield where, parse_event(item.record, where, sizes, options.system)
        except RecordError as e:
            yield where, e


def parse_event(record: Any, where: Where, sizes: dict[Path, _Size | str] | None = None,
                system: str | None = None) -> Sample:
    """One event record as a Sample, or a RecordError naming the field (``sizes`` caches screenshot sizes)."""
    if not isinstance(record, dict):
        raise where.error(f"expected a JSON object, got {type(record).__name__}")
    kind = record.get("type")
    if kind not in KINDS:
        raise where.error(f"unknown record type {kind!r}; expected {' or '.join(KINDS)}", "type")
    key = _key(record, "screenshot", where)
    if key is None:
        raise where.error("missing 'screenshot' (the screenshot's path)", "screenshot")
    image = where.image(record[key], key)
    instruction = record.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        raise where.error("'instruction' must be a non-empty string", "instruction")
    size = _size(image.path, where, key, {} if sizes is None else sizes)  # also drops unreadable screenshots
    if kind == ACTION:
        answer = _action_answer(record, where, size)
    else:
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
            raise where.error("'text' (the extracted answer) must be a non-empty string", "text")
        answer = [TextPart(text)]
    messages = [Message("system", (TextPart(system),))] if system else []
    messages += [Message("user", (image, TextPart(instruction))), Message("assistant", tuple(answer))]
    meta = {k: v for k, v in record.items() if k not in _USED} | {"event": kind}
    return finish(messages, where, meta)


def _key(record: dict, name: str, where: Where) -> str | None:
    """Which of the field's spellings the record uses (two at once is ambiguous)."""
    present = [k for k in _ALIASES[name] if k in record]
    if len(present) > 1:
        raise where.error(f"both {present[0]!r} and {present[1]!r} given; use one", present[1])
    return present[0] if present else None


def _action_answer(record: dict, where: Where, size: _Size) -> list[Part]:
    action = record.get("action", "click")
    name = re.sub(r"[\s-]+", "_", action.strip().lower()) if isinstance(action, str) else ""
    if not _ACTION_NAME.fullmatch(name):
        raise where.error(f"'action' must be one word such as click, double_click or type, got {action!r}", "action")
    target = record.get("target")
    if target is not None and (not isinstance(target, str) or not target.strip()):
        raise where.error("'target' (the element's description) must be a non-empty string", "target")
    text = record.get("text")
    if name == "type" and (not isinstance(text, str) or not text):
        raise where.error("a type action needs the 'text' to type", "text")
    if name != "type" and text is not None:
        raise where.error(f"'text' is only for type actions, not {name!r}", "text",
                          hint="describe the element in 'target'")
    box_key, point_key = _key(record, "bbox", where), _key(record, "point", where)
    if (box_key is None) == (point_key is None):
        raise where.error("an action needs its target as exactly one of 'bbox' [x1, y1, x2, y2] or "
                          "'point' [x, y]", box_key or "bbox")
    key = box_key or point_key
    grounding = grounding_part("box" if box_key else "point", record[key], where, key, 0, target, size,
                               unit="pixels of the screenshot", what="screenshot")
    answer: list[Part] = [TextPart(f"{name} "), grounding]
    if name == "type":
        # JSON quoting keeps the typed text unambiguous (quotes, newlines, trailing spaces).
        answer.append(TextPart(" " + json.dumps(text, ensure_ascii=False)))
    return answer


def _size(path: Path, where: Where, key: str, sizes: dict[Path, _Size | str]) -> _Size:
    if path not in sizes:
        try:
            sizes[path] = image_size(path)  # the upright size, from the header only
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            sizes[path] = f"screenshot is not a readable image: {e}"
    size = sizes[path]
    if isinstance(size, str):
        raise where.error(size, key)
    return size


@dataclass
class ConvertReport:
    """What :func:`convert_gui_events` did: records read, samples and JPEGs written, records dropped and why."""

    annotations: Path
    read: int = 0
    written: int = 0
    images: int = 0
    dropped: list[RecordError] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"read {self.read} records, wrote {self.written} samples and {self.images} images to "
                 f"{self.annotations}, dropped {len(self.dropped)}"]
        return "\n".join(lines + [f"  {e}" for e in self.dropped])


def convert_gui_events(path: str | Path, out_dir: str | Path, options: ReadOptions | None = None,
                       jpeg_quality: int = 90, annotations: str = "annotations.jsonl") -> ConvertReport:
    """Convert a GUI events file to ``out_dir/annotations`` (messages form) and ``out_dir/images/*.jpg``.

    Each screenshot used by a good record is written once as an RGB JPEG of the same pixel size, so boxes and
    points stay valid; bad records are dropped and listed in the report with their line numbers.
    """
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be between 1 and 100, got {jpeg_quality}")
    path, out_dir = Path(path), Path(out_dir).resolve()
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    report = ConvertReport(annotations=out_dir / annotations)
    converted: dict[Path, Path | str] = {}
    with open(report.annotations, "w", encoding="utf-8") as out:
        for where, item in _read(path, options or ReadOptions()):
            report.read += 1
            if isinstance(item, Sample):
                try:
                    item = _with_jpegs(item, out_dir / "images", converted, jpeg_quality)
                except ValueError as e:
                    item = where.error(str(e), "screenshot")
            if isinstance(item, RecordError):
                report.dropped.append(item)
                continue
            out.write(json.dumps(sample_to_record(item, out_dir), ensure_ascii=False) + "\n")
            report.written += 1
    report.images = sum(isinstance(p, Path) for p in converted.values())
    return report


def _with_jpegs(sample: Sample, folder: Path, converted: dict[Path, Path | str], quality: int) -> Sample:
    messages = []
    for message in sample.messages:
        parts = []
        for part in message.content:
            if isinstance(part, ImagePart):
                if part.path not in converted:
                    converted[part.path] = _to_jpeg(part.path, folder, len(converted), quality)
                if isinstance(converted[part.path], str):
                    raise ValueError(converted[part.path])
                part = ImagePart(converted[part.path])
            parts.append(part)
        messages.append(Message(message.role, tuple(parts)))
    return Sample(tuple(messages), sample.id, sample.meta)


def _to_jpeg(source: Path, folder: Path, n: int, quality: int) -> Path | str:
    # Numbered names keep screenshots of the same name from different folders apart.
    target = folder / f"{n:06d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', source.stem)[:60]}.jpg"
    try:
        # Upright, transparency on white, as training shows it (vlmtune.data.images); the JPEG has no EXIF
        # orientation left to apply twice. 4:4:4 chroma keeps small coloured UI text legible.
        load_image(source).save(target, "JPEG", quality=quality, subsampling=0)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        return f"screenshot could not be converted to JPEG: {e}"
    return target


register_reader(GuiEventsReader())
