"""Evaluation: generate on held-out data, score base and tuned with the task's metrics, write the report."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .generate import generate
from .metrics.text import exact_match, normalize_answer

if TYPE_CHECKING:
    from .run import Comparison, compare

# The comparison imports torch: loaded on first use, so the metric registry (which the config schema reads) stays
# light. (``generate`` imports torch when called; its module shares its name, so it cannot be loaded lazily here.)
_LAZY = {"Comparison": ".run", "compare": ".run"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Comparison", "compare", "exact_match", "generate", "normalize_answer"]
