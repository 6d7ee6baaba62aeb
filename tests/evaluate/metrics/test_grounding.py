import pytest

from vlmtune.core.sample import BoxPart, PointPart
from vlmtune.evaluate.metrics import Example, get_metric
from vlmtune.evaluate.metrics.grounding import box_iou, click_hit, sample_iou

A = BoxPart((0, 0, 10, 10))
B = BoxPart((20, 0, 30, 10))


def ex(pred=(), ref=()) -> Example:
    return Example("", ("",), tuple(pred), tuple(ref))


def test_box_iou():
    assert box_iou(A, BoxPart((5, 0, 15, 10))) == pytest.approx(1 / 3)  # inter 50, union 100 + 100 - 50
    assert box_iou(A, BoxPart((0, 0, 10, 5))) == 0.5                    # inter 50, union 100
    assert box_iou(A, A) == 1.0 and box_iou(A, B) == 0.0
    assert box_iou(A, BoxPart((0, 0, 10, 10), image=1)) == 0.0         # another image
    assert box_iou(A, BoxPart((10, 10, 0, 0))) == 0.0                   # reversed corners: no area


def test_iou_and_accuracy_single_boxes():
    examples = [ex([BoxPart((5, 0, 15, 10))], [A]),  # 1/3
                ex([BoxPart((0, 0, 10, 5))], [A]),   # 0.5
                ex([], [A]),                         # no box predicted: 0
                ex([A], [PointPart((1, 1))])]        # no reference box: not scored
    iou = get_metric("iou").compute(examples)
    assert iou.per_sample == pytest.approx([1 / 3, 0.5, 0.0, None]) and iou.value == pytest.approx((1 / 3 + 0.5) / 3)
    acc = get_metric("accuracy_at_iou_0.5").compute(examples)
    assert acc.per_sample == [0.0, 1.0, 0.0, None] and acc.value == pytest.approx(1 / 3)


def test_several_boxes_greedy_one_to_one():
    # B matches B (1.0), then the half box matches A (0.5): (1.0 + 0.5) / 2 boxes.
    assert sample_iou(ex([B, BoxPart((0, 0, 10, 5))], [A, B])) == pytest.approx(0.75)
    assert sample_iou(ex([B, BoxPart((0, 0, 10, 5))], [A, B]), threshold=0.5) == 1.0
    assert sample_iou(ex([A, B], [A])) == 0.5                  # an extra box halves the score
    assert sample_iou(ex([A], [A, B])) == 0.5                  # so does a missed one
    assert sample_iou(ex([A, A], [A, B]), threshold=0.5) == 0.5  # one prediction cannot match twice


def test_click_accuracy():
    assert click_hit(ex([PointPart((5, 5))], [A])) == 1.0
    assert click_hit(ex([PointPart((10, 10))], [A])) == 1.0            # border counts
    assert click_hit(ex([BoxPart((8, 8, 14, 14))], [A])) == 0.0        # centre (11, 11) is outside
    assert click_hit(ex([BoxPart((18, 2, 30, 8))], [A, B])) == 1.0     # centre (24, 5) inside B
    assert click_hit(ex([PointPart((5, 5), image=1)], [A])) == 0.0     # another image
    assert click_hit(ex([], [A])) == 0.0 and click_hit(ex([PointPart((5, 5))], [])) is None
    result = get_metric("click_accuracy").compute([ex([PointPart((5, 5))], [A]), ex([], [A]), ex([], [])])
    assert result.per_sample == [1.0, 0.0, None] and result.value == 0.5
    assert get_metric("click_accuracy").needs_grounding
