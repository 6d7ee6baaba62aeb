"""JSONL in the ``messages`` form (OpenAI / TRL style).

One JSON object a line::

    {"messages": [{"role": "user", "content": [{"type": "image", "image": "a.jpg"},
                                               {"type": "text", "text": "What is shown?"}]},
                  {"role": "assistant", "content": "A cat."}]}

``content`` is a string or a list of parts; image paths are relative to the data file's folder.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import RecordError
from ..sample import ROLES, ImagePart, Message, Part, Sample, TextPart
from . import register_reader


class MessagesReader:
    name = "messages"

    def detect(self, path: Path, first_record: Any) -> bool:
        return isinstance(first_record, dict) and isinstance(first_record.get("messages"), list)

    def read(self, path: Path) -> Iterator[Sample]:
        root = path.resolve().parent
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise RecordError(path, line_no, f"not valid JSON: {e.msg} at column {e.colno}") from None
                yield parse_record(record, path, line_no, root)


def parse_record(record: Any, path: Path, line: int, root: Path) -> Sample:
    """Turn one ``{"messages": [...]}`` record into a Sample, or raise a RecordError naming the field."""
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
        raise RecordError(path, line, "expected an object with a 'messages' list", field="messages")
    messages = []
    for i, raw in enumerate(record["messages"]):
        where = f"messages[{i}]"
        if not isinstance(raw, dict):
            raise RecordError(path, line, "a message must be an object with 'role' and 'content'", field=where)
        role = raw.get("role")
        if role not in ROLES:
            raise RecordError(path, line, f"unknown role {role!r}; expected one of {', '.join(ROLES)}",
                              field=f"{where}.role")
        parts = _parse_content(raw.get("content"), path, line, f"{where}.content", root)
        if role == "assistant":
            if any(isinstance(p, ImagePart) for p in parts):
                raise RecordError(path, line, "assistant turns cannot contain images", field=f"{where}.content")
            if not "".join(p.text for p in parts if isinstance(p, TextPart)).strip():
                raise RecordError(path, line, "empty assistant answer", field=f"{where}.content")
        messages.append(Message(role=role, content=tuple(parts)))
    if not any(m.role == "assistant" for m in messages):
        raise RecordError(path, line, "no assistant turn: nothing to train on", field="messages")
    meta = {k: v for k, v in record.items() if k != "messages"}
    return Sample(messages=tuple(messages), id=f"{path}:{line}", meta=meta)


def _parse_content(content: Any, path: Path, line: int, where: str, root: Path) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content)]
    if not isinstance(content, list):
        raise RecordError(path, line, "content must be a string or a list of parts", field=where)
    parts: list[Part] = []
    for j, part in enumerate(content):
        field = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(TextPart(part["text"]))
        elif kind == "image":
            ref = part.get("image", part.get("path"))
            if not isinstance(ref, str) or not ref:
                raise RecordError(path, line, "image part needs an 'image' file path", field=field)
            if "://" in ref:
                raise RecordError(path, line, f"remote image {ref!r} is not fetched; download it and give a "
                                  "local path", field=field)
            image = (root / ref).resolve()
            if not image.is_file():
                raise RecordError(path, line, f"image file not found {ref!r}", field=field,
                                  hint=f"resolved against {root}")
            parts.append(ImagePart(image))
        else:
            raise RecordError(path, line, f"unknown part {json.dumps(part)[:80]}; expected "
                              "{'type': 'text', 'text': ...} or {'type': 'image', 'image': PATH}", field=field)
    return parts


register_reader(MessagesReader())
