"""JSON from model output, read within bounds: a degenerate generation ("[" a thousand times, braces nested
thousands deep) is "not JSON", never a RecursionError, and scanning it stays linear in its length.

The nesting depth is measured by one pass over the text (outside strings) before :mod:`json` sees it, so the
decoder, and every recursive walk of what it returns, goes at most :data:`MAX_DEPTH` levels deep.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects read; real answers (boxes, extracted fields) nest a few levels."""

_OPEN, _CLOSE = "[{", "]}"


class NotJson(ValueError):
    """The text is not one JSON value within :data:`MAX_DEPTH` levels."""


def _brackets(text: str, start: int = 0) -> Iterator[tuple[int, bool]]:
    """``(index, opens)`` of each bracket of ``text`` from ``start`` that stands outside a string."""
    in_string = escaped = False
    for i in range(start, len(text)):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False  # the escaped character cannot end the string
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in _OPEN or c in _CLOSE:
            yield i, c in _OPEN


def value_end(text: str, start: int, max_depth: int = MAX_DEPTH) -> int | None:
    """Index just past the array or object that opens at ``text[start]``, found by bracket counting outside
    strings; None where it is not closed, or nests deeper than ``max_depth``. It does not check the JSON inside."""
    depth = 0
    for i, opens in _brackets(text, start):
        depth += 1 if opens else -1
        if depth > max_depth:
            return None
        if depth <= 0:
            return i + 1
    return None


def nesting_depth(text: str) -> int:
    """The deepest bracket nesting of ``text`` outside strings (unbalanced brackets count as they open)."""
    depth = deepest = 0
    for _, opens in _brackets(text):
        depth = depth + 1 if opens else max(0, depth - 1)
        deepest = max(deepest, depth)
    return deepest


def loads(text: str, max_depth: int = MAX_DEPTH) -> Any:
    """:func:`json.loads` of ``text``; :class:`NotJson` where it is not JSON or nests deeper than ``max_depth``."""
    if nesting_depth(text) > max_depth:
        raise NotJson(f"nested more than {max_depth} levels deep")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise NotJson(str(e)) from None


def decode_at(decoder: json.JSONDecoder, text: str, start: int, max_depth: int = MAX_DEPTH) -> tuple[Any, int]:
    """``decoder.raw_decode(text, start)`` for the array or object opening at ``start``, read only when it closes
    within ``max_depth`` levels; :class:`NotJson` otherwise. Returns the value and the index after it."""
    end = value_end(text, start, max_depth)
    if end is None:
        raise NotJson("not a closed array or object within the nesting limit")
    try:
        value, stop = decoder.raw_decode(text[start:end])
    except (json.JSONDecodeError, RecursionError) as e:
        raise NotJson(str(e)) from None
    return value, start + stop
