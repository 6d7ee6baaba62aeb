"""LLaVA / Qwen-VL fine-tuning JSON: ``image`` (a path or a list) and ``conversations`` with ``<image>``
placeholders, as a JSON array or JSONL::

    [{"id": "10095", "image": "images/10095.png",
      "conversations": [{"from": "human", "value": "<image>\\nIs the value 38 in 2015?"},
                        {"from": "gpt", "value": "Yes"}]}]

Every image needs its ``<image>`` placeholder in a user turn; a record without one is reported, not guessed. The
newline after ``<image>`` belongs to the placeholder: ``"<image>\\nIs the value..."`` is the image, then the text
``Is the value...`` (see :func:`.common.split_placeholders`), as the chat template renders an image part and text.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...core.errors import RecordError
from ...core.sample import Sample
from . import register_reader
from .common import ReadOptions, parse_each
from .sharegpt import ShareGPTLayout, parse_sharegpt

LAYOUT = ShareGPTLayout(messages=("conversations",), images=("image",), role_tag=("from",), content_tag=("value",))


class LlavaReader:
    name = "llava"

    def detect(self, path: Path, first_record: Any) -> bool:
        return (isinstance(first_record, dict) and isinstance(first_record.get("conversations"), list)
                and "images" not in first_record and "messages" not in first_record
                and "<|vision_start|>" not in str(first_record["conversations"]))

    def read(self, path: Path, options: ReadOptions) -> Iterator[Sample | RecordError]:
        return parse_each(path, options, lambda record, where: parse_sharegpt(record, where, LAYOUT, options.system))


register_reader(LlavaReader())
