"""Evaluation: generate on held-out data, score base and tuned with the task's metrics, write the report."""

from .generate import generate
from .metrics.text import exact_match, normalize_answer
from .run import Comparison, compare

__all__ = ["Comparison", "compare", "exact_match", "generate", "normalize_answer"]
