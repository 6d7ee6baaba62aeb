"""Grounding metrics: boxes and points in pixels of the original image.

Matching rule for several boxes: predicted and reference boxes (on the same image) are paired greedily one-to-one,
highest IoU first; a sample's IoU is the sum of the matched pairs' IoUs over ``max(#predicted, #reference)``, so
missing and extra boxes both count against it. With one box on each side this is the plain IoU. A sample whose
reference has no box is not scored (None); a sample with a reference box but no predicted box scores 0.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...core.sample import BoxPart, PointPart
from . import Example, Metric, MetricResult, mean_of, register_metric


def box_iou(a: BoxPart, b: BoxPart) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes; 0 across images.

    A box with ``x2 < x1`` or ``y2 < y1`` has no area (a malformed prediction is not repaired).
    """
    if a.image != b.image:
        return 0.0
    (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = a.box, b.box
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = max(0.0, ax2 - ax1) * max(0.0, ay2 - ay1) + max(0.0, bx2 - bx1) * max(0.0, by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def matched_ious(predicted: Sequence[BoxPart], reference: Sequence[BoxPart]) -> list[float]:
    """IoUs of the greedy one-to-one matching (highest IoU first); unmatched boxes are left out."""
    pairs = sorted(((box_iou(p, r), i, j) for i, p in enumerate(predicted) for j, r in enumerate(reference)),
                   reverse=True)
    used_p: set[int] = set()
    used_r: set[int] = set()
    ious = []
    for iou, i, j in pairs:
        if i not in used_p and j not in used_r:
            used_p.add(i)
            used_r.add(j)
            ious.append(iou)
    return ious


def _boxes(parts: Sequence[BoxPart | PointPart]) -> list[BoxPart]:
    return [p for p in parts if isinstance(p, BoxPart)]


def sample_iou(example: Example, threshold: float | None = None) -> float | None:
    """The sample's IoU under the matching rule above; with ``threshold``, the share of boxes matched at
    IoU >= threshold instead (Acc@0.5 on RefCOCO-style single boxes: 1 when IoU >= 0.5, else 0)."""
    reference, predicted = _boxes(example.ref_grounding), _boxes(example.pred_grounding)
    if not reference:
        return None
    ious = matched_ious(predicted, reference)
    if threshold is not None:
        ious = [float(iou >= threshold) for iou in ious]
    return sum(ious) / max(len(predicted), len(reference))


def click_hit(example: Example) -> float | None:
    """Click accuracy (as in ScreenSpot-style GUI grounding): 1 when the click lies inside a reference box.

    The click is the first predicted point, or the centre of the first predicted box, whichever comes first; it
    counts when inside (borders included) any reference box on the same image. None without a reference box,
    0 without a predicted point or box.
    """
    reference = _boxes(example.ref_grounding)
    if not reference:
        return None
    if not example.pred_grounding:
        return 0.0
    first = example.pred_grounding[0]
    if isinstance(first, PointPart):
        x, y = first.point
    else:
        x, y = (first.box[0] + first.box[2]) / 2, (first.box[1] + first.box[3]) / 2
    return float(any(r.image == first.image and r.box[0] <= x <= r.box[2] and r.box[1] <= y <= r.box[3]
                     for r in reference))


def _iou(examples: Sequence[Example]) -> MetricResult:
    scores = [sample_iou(e) for e in examples]
    return MetricResult(mean_of(scores), scores)


def _accuracy_at_iou_05(examples: Sequence[Example]) -> MetricResult:
    scores = [sample_iou(e, threshold=0.5) for e in examples]
    return MetricResult(mean_of(scores), scores)


def _click_accuracy(examples: Sequence[Example]) -> MetricResult:
    scores = [click_hit(e) for e in examples]
    return MetricResult(mean_of(scores), scores)


register_metric(Metric("iou", _iou, needs_grounding=True))
register_metric(Metric("accuracy_at_iou_0.5", _accuracy_at_iou_05, needs_grounding=True))
register_metric(Metric("click_accuracy", _click_accuracy, needs_grounding=True))
