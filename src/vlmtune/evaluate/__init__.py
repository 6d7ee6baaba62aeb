"""Evaluation: generate on held-out data and score it."""

from .generate import generate
from .metrics import exact_match, normalize_answer
from .run import EvalResult, evaluate

__all__ = ["EvalResult", "evaluate", "exact_match", "generate", "normalize_answer"]
