"""Qwen's inline image tags: the image path written inside the user text between vision tags, as in the
Qwen-VL captioning tutorials::

    {"messages": [{"role": "user", "content": "<|vision_start|>coco/0001.jpg<|vision_end|>Describe it."},
                  {"role": "assistant", "content": "A dog on a beach."}]}

``conversations`` / ``from`` / ``value`` are read too. Each tagged path becomes an image at that position, a
placeholder like ``<image>``: one newline directly after it (or before it, ending the text) belongs to it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...core.errors import RecordError
from ...core.sample import Sample
from . import register_reader
from .common import IMAGE_PLACEHOLDER, ReadOptions, Where, parse_each
from .sharegpt import ShareGPTLayout, parse_sharegpt

VISION_TAG = re.compile(r"<\|vision_start\|>(.*?)<\|vision_end\|>", re.S)


class QwenTagsReader:
    name = "qwen_tags"

    def detect(self, path: Path, first_record: Any) -> bool:
        return isinstance(first_record, dict) and bool(VISION_TAG.search(
            str(first_record.get("messages", first_record.get("conversations", "")))))

    def read(self, path: Path, options: ReadOptions) -> Iterator[Sample | RecordError]:
        layout = ShareGPTLayout(images=("images",))
        return parse_each(path, options, lambda record, where: parse_sharegpt(untag(record, where), where, layout,
                                                                                options.system))


def untag(record: Any, where: Where) -> Any:
    """The record with each tagged path moved to an ``images`` list and replaced by ``<image>``."""
    if not isinstance(record, dict):
        return record
    key = "messages" if "messages" in record else "conversations"
    turns = record.get(key)
    if not isinstance(turns, list):
        return record
    images: list[str] = []

    def take(match: re.Match) -> str:
        images.append(match.group(1).strip())
        return IMAGE_PLACEHOLDER

    new_turns = []
    for i, turn in enumerate(turns):
        if isinstance(turn, dict):
            content_key = "content" if "content" in turn else "value"
            text = turn.get(content_key)
            if isinstance(text, str):
                if IMAGE_PLACEHOLDER in text:
                    raise where.error(f"mixes {IMAGE_PLACEHOLDER} placeholders with <|vision_start|> tags",
                                      f"{key}[{i}].{content_key}")
                turn = {**turn, content_key: VISION_TAG.sub(take, text)}
        new_turns.append(turn)
    if "images" in record:
        raise where.error("has both an 'images' list and <|vision_start|> tags; use one of them", "images")
    return {**record, key: new_turns, "images": images}


register_reader(QwenTagsReader())
