"""Answer metrics: pure functions of (prediction, reference)."""

from __future__ import annotations

import re
import string

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse whitespace (SQuAD-style normalisation)."""
    text = _PUNCT.sub(" ", text.lower())
    return " ".join(w for w in text.split() if w not in ("a", "an", "the"))


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised prediction equals the normalised reference, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))
