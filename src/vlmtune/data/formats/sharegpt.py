"""ShareGPT as LLaMA-Factory and ms-swift write it: string turns with ``<image>`` placeholders and an
``images`` list, taken in order::

    {"messages": [{"role": "user", "content": "<image>Who are they?"},
                  {"role": "assistant", "content": "Two footballers."}],
     "images": ["mllm_demo_data/1.jpg"]}

``conversations`` / ``from`` / ``value`` and the roles ``human`` / ``gpt`` are read too. ms-swift's grounding
records (``<ref-object>`` / ``<bbox>`` placeholders filled from ``objects: {"ref": [...], "bbox": [...]}`` in
pixels) become labelled text and boxes (under the one rule of :mod:`.coords`), so they render in each family's own
grounding syntax. Newlines next to a placeholder belong to it (see :func:`.common.split_placeholders`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...core.errors import RecordError
from ...core.sample import ImagePart, Message, Part, Sample, TextPart, VideoPart
from . import register_reader
from .common import ReadOptions, Where, build_conversation, parse_each
from .coords import grounding_part

USER_ROLES = ("user", "human")
ASSISTANT_ROLES = ("assistant", "gpt")
_UNSUPPORTED_ROLES = ("observation", "function_call", "function", "tool", "tool_call", "tool_response")


@dataclass(frozen=True)
class ShareGPTLayout:
    """Key names of one ShareGPT dialect (LLaMA-Factory's ``columns`` and ``tags``)."""

    messages: tuple[str, ...] = ("messages", "conversations")
    images: tuple[str, ...] = ("images", "image")
    videos: tuple[str, ...] = ("videos", "video")
    system: str = "system"
    role_tag: tuple[str, ...] = ("role", "from")
    content_tag: tuple[str, ...] = ("content", "value")
    roles: Mapping[str, str] = field(default_factory=lambda: {
        **{r: "user" for r in USER_ROLES}, **{r: "assistant" for r in ASSISTANT_ROLES}, "system": "system"})

    @classmethod
    def from_registry(cls, columns: Mapping[str, str], tags: Mapping[str, str]) -> ShareGPTLayout:
        """The layout a LLaMA-Factory ``dataset_info.json`` entry describes."""
        default = cls()
        roles = dict(default.roles)
        for tag, role in (("user_tag", "user"), ("assistant_tag", "assistant"), ("system_tag", "system")):
            if tag in tags:
                roles[tags[tag]] = role
        return cls(
            messages=(columns["messages"],) if "messages" in columns else default.messages,
            images=(columns["images"],) if "images" in columns else default.images,
            videos=(columns["videos"],) if "videos" in columns else default.videos,
            system=columns.get("system", default.system),
            role_tag=(tags["role_tag"],) if "role_tag" in tags else default.role_tag,
            content_tag=(tags["content_tag"],) if "content_tag" in tags else default.content_tag,
            roles=roles,
        )


def _first_key(record: dict, keys: tuple[str, ...]) -> str | None:
    return next((k for k in keys if k in record), None)


def parse_sharegpt(record: Any, where: Where, layout: ShareGPTLayout = ShareGPTLayout(),
                   system: str | None = None) -> Sample:
    """One ShareGPT record -> Sample, or a RecordError naming the key at fault."""
    if not isinstance(record, dict):
        raise where.error(f"expected a JSON object, got {type(record).__name__}")
    key = _first_key(record, layout.messages)
    if key is None or not isinstance(record[key], list):
        raise where.error(f"expected a {' or '.join(map(repr, layout.messages))} list of turns", layout.messages[0])
    for media in ("audios", "audio"):
        if record.get(media):
            raise where.error("only images and videos are supported, not audio", media)
    images = _images(record, layout, where)
    videos = _videos(record, layout, where)
    turns = []
    for i, turn in enumerate(record[key]):
        at = f"{key}[{i}]"
        if not isinstance(turn, dict):
            raise where.error("a turn must be an object", at)
        role_key, content_key = _first_key(turn, layout.role_tag), _first_key(turn, layout.content_tag)
        if role_key is None or content_key is None:
            raise where.error(f"a turn needs {'/'.join(layout.role_tag)} and {'/'.join(layout.content_tag)}", at)
        raw_role = turn[role_key]
        role = layout.roles.get(raw_role)
        if role is None:
            why = "tool and function turns are not supported" if raw_role in _UNSUPPORTED_ROLES else \
                f"expected one of {', '.join(sorted(layout.roles))}"
            raise where.error(f"unknown role {raw_role!r}; {why}", f"{at}.{role_key}")
        turns.append((role, turn[content_key], f"{at}.{content_key}"))
    record_system = record.get(layout.system)
    if isinstance(record_system, str) and record_system and not any(r == "system" for r, _, _ in turns):
        turns.insert(0, ("system", record_system, layout.system))
    meta = {k: v for k, v in record.items()
            if k not in (key, *layout.images, *layout.videos, layout.system, "objects")}
    sample = build_conversation(turns, images, where, meta, system=system, videos=videos)
    if "objects" in record:
        sample = _fill_objects(sample, record["objects"], where)
    return sample


def _media_refs(record: dict, keys: Any, where: Where, kind: str) -> tuple[str | None, list]:
    """The record's column of ``kind`` (images, videos) among ``keys``, and its references as a list."""
    key = _first_key(record, keys)
    refs = record.get(key) if key else None
    if refs is None:
        return key, []
    if isinstance(refs, str):
        refs = [refs]
    if not isinstance(refs, list):
        raise where.error(f"{kind} must be a list of file paths", key)
    return key, refs


def _images(record: dict, layout: ShareGPTLayout, where: Where) -> list[ImagePart]:
    key, refs = _media_refs(record, layout.images, where, "images")
    return [where.image(ref, f"{key}[{j}]") for j, ref in enumerate(refs)]


def _videos(record: dict, layout: ShareGPTLayout, where: Where) -> list[VideoPart]:
    key, refs = _media_refs(record, layout.videos, where, "videos")
    for j, ref in enumerate(refs):
        if isinstance(ref, list):  # LLaMA-Factory: a video given as its frames' image files
            raise where.error("a video given as a list of frame images is not read; give the video file", f"{key}[{j}]")
    return [where.video(ref, f"{key}[{j}]") for j, ref in enumerate(refs)]


def _fill_objects(sample: Sample, objects: Any, where: Where) -> Sample:
    """ms-swift grounding: ``<ref-object>`` takes the next ref, ``<bbox>`` the next box (pixels, image 0)."""
    if not isinstance(objects, dict):
        raise where.error("'objects' must be an object with 'ref' and 'bbox' lists", "objects")
    refs, boxes = list(objects.get("ref") or []), list(objects.get("bbox") or [])
    if objects.get("bbox_type", "real") != "real":
        raise where.error(f"objects.bbox_type {objects['bbox_type']!r}: only 'real' (pixel) boxes are read",
                          "objects.bbox_type")
    messages, taken = [], 0
    for message in sample.messages:
        parts: list[Part] = []
        for part in message.content:
            if not isinstance(part, TextPart):
                parts.append(part)
                continue
            for k, piece in enumerate(part.text.split("<bbox>")):
                if k:
                    if taken >= len(boxes):
                        raise where.error("more <bbox> placeholders than objects.bbox entries", "objects.bbox")
                    parts.append(grounding_part("box", boxes[taken], where, f"objects.bbox[{taken}]"))
                    taken += 1
                while "<ref-object>" in piece:
                    if not refs:
                        raise where.error("more <ref-object> placeholders than objects.ref entries", "objects.ref")
                    piece = piece.replace("<ref-object>", str(refs.pop(0)), 1)
                if piece:
                    parts.append(TextPart(piece))
        messages.append(Message(message.role, tuple(parts)))
    if taken < len(boxes):
        raise where.error(f"{len(boxes) - taken} objects.bbox entries have no <bbox> placeholder", "objects.bbox")
    return Sample(tuple(messages), sample.id, sample.meta)


class ShareGPTReader:
    name = "sharegpt"

    def detect(self, path: Path, first_record: Any) -> bool:
        if not isinstance(first_record, dict):
            return False
        key = _first_key(first_record, ("messages", "conversations"))
        if key is None or not isinstance(first_record[key], list):
            return False
        turns = [t for t in first_record[key] if isinstance(t, dict)]
        strings = all(isinstance(t.get("content", t.get("value")), str) for t in turns)
        text = " ".join(str(t.get("content", t.get("value"))) for t in turns)
        llava = key == "conversations" and "images" not in first_record
        return strings and not llava and "<|vision_start|>" not in text and (
            key == "conversations" or "images" in first_record or "<image>" in text or "objects" in first_record
            or "videos" in first_record or "<video>" in text)

    def read(self, path: Path, options: ReadOptions) -> Iterator[Sample | RecordError]:
        return parse_each(path, options, lambda record, where: parse_sharegpt(record, where, system=options.system))


register_reader(ShareGPTReader())
