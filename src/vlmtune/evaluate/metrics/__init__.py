"""Task metrics. Each is a pure function of a list of :class:`Example` objects, registered by name.

A metric returns the corpus score and, where the metric defines one, each sample's score (for the report's
biggest wins and losses). ``vlmtune.core.names.TASK_METRICS`` gives each task type its default metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ...core.names import METRIC_NAMES, require_name
from ...core.sample import BoxPart, PointPart


@dataclass(frozen=True)
class Example:
    """One scored sample: what the model answered and what it should have answered."""

    prediction: str
    references: tuple[str, ...]
    """The reference answer first, then any alternatives (e.g. other annotators' answers in VQA)."""
    pred_grounding: tuple[BoxPart | PointPart, ...] = ()
    """Boxes and points parsed from the prediction, in pixels of the original image."""
    ref_grounding: tuple[BoxPart | PointPart, ...] = ()
    """The reference answer's boxes and points, in pixels of the original image."""

    @property
    def reference(self) -> str:
        return self.references[0]


@dataclass(frozen=True)
class MetricResult:
    value: float
    """Corpus score (a mean of per-sample scores unless the metric is corpus-level, like BLEU or CIDEr)."""
    per_sample: list[float | None] = field(default_factory=list)
    """Each sample's score; None where the metric does not apply to the sample."""


@dataclass(frozen=True)
class Metric:
    name: str
    compute: Callable[[Sequence[Example]], MetricResult]
    higher_is_better: bool = True
    needs_grounding: bool = False
    """Scores boxes/points: the evaluator parses predictions with the family's grounding convention."""
    reference_problem: Callable[[str], str | None] | None = None
    """Why a reference answer cannot be scored (None where it can): checked on every held-out sample before any
    answer is generated, so a bad record stops evaluation at once, named, instead of after generating."""


_METRICS: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    require_name(metric.name, METRIC_NAMES, "metric")
    _METRICS[metric.name] = metric
    return metric


def metric_names() -> list[str]:
    return sorted(_METRICS)


def get_metric(name: str) -> Metric:
    try:
        return _METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(metric_names())}") from None


def mean_of(scores: Sequence[float | None]) -> float:
    """Mean over the samples a metric applies to (0.0 when none)."""
    values = [s for s in scores if s is not None]
    return sum(values) / len(values) if values else 0.0


from . import caption, grounding, json_fields, text  # noqa: E402,F401  (register the metrics)

__all__ = ["Example", "Metric", "MetricResult", "get_metric", "mean_of", "metric_names", "register_metric"]
