"""JSON extraction metrics: Donut's field-level F1 and normalised tree-edit-distance accuracy.

Both follow ``JSONParseEvaluator`` in clovaai/donut ``donut/util.py`` (MIT; Kim et al. 2022, "OCR-free Document
Understanding Transformer"). The prediction and the first reference are parsed with :func:`json.loads`; a
prediction that is not valid JSON is scored as an empty object (all reference fields missed); JSON in a markdown
code fence (```json ... ```, as Qwen-VL models answer) is read from inside the fence. JSON nested deeper than
:data:`vlmtune.bounded_json.MAX_DEPTH` levels (a degenerate generation) counts as not JSON.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ...bounded_json import NotJson, loads
from . import Example, Metric, MetricResult, mean_of, register_metric
from ._optional import require
from .fence import fenced

Json = dict[str, Any] | list[Any]


def _scalar(value: Any) -> str | None:
    # Deviation from Donut (whose values are all strings): numbers and booleans are scored as their JSON text
    # instead of being dropped when falsy (0, false) or when inside a list (booleans); null means absent.
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value)
    return text.strip() or None


def normalize_json(data: Any) -> Json:
    """Donut's ``normalize_dict``: keys sorted by (length, name), empty values dropped, scalars wrapped in lists.

    List order is kept, as in Donut.
    """
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key in sorted(data, key=lambda k: (len(k), k)):
            value = normalize_json(data[key])
            if value:
                out[key] = value if isinstance(value, list) else [value]
        return out
    if isinstance(data, list):
        if all(isinstance(item, dict) for item in data):
            return [item for item in (normalize_json(d) for d in data) if item]
        return [text for text in (_scalar(item) for item in data if not isinstance(item, dict | list)) if text]
    text = _scalar(data)
    return [text] if text else {}


def flatten_json(data: Any, key: str = "") -> list[tuple[str, str]]:
    """Donut's ``flatten``: the (dotted path, value) leaves; list items share their parent's path."""
    if isinstance(data, dict):
        return [leaf for k, v in data.items() for leaf in flatten_json(v, f"{key}.{k}" if key else k)]
    if isinstance(data, list):
        return [leaf for item in data for leaf in flatten_json(item, key)]
    return [(key, data)]


def _parse(text: str) -> Any:
    for candidate in (text, fenced(text)):
        if candidate is None:
            continue
        try:
            return loads(candidate)
        except NotJson:
            pass
    return {}


def reference_problem(reference: str) -> str | None:
    """Why ``reference`` cannot be scored by the extraction metrics (it is not JSON); None where it can."""
    try:
        loads(reference)
    except NotJson as e:
        return f"the reference answer is not JSON ({e}), and the extraction metrics score JSON answers"
    return None


def _reference(example: Example) -> Any:
    try:
        return loads(example.reference)
    except NotJson as err:
        raise ValueError(f"reference is not JSON (extraction metrics score JSON answers): {example.reference!r}") \
            from err


def field_counts(prediction: Any, reference: Any) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) over the flattened fields, each leaf matched once."""
    pred, ref = Counter(flatten_json(normalize_json(prediction))), Counter(flatten_json(normalize_json(reference)))
    # A Counter, not list.remove: a degenerate prediction with thousands of leaves stays linear.
    tp = sum((pred & ref).values())
    return tp, pred.total() - tp, ref.total() - tp


def _f1(tp: int, fp: int, fn: int) -> float | None:
    # Donut's cal_f1 writes F1 as tp / (tp + (fn + fp) / 2); no field on either side leaves nothing to score.
    return tp / (tp + (fp + fn) / 2) if tp + fp + fn else None


def _field_f1(examples: Sequence[Example]) -> MetricResult:
    """Field-level F1 (Donut ``cal_f1``): corpus value micro-averaged over all fields, plus each sample's F1."""
    counts = [field_counts(_parse(e.prediction), _reference(e)) for e in examples]
    total = _f1(*(sum(c[i] for c in counts) for i in range(3)))
    return MetricResult(total if total is not None else 0.0, [_f1(*c) for c in counts])


def _tree(data: Json, name: str = "<root>") -> Any:
    # Donut's construct_tree_from_dict: dict keys and "<subtree>" nodes inside, "<leaf>value" nodes at the bottom.
    zss = require("zss", "zss")
    node = zss.Node(name)
    if isinstance(data, dict):
        for key, value in data.items():
            node.addkid(_tree(value, key))
    elif all(isinstance(item, dict) for item in data):
        for item in data:
            node.addkid(_tree(item, "<subtree>"))
    else:
        for item in data:
            node.addkid(zss.Node(f"<leaf>{item}"))
    return node


def _leaf(label: str) -> str | None:
    return label[len("<leaf>"):] if label.startswith("<leaf>") else None


def _insert_remove_cost(node: Any) -> int:
    leaf = _leaf(node.label)
    return 1 if leaf is None else len(leaf)


def _update_cost(a: Any, b: Any) -> int:
    levenshtein = require("rapidfuzz.distance.Levenshtein", "rapidfuzz")
    leaf_a, leaf_b = _leaf(a.label), _leaf(b.label)
    if leaf_a is not None and leaf_b is not None:
        return levenshtein.distance(leaf_a, leaf_b)
    if leaf_a is not None or leaf_b is not None:
        return 1 + len(leaf_a if leaf_a is not None else leaf_b)
    return int(a.label != b.label)


def _ted(a: Any, b: Any) -> float:
    zss = require("zss", "zss")
    return zss.distance(a, b, get_children=zss.Node.get_children, insert_cost=_insert_remove_cost,
                        remove_cost=_insert_remove_cost, update_cost=_update_cost)


def tree_accuracy(prediction: Any, reference: Any) -> float:
    """Donut's nTED accuracy (``cal_acc``): ``max(0, 1 - TED(pred, ref) / TED(empty, ref))``.

    Trees and costs mirror Donut: inserting or removing a leaf costs its value's length, an inner node 1;
    relabelling two leaves costs their Levenshtein distance, a leaf and an inner node ``1 + len(leaf)``, two inner
    nodes ``int(labels differ)``. Deviation: when the reference is empty (Donut divides by zero) the score is 1
    for an empty prediction and 0 otherwise.
    """
    pred, ref = _tree(normalize_json(prediction)), _tree(normalize_json(reference))
    baseline = _ted(_tree({}), ref)
    # Every node of one tree left unmatched in the other costs at least 1, so TED >= the difference in node count:
    # a prediction that many nodes larger scores 0 exactly, without zss's quadratic work on a degenerate answer.
    if baseline and _size(pred) - _size(ref) >= baseline:
        return 0.0
    if baseline == 0:
        return float(_ted(pred, ref) == 0)
    return max(0.0, 1.0 - _ted(pred, ref) / baseline)


def _size(node: Any) -> int:
    count, stack = 0, [node]
    while stack:
        count += 1
        stack.extend(stack.pop().children)
    return count


def _tree_accuracy(examples: Sequence[Example]) -> MetricResult:
    scores: list[float | None] = [tree_accuracy(_parse(e.prediction), _reference(e)) for e in examples]
    return MetricResult(mean_of(scores), scores)


register_metric(Metric("field_f1", _field_f1, reference_problem=reference_problem))
register_metric(Metric("tree_accuracy", _tree_accuracy, reference_problem=reference_problem))
