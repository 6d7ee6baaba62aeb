"""Preference data: a prompt answered once as preferred (``chosen``) and once as dispreferred (``rejected``), read
into :class:`~vlmtune.core.sample.PreferenceSample` for ``train.stage: dpo``.

- ``preference``: TRL's ``prompt`` / ``chosen`` / ``rejected`` (+ ``images``), each a plain string or, in the
  conversational form, a list of messages::

    {"prompt": "<image>What colour is the shape?", "chosen": "red", "rejected": "blue", "images": ["a.png"]}
    {"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]}],
     "chosen": [{"role": "assistant", "content": "red"}], "rejected": [{"role": "assistant", "content": "blue"}],
     "images": ["a.png"]}

  An image part without its own path takes the next of ``images``; a string prompt without ``<image>`` gets its
  images before its text, as TRL puts them.
- ``sharegpt_preference``: LLaMA-Factory's ranking data (``ranking: true`` in ``dataset_info.json``): the prompt
  turns in ``conversations`` and the two answers as message objects::

    {"conversations": [{"from": "human", "value": "<image>What colour?"}],
     "chosen": {"from": "gpt", "value": "red"}, "rejected": {"from": "gpt", "value": "blue"}, "images": ["a.png"]}
- ``rlhf_v``: RLHF-V's records, one image and ``text`` holding ``question`` / ``chosen`` / ``rejected`` (a JSON
  string or an object)::

    {"image": "a.png", "text": {"question": "What colour?", "chosen": "red", "rejected": "blue"}}
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...core.errors import RecordError
from ...core.sample import ROLES, ImagePart, Message, Part, PreferenceSample, Sample, TextPart
from . import register_reader
from .common import IMAGE_PLACEHOLDER, ReadOptions, Where, parse_each, split_placeholders

if TYPE_CHECKING:
    from .sharegpt import ShareGPTLayout

SIDES = ("chosen", "rejected")


def preference_sample(prompt: list[Message], chosen: Message, rejected: Message, where: Where, meta: dict,
                      system: str | None = None) -> PreferenceSample:
    """The pair, after the checks every preference reader applies: a prompt with a user turn that the answers
    follow, and two different non-empty answers."""
    if not any(m.role == "user" for m in prompt):
        raise where.error("the prompt has no user turn", "prompt")
    if prompt[-1].role == "assistant":
        raise where.error("the prompt ends with an assistant turn; the chosen and rejected answers follow the "
                          "prompt's last user turn", "prompt")
    for side, message in zip(SIDES, (chosen, rejected), strict=True):
        if not message.has_answer:
            raise where.error(f"empty {side} answer", side)
    if chosen.content == rejected.content:
        raise where.error("chosen and rejected are the same answer: the pair prefers nothing", "rejected")
    if system and not any(m.role == "system" for m in prompt):
        prompt = [Message("system", (TextPart(system),)), *prompt]
    return PreferenceSample(tuple(prompt) + (chosen,), where.id, meta, rejected=rejected)


def _require_sides(record: Any, where: Where, keys: tuple[str, ...] = SIDES) -> None:
    if not isinstance(record, dict):
        raise where.error(f"expected a JSON object, got {type(record).__name__}")
    for side, key in zip(SIDES, keys, strict=True):
        if record.get(key) in (None, "", [], {}):
            raise where.error(f"no {side} answer: a preference record needs both chosen and rejected", key)


# --- TRL: prompt / chosen / rejected ---------------------------------------------------------------------------

def parse_trl(record: Any, where: Where, system: str | None = None) -> PreferenceSample:
    """One TRL preference record (plain or conversational) -> PreferenceSample."""
    _require_sides(record, where)
    if "prompt" not in record:
        raise where.error("no prompt: give the prompt separately from chosen and rejected", "prompt")
    images = _record_images(record, where)
    used = [0]
    raw = record["prompt"]
    if isinstance(raw, str):
        prompt = [Message("user", tuple(_string_prompt(raw, images, used, where)))]
    elif isinstance(raw, list):
        prompt = [_message(m, where, f"prompt[{i}]", images, used) for i, m in enumerate(raw)]
    else:
        raise where.error("prompt must be a string or a list of messages", "prompt")
    if used[0] != len(images):
        raise where.error(f"{len(images)} images but {used[0]} image placeholders in the prompt; each image needs "
                          "exactly one", "images")
    chosen, rejected = (_answer(record[side], where, side) for side in SIDES)
    meta = {k: v for k, v in record.items() if k not in ("prompt", *SIDES, "images", "image")}
    return preference_sample(prompt, chosen, rejected, where, meta, system)


def _record_images(record: dict, where: Where) -> list[ImagePart]:
    key = "images" if "images" in record else "image" if "image" in record else None
    refs = record.get(key) if key else None
    if refs is None:
        return []
    refs = [refs] if isinstance(refs, str) else refs
    if not isinstance(refs, list):
        raise where.error("images must be a list of file paths", key)
    return [where.image(ref, f"{key}[{j}]") for j, ref in enumerate(refs)]


def _string_prompt(text: str, images: list[ImagePart], used: list[int], where: Where) -> list[Part]:
    if IMAGE_PLACEHOLDER in text or not images:
        return split_placeholders(text, images, used, where, "prompt")
    used[0] = len(images)
    return [*images, TextPart(text)]


def _message(raw: Any, where: Where, field: str, images: list[ImagePart], used: list[int]) -> Message:
    if not isinstance(raw, dict) or raw.get("role") not in ROLES:
        raise where.error(f"a message must be an object with a role ({', '.join(ROLES)}) and content", field)
    content = raw.get("content")
    if isinstance(content, str):
        if raw["role"] != "assistant" and IMAGE_PLACEHOLDER in content:
            return Message(raw["role"], tuple(split_placeholders(content, images, used, where, f"{field}.content")))
        return Message(raw["role"], (TextPart(content),))
    if not isinstance(content, list):
        raise where.error("content must be a string or a list of parts", f"{field}.content")
    parts: list[Part] = []
    for j, part in enumerate(content):
        at = f"{field}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(TextPart(part["text"]))
        elif kind == "image" and raw["role"] != "assistant":
            ref = part.get("image", part.get("path"))
            if ref is not None:
                parts.append(where.image(ref, at))
            elif used[0] >= len(images):
                raise where.error(f"more image parts than images ({len(images)} given)", at)
            else:
                parts.append(images[used[0]])
                used[0] += 1
        else:
            raise where.error(f"unknown part {json.dumps(part)[:80]}; expected a text or (in a prompt) image part", at)
    return Message(raw["role"], tuple(parts))


def _answer(raw: Any, where: Where, side: str) -> Message:
    """``chosen`` / ``rejected``: a string, one assistant message, or a list holding one."""
    if isinstance(raw, str):
        return Message("assistant", (TextPart(raw),))
    if isinstance(raw, list) and len(raw) == 1:
        raw = raw[0]
    if isinstance(raw, dict) and raw.get("role") == "assistant":
        return _message(raw, where, side, [], [0])
    raise where.error(f"{side} must be a string or one assistant message", side)


class PreferenceReader:
    name = "preference"

    def detect(self, path: Path, first_record: Any) -> bool:
        return isinstance(first_record, dict) and "prompt" in first_record and any(
            side in first_record for side in SIDES)

    def read(self, path: Path, options: ReadOptions) -> Iterator[Sample | RecordError]:
        return parse_each(path, options, lambda record, where: parse_trl(record, where, options.system))


# --- LLaMA-Factory / ShareGPT ranking ----------------------------------------------------------------------------

def parse_sharegpt_preference(record: Any, where: Where, layout: ShareGPTLayout | None = None,
                              system: str | None = None, sides: tuple[str, str] = SIDES) -> PreferenceSample:
    """One ShareGPT ranking record (prompt turns + ``chosen`` / ``rejected`` message objects) -> PreferenceSample.

    ``sides``: the record's keys of the chosen and rejected answers (LLaMA-Factory's ``columns``)."""
    # Imported here: importing the ShareGPT reader registers it, and this module's readers must come first.
    from .sharegpt import ShareGPTLayout, parse_sharegpt

    layout = layout or ShareGPTLayout()
    _require_sides(record, where, sides)
    key = next((k for k in layout.messages if k in record), layout.messages[0])
    if not isinstance(record.get(key), list):
        raise where.error(f"expected a {key!r} list of prompt turns", key)
    answers = []
    for side, side_key in zip(SIDES, sides, strict=True):
        answer = record[side_key]
        if not isinstance(answer, dict):
            raise where.error(f"{side} must be a message object (e.g. {{\"from\": \"gpt\", \"value\": ...}})",
                              side_key)
        # The pair's prompt plus one answer is an ordinary ShareGPT conversation: the one reader checks it.
        conversation = {k: v for k, v in record.items() if k not in sides}
        conversation[key] = [*record[key], answer]
        sample = parse_sharegpt(conversation, where, layout)
        if sample.messages[-1].role != "assistant":
            raise where.error(f"the {side} answer's role is not the assistant's", side_key)
        answers.append(sample)
    chosen, rejected = answers
    meta = {k: v for k, v in chosen.meta.items() if k not in sides}
    return preference_sample(list(chosen.messages[:-1]), chosen.messages[-1], rejected.messages[-1], where, meta,
                             system)


class ShareGPTPreferenceReader:
    name = "sharegpt_preference"

    def detect(self, path: Path, first_record: Any) -> bool:
        return isinstance(first_record, dict) and any(
            isinstance(first_record.get(k), list) for k in ("conversations", "messages")) and any(
            isinstance(first_record.get(side), dict) for side in SIDES)

    def read(self, path: Path, options: ReadOptions) -> Iterator[Sample | RecordError]:
        return parse_each(path, options,
                          lambda record, where: parse_sharegpt_preference(record, where, system=options.system))


# --- RLHF-V ------------------------------------------------------------------------------------------------------

def parse_rlhf_v(record: Any, where: Where, system: str | None = None) -> PreferenceSample:
    """One RLHF-V record (``image`` and ``text`` with question, chosen, rejected) -> PreferenceSample."""
    if not isinstance(record, dict):
        raise where.error(f"expected a JSON object, got {type(record).__name__}")
    text = record.get("text")
    if isinstance(text, str):
        try:
            text = json.loads(text)
        except json.JSONDecodeError as e:
            raise where.error(f"text is not JSON with question, chosen and rejected: {e.msg}", "text") from None
    if not isinstance(text, dict):
        raise where.error("text must hold an object with question, chosen and rejected", "text")
    for side in SIDES:
        if not isinstance(text.get(side), str) or not text[side].strip():
            raise where.error(f"no {side} answer: a preference record needs both chosen and rejected",
                              f"text.{side}")
    question = text.get("question")
    if not isinstance(question, str) or not question.strip():
        raise where.error("no question", "text.question")
    if not record.get("image"):
        raise where.error("no image", "image")
    image = where.image(record["image"], "image")
    parts = split_placeholders(question, [image], [0], where, "text.question") if IMAGE_PLACEHOLDER in question \
        else [image, TextPart(question)]
    chosen, rejected = (Message("assistant", (TextPart(text[side]),)) for side in SIDES)
    meta = {k: v for k, v in record.items() if k not in ("image", "text")}
    return preference_sample([Message("user", tuple(parts))], chosen, rejected, where, meta, system)


class RlhfVReader:
    name = "rlhf_v"

    def detect(self, path: Path, first_record: Any) -> bool:
        if not isinstance(first_record, dict) or "image" not in first_record:
            return False
        text = first_record.get("text")
        return isinstance(text, dict) or isinstance(text, str) and text.lstrip().startswith("{") and \
            '"chosen"' in text

    def read(self, path: Path, options: ReadOptions) -> Iterator[Sample | RecordError]:
        return parse_each(path, options, lambda record, where: parse_rlhf_v(record, where, options.system))


register_reader(PreferenceReader())
register_reader(ShareGPTPreferenceReader())
register_reader(RlhfVReader())
