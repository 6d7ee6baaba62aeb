"""Markdown code fences around answers: Qwen-VL models often answer JSON as ```json ... ``` (or a plain ```)."""

from __future__ import annotations

import re

FENCE = "```"
# An optional language tag: a word right after the backticks, then whitespace.
_TAG = re.compile(r"[A-Za-z][\w+-]*(?=\s)")


def _body_start(text: str, after: int) -> int:
    """Where a fence's content starts: past the language tag and the whitespace after the backticks."""
    tag = _TAG.match(text, after)
    i = tag.end() if tag else after
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def fenced(text: str) -> str | None:
    """The content of the first code fence in ``text`` (to the closing backticks, or to the end of the text:
    generation cut off by max_new_tokens leaves the fence open), stripped; None where it has none."""
    # str.find, not a lazy regex: on long degenerate output a ``.*?`` that retries at every position is quadratic.
    opening = text.find(FENCE)
    if opening == -1:
        return None
    start = _body_start(text, opening + len(FENCE))
    closing = text.find(FENCE, start)
    return text[start:closing if closing != -1 else len(text)].strip()


def unfence(text: str) -> str:
    """``text`` without a code fence that wraps all of it (only whitespace outside); otherwise ``text`` unchanged."""
    stripped = text.strip()
    if not stripped.startswith(FENCE):
        return text
    start = _body_start(stripped, len(FENCE))
    end = len(stripped) - len(FENCE) if stripped.endswith(FENCE) and len(stripped) - len(FENCE) >= start \
        else len(stripped)
    return stripped[start:end].strip()
