import json

import pytest

from vlmtune.evaluate.metrics import Example, get_metric
from vlmtune.evaluate.metrics.json_fields import field_counts, flatten_json, normalize_json, tree_accuracy

RECEIPT = {"menu": [{"nm": "cake", "cnt": "2"}, {"nm": "juice", "cnt": "1"}], "total": "3"}
PARTIAL = {"total": "4", "menu": [{"cnt": "2", "nm": "cake"}]}


def test_flatten_follows_donut():
    # Keys sorted by (length, name); list items share the parent's path.
    assert flatten_json(normalize_json(RECEIPT)) == [
        ("menu.nm", "cake"), ("menu.cnt", "2"), ("menu.nm", "juice"), ("menu.cnt", "1"), ("total", "3")]
    assert normalize_json({"n": 0, "b": False, "z": None, "e": "", "l": [1, None, "x", ""]}) == {
        "b": ["false"], "l": ["1", "x"], "n": ["0"]}


def test_field_f1_hand_worked():
    # PARTIAL hits menu.nm=cake and menu.cnt=2, misses total=3 (says 4): tp 2, fp 1, fn 3 (juice, 1, total=3).
    # F1 = 2 / (2 + (1 + 3) / 2) = 0.5  (= 2PR / (P + R) with P = 2/3, R = 2/5).
    assert field_counts(PARTIAL, RECEIPT) == (2, 1, 3)
    result = get_metric("field_f1").compute([Example(json.dumps(PARTIAL), (json.dumps(RECEIPT),))])
    assert result.value == pytest.approx(0.5) and result.per_sample == pytest.approx([0.5])


def test_field_f1_is_micro_and_invalid_json_misses_everything():
    # Sample 1 perfect (3 fields), sample 2 not JSON (2 fields missed): micro 3 / (3 + 2/2) = 0.75, not 0.5.
    examples = [Example('{"a": "1", "b": "2", "c": "3"}', ('{"c": "3", "b": "2", "a": "1"}',)),
                Example('{"a": "1", "b"', ('{"a": "1", "b": "2"}',))]
    result = get_metric("field_f1").compute(examples)
    assert result.value == pytest.approx(0.75) and result.per_sample == [1.0, 0.0]


def test_field_f1_corner_cases():
    examples = [Example("{}", ("{}",)), Example("", ('{"a": 0}',)), Example('{"a": 0}', ('{"a": 0}',))]
    assert get_metric("field_f1").compute(examples).per_sample == [None, 0.0, 1.0]
    assert get_metric("field_f1").compute([]).value == 0.0
    with pytest.raises(ValueError, match="reference is not JSON"):
        get_metric("field_f1").compute([Example("{}", ("not json",))])


@pytest.mark.parametrize("prediction, expected", [
    # Reference {"a": "xy"}: <root> - a - <leaf>xy; TED(empty, ref) = insert a (1) + insert leaf "xy" (2) = 3.
    ({"a": "xy"}, 1.0),
    ({"a": "xz"}, 2 / 3),               # relabel leaf: Levenshtein("xy", "xz") = 1
    ({"b": "xy"}, 2 / 3),               # relabel key: 1
    ({"a": "xy", "b": "q"}, 1 / 3),     # insert b (1) + leaf "q" (1) = 2
    ({"a": "xy", "b": "qqqq"}, 0.0),    # 1 + 4 = 5 > 3: clipped at 0
    ({}, 0.0),
])
def test_tree_accuracy_hand_worked(prediction, expected):
    assert tree_accuracy(prediction, {"a": "xy"}) == pytest.approx(expected)


def test_tree_accuracy_receipt_and_corner_cases():
    # TED(empty, RECEIPT) = menu 1 + 2 subtrees + 2 nm + 2 cnt + leaves (4 + 1 + 5 + 1) + total 1 + leaf 1 = 20.
    # PARTIAL: drop the juice subtree (1 + 1 + 5 + 1 + 1 = 9) and relabel total 3 -> 4 (1): 1 - 10/20 = 0.5.
    assert tree_accuracy(PARTIAL, RECEIPT) == pytest.approx(0.5)
    assert tree_accuracy({"x": ["2", "1"]}, {"x": ["1", "2"]}) == pytest.approx(1 / 3)  # list order counts: 2 / 3
    assert tree_accuracy({}, {}) == 1.0 and tree_accuracy({"a": "1"}, {}) == 0.0
    result = get_metric("tree_accuracy").compute([Example("oops", ('{"a": "xy"}',)),
                                                  Example('{"a": "xz"}', ('{"a": "xy"}',))])
    assert result.per_sample == pytest.approx([0.0, 2 / 3]) and result.value == pytest.approx(1 / 3)


@pytest.mark.parametrize("fence", ["```json\n{}\n```", "```\n{}\n```", "Here it is:\n```json\n{}\n```\nDone.",
                                   "```json\n{}"])  # the last: generation stopped before the closing fence
def test_json_metrics_read_json_inside_a_markdown_fence(fence):
    # As Qwen-VL models answer: the fenced PARTIAL scores as PARTIAL itself (field F1 0.5, tree accuracy 0.5).
    prediction = fence.replace("{}", json.dumps(PARTIAL, indent=2))
    example = Example(prediction, (json.dumps(RECEIPT),))
    assert get_metric("field_f1").compute([example]).per_sample == pytest.approx([0.5])
    assert get_metric("tree_accuracy").compute([example]).per_sample == pytest.approx([0.5])


def test_exact_match_of_a_fenced_json_answer():
    reference = '{"total": "3"}'
    assert get_metric("exact_match").compute([
        Example('```json\n{"total": "3"}\n```', (reference,)),   # the fence alone differs: a match
        Example('```\n{"total": "3"}\n```', (reference,)),
        Example('```json\n{"total": "4"}\n```', (reference,)),   # fenced, but a different answer
        Example('I think ```json\n{"total": "3"}\n```', (reference,)),  # text outside the fence counts
    ]).per_sample == [1.0, 1.0, 0.0, 0.0]
