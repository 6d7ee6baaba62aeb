"""JSONL in the ``messages`` form (OpenAI / TRL style), vlmtune's canonical form.

One JSON object a line::

    {"messages": [{"role": "user", "content": [{"type": "image", "image": "a.jpg"},
                                               {"type": "text", "text": "Where is the cat?"}]},
                  {"role": "assistant", "content": [{"type": "box", "box": [10, 20, 110, 140],
                                                     "label": "cat"}]}]}

``content`` is a string or a list of parts: ``text``, ``image`` (path relative to the data file's folder;
``image_url`` / ``value`` spellings of LLaMA-Factory's typed JSONL are accepted too), and ``box`` / ``point``
in pixels of the original image (``"image": k`` picks the sample's k-th image; default: the last image
before it), under the one rule of :mod:`.coords`. Boxes are written in the model family's grounding syntax when
rendered.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...core.errors import RecordError
from ...core.sample import ROLES, BoxPart, ImagePart, Message, Part, PointPart, Sample, TextPart, VideoPart
from . import register_reader
from .common import ReadOptions, Where, finish, parse_each
from .coords import grounding_part

_VISION_TAG = "<|vision_start|>"


class MessagesReader:
    name = "messages"

    def detect(self, path: Path, first_record: Any) -> bool:
        if not isinstance(first_record, dict) or not isinstance(first_record.get("messages"), list):
            return False
        contents = [m.get("content") for m in first_record["messages"] if isinstance(m, dict)]
        return any(isinstance(c, list) for c in contents) or (
            "images" not in first_record and not any(isinstance(c, str) and _VISION_TAG in c for c in contents))

    def read(self, path: Path, options: ReadOptions) -> Iterator[Sample | RecordError]:
        return parse_each(path, options, lambda record, where: parse_record(record, where, options.system))


def parse_record(record: Any, where: Where, system: str | None = None) -> Sample:
    """Turn one ``{"messages": [...]}`` record into a Sample, or raise a RecordError naming the field.
    ``system``: the system prompt of a record that has none (``data.system``)."""
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
        raise where.error("expected an object with a 'messages' list", "messages")
    if _is_sharegpt(record):
        from .sharegpt import parse_sharegpt  # string turns with <image> placeholders and an images list

        return parse_sharegpt(record, where, system=system)
    messages: list[Message] = []
    n_images = 0
    for i, raw in enumerate(record["messages"]):
        field = f"messages[{i}]"
        if not isinstance(raw, dict):
            raise where.error("a message must be an object with 'role' and 'content'", field)
        role = raw.get("role")
        if role not in ROLES:
            raise where.error(f"unknown role {role!r}; expected one of {', '.join(ROLES)}", f"{field}.role")
        parts = _parse_content(raw.get("content"), where, f"{field}.content", n_images)
        if role == "assistant" and any(isinstance(p, ImagePart | VideoPart) for p in parts):
            raise where.error("assistant turns cannot contain images or videos", f"{field}.content")
        n_images += sum(isinstance(p, ImagePart) for p in parts)
        messages.append(Message(role=role, content=tuple(parts)))
    if system and not any(m.role == "system" for m in messages):
        messages.insert(0, Message("system", (TextPart(system),)))
    meta = {k: v for k, v in record.items() if k != "messages"}
    return finish(messages, where, meta)


def _is_sharegpt(record: dict) -> bool:
    contents = [m.get("content") for m in record["messages"] if isinstance(m, dict)]
    tags = ("<image>", "<video>", "<audio>")
    return not any(isinstance(c, list) for c in contents) and (
        any(k in record for k in ("images", "videos", "audios"))
        or any(isinstance(c, str) and any(t in c for t in tags) for c in contents))


def _parse_content(content: Any, where: Where, field: str, n_images: int) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content)]
    if not isinstance(content, list):
        raise where.error("content must be a string or a list of parts", field)
    parts: list[Part] = []
    for j, part in enumerate(content):
        at = f"{field}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        text = part.get("text", part.get("value")) if kind == "text" else None
        if kind == "text" and isinstance(text, str):
            parts.append(TextPart(text))
        elif kind in ("image", "image_url"):
            ref = part.get("image", part.get("path", part.get("value", part.get("image_url"))))
            if isinstance(ref, dict):  # OpenAI: {"type": "image_url", "image_url": {"url": ...}}
                ref = ref.get("url")
            parts.append(where.image(ref, at))
            n_images += 1
        elif kind in ("video", "video_url"):
            ref = part.get("video", part.get("path", part.get("value", part.get("video_url"))))
            if isinstance(ref, dict):
                ref = ref.get("url")
            parts.append(where.video(ref, at))
        elif kind in ("box", "point"):
            parts.append(_grounding_part(part, kind, where, at, n_images))
        else:
            raise where.error(f"unknown part {json.dumps(part)[:80]}; expected a text, image, video, box or point "
                              "part", at)
    return parts


def _grounding_part(part: dict, kind: str, where: Where, field: str, n_images: int) -> BoxPart | PointPart:
    image = part.get("image", n_images - 1)
    if not isinstance(image, int) or not 0 <= image < max(n_images, 1) or n_images == 0:
        raise where.error(f"{kind} refers to image {image!r} but only {n_images} image(s) come before it", field)
    label = part.get("label")
    if label is not None and not isinstance(label, str):
        raise where.error("'label' must be a string", field)
    return grounding_part(kind, part.get(kind), where, field, image, label)


register_reader(MessagesReader())
