"""Markdown code fences around answers: Qwen-VL models often answer JSON as ```json ... ``` (or a plain ```)."""

from __future__ import annotations

import re

# An optional language tag (a word right after the backticks, then whitespace), the content, and the closing
# backticks, or the end of the text: generation cut off by max_new_tokens leaves the fence open.
_FENCE = re.compile(r"```(?:[A-Za-z][\w+-]*(?=\s))?\s*(.*?)\s*(?:```|\Z)", re.S)


def fenced(text: str) -> str | None:
    """The content of the first code fence in ``text``; None where it has none."""
    match = _FENCE.search(text)
    return match.group(1) if match else None


def unfence(text: str) -> str:
    """``text`` without a code fence that wraps all of it (only whitespace outside); otherwise ``text`` unchanged."""
    match = _FENCE.fullmatch(text.strip())
    return match.group(1) if match else text
