"""Known values from upstream tests (pix2struct, Donut); see shared/fixtures/real/metrics/SOURCE.md."""

import json
from pathlib import Path

import pytest

from vlmtune.evaluate.metrics import Example, get_metric
from vlmtune.evaluate.metrics.text import anls

CASES = Path(__file__).parents[3] / ".." / "shared" / "fixtures" / "real" / "metrics" / "cases.json"
pytestmark = pytest.mark.skipif(not CASES.exists(), reason=f"shared metric fixtures not found at {CASES}")


@pytest.fixture(scope="module")
def cases() -> dict:
    return json.loads(CASES.read_text())


@pytest.fixture(scope="module")
def pix2struct(cases) -> list[Example]:
    case = cases["pix2struct_metrics_test"]
    return [Example(p, tuple(t)) for p, t in zip(case["predictions"], case["targets"], strict=True)]


@pytest.mark.parametrize("name, key", [("anls", "anls"), ("relaxed_accuracy", "relaxed_accuracy"),
                                       ("cider", "cider")])
def test_pix2struct_aggregates(cases, pix2struct, name, key):
    expected = cases["pix2struct_metrics_test"]["expected"][key] / 100  # pix2struct reports x100
    assert get_metric(name).compute(pix2struct).value == pytest.approx(expected, abs=1e-3)


def test_pix2struct_per_item(cases, pix2struct):
    derived = cases["pix2struct_metrics_test"]["per_item_derived"]
    assert get_metric("anls").compute(pix2struct).per_sample == pytest.approx(derived["anls"])
    assert get_metric("relaxed_accuracy").compute(pix2struct).per_sample == [float(x) for x in
                                                                            derived["relaxed_correct"]]
    assert get_metric("cider").compute(pix2struct).per_sample == pytest.approx(derived["cider_per_item"])


def test_pix2struct_exact_match(cases, pix2struct):
    # pix2struct's exact match is raw string equality (12.5); ours normalises case and punctuation, so
    # "abc"/"Abc" also match: 3 of 8.
    raw = [e.prediction in e.references for e in pix2struct]
    assert raw == cases["pix2struct_metrics_test"]["per_item_derived"]["exact"]
    assert 100 * sum(raw) / len(raw) == cases["pix2struct_metrics_test"]["expected"]["exact_match"]
    assert get_metric("exact_match").compute(pix2struct).value == 3 / 8


def test_donut_normed_edit_distance(cases):
    # Donut's "Normed ED" is Levenshtein / max length; ANLS is 1 minus it below the 0.5 threshold (no case
    # difference here, so lower-casing changes nothing).
    for case in cases["donut_cord_normed_edit_distance"]["cases"]:
        assert 1 - anls(case["prediction"], case["answer"]) == pytest.approx(case["expected_normed_ed"])


def test_donut_malformed_output_scores_zero(cases):
    case = cases["donut_cord_normed_edit_distance"]["cases"][2]
    example = Example(case["prediction"], ('{"menu": {"nm": "Giant Squid"}}',))
    assert get_metric("field_f1").compute([example]).value == 0.0
    assert get_metric("tree_accuracy").compute([example]).value == 0.0
