"""Answer metrics: pure functions of a prediction and its reference answers."""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence

from . import Example, Metric, MetricResult, mean_of, register_metric
from ._optional import require
from .fence import unfence

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse whitespace (SQuAD-style normalisation)."""
    text = _PUNCT.sub(" ", text.lower())
    return " ".join(w for w in text.split() if w not in ("a", "an", "the"))


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised prediction equals the normalised reference, else 0.0. An answer wholly inside a
    markdown code fence (```json ... ```) is compared by what the fence holds."""
    return float(normalize_answer(unfence(prediction)) == normalize_answer(unfence(reference)))


def _exact_match(examples: Sequence[Example]) -> MetricResult:
    # An answer with boxes or points is scored by the grounding metrics (IoU, click accuracy), not by its
    # coordinates' text: a mixed set (GUI actions with boxes beside text answers) gets both kinds of score.
    scores: list[float | None] = [None if e.ref_grounding else max(exact_match(e.prediction, r) for r in e.references)
                                  for e in examples]
    return MetricResult(mean_of(scores), scores)


register_metric(Metric("exact_match", _exact_match))


# The official VQA script maps number words to digits (its ``manualMap``) before comparing answers.
_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                 "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}


def _vqa_normalize(text: str) -> str:
    return " ".join(_NUMBER_WORDS.get(w, w) for w in normalize_answer(text).split())


def vqa_accuracy(prediction: str, references: Sequence[str]) -> float:
    """VQA accuracy (Antol et al. 2015; VQA v2 ``vqaEval.py``): ``min(#annotators who gave the answer / 3, 1)``.

    With 4 or more references this is the official leave-one-out form: the mean over the ``n`` subsets of
    ``n - 1`` references of ``min(#matches in the subset / 3, 1)`` (for VQA v2's 10 answers: 1, 2, 3 matches give
    0.3, 0.6, 0.9). Three or fewer references cannot reach three votes, so the score is the share of
    references matched; with one reference it is exact match. Answers are compared after
    :func:`normalize_answer` plus the script's number-word-to-digit map; unlike the script, contractions are not
    expanded and punctuation inside numbers ("1,000") becomes a space on both sides.
    """
    pred = _vqa_normalize(prediction)
    matches = [_vqa_normalize(r) == pred for r in references]
    n, total = len(matches), sum(matches)
    if n <= 3:
        return total / n
    return sum(min(1.0, (total - m) / 3) for m in matches) / n


def _to_float(text: str) -> float | None:
    # pix2struct: a trailing "%" means a percentage, so "96%" and "0.96" are the same number.
    try:
        if text.endswith("%"):
            return float(text.rstrip("%")) / 100.0
        return float(text)
    except ValueError:
        return None


def relaxed_correctness(prediction: str, reference: str, max_relative_change: float = 0.05) -> float:
    """ChartQA relaxed accuracy (Masry et al. 2022, §5.1), as pix2struct's ``relaxed_correctness``.

    When the prediction parses as a number and the reference as a non-zero number (``"x%"`` reads as ``x / 100``),
    correct iff ``|pred - ref| / |ref| <= 0.05``; otherwise a case-insensitive string match. The one deviation:
    outer whitespace is stripped first, so a trailing newline from generation does not fail a string answer.
    """
    prediction, reference = prediction.strip(), reference.strip()
    pred_float, ref_float = _to_float(prediction), _to_float(reference)
    if pred_float is not None and ref_float:
        return float(abs(pred_float - ref_float) / abs(ref_float) <= max_relative_change)
    return float(prediction.lower() == reference.lower())


def anls(prediction: str, reference: str, threshold: float = 0.5) -> float:
    """ANLS for one answer (Biten et al. 2019, ST-VQA; DocVQA), as pix2struct's ``anls_metric``.

    ``nl = levenshtein(pred, ref) / max(len(pred), len(ref))`` on lower-cased, outer-stripped strings;
    the score is ``1 - nl`` when ``nl < threshold`` (0.5), else 0. Two empty strings score 1.
    """
    levenshtein = require("rapidfuzz.distance.Levenshtein", "rapidfuzz")
    prediction, reference = prediction.strip().lower(), reference.strip().lower()
    longest = max(len(prediction), len(reference))
    if longest == 0:
        return 1.0
    normalized = levenshtein.distance(prediction, reference) / longest
    return 1.0 - normalized if normalized < threshold else 0.0


def _max_over_references(score: Callable[[str, str], float]) -> Callable[[Sequence[Example]], MetricResult]:
    def compute(examples: Sequence[Example]) -> MetricResult:
        scores: list[float | None] = [max(score(e.prediction, r) for r in e.references) for e in examples]
        return MetricResult(mean_of(scores), scores)

    return compute


def _vqa_accuracy(examples: Sequence[Example]) -> MetricResult:
    scores: list[float | None] = [vqa_accuracy(e.prediction, e.references) for e in examples]
    return MetricResult(mean_of(scores), scores)


register_metric(Metric("vqa_accuracy", _vqa_accuracy))
register_metric(Metric("relaxed_accuracy", _max_over_references(relaxed_correctness)))
register_metric(Metric("anls", _max_over_references(anls)))
