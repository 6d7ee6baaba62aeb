import pytest

from vlmtune.evaluate.metrics import Example, get_metric
from vlmtune.evaluate.metrics._optional import require
from vlmtune.evaluate.metrics.text import anls, relaxed_correctness, vqa_accuracy

TEN = ("x",) * 10


@pytest.mark.parametrize("matches, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_vqa_accuracy_ten_answers(matches, expected):
    # Leave-one-out over 10 answers with m matches: m subsets hold m-1 matches, 10-m hold m.
    # m=1: 9 * 1/3 / 10 = 0.3; m=2: (2 * 1/3 + 8 * 2/3) / 10 = 0.6; m=3: (3 * 2/3 + 7 * 1) / 10 = 0.9.
    references = ("cat",) * matches + ("dog",) * (10 - matches)
    assert vqa_accuracy("cat", references) == pytest.approx(expected)


def test_vqa_accuracy_few_references_and_normalisation():
    assert vqa_accuracy("Two.", ("2",)) == 1.0  # one reference: exact match after the number-word map
    assert vqa_accuracy("cat", ("dog",)) == 0.0
    assert vqa_accuracy("cat", ("cat", "dog")) == 0.5  # 1 of 2 references
    assert vqa_accuracy("the cat", ("cat", "cat", "cat")) == 1.0
    result = get_metric("vqa_accuracy").compute([Example("cat", ("cat",) * 2 + ("dog",) * 8), Example("x", TEN)])
    assert result.value == pytest.approx((0.6 + 1.0) / 2)


@pytest.mark.parametrize("prediction, reference, expected", [
    ("100%", "96%", 1.0),    # |1.00 - 0.96| / 0.96 = 0.0417 <= 0.05
    ("100%", "0.94", 0.0),   # |1.00 - 0.94| / 0.94 = 0.0638
    ("105", "100", 1.0),     # exactly 5% is still correct
    ("106", "100", 0.0),
    ("0.01", "0", 0.0),      # a zero reference disables the numeric branch: "0.01" != "0"
    ("0", "0", 1.0),
    ("Yes", "yes", 1.0),     # string fallback is case-insensitive
    ("yes\n", "yes", 1.0),   # outer whitespace stripped
    ("", "12", 0.0),
    ("twelve", "12", 0.0),
])
def test_relaxed_correctness(prediction, reference, expected):
    assert relaxed_correctness(prediction, reference) == expected


@pytest.mark.parametrize("prediction, reference, expected", [
    ("kitten", "sitting", 4 / 7),  # Levenshtein 3, longest 7: nl = 3/7 < 0.5 -> 1 - 3/7
    ("Don't", "won't", 0.8),       # lower-cased: 1 edit / 5
    ("ab", "abcd", 0.0),           # nl = 2/4 = 0.5 is not < 0.5
    ("abc", "xyz", 0.0),
    ("", "abc", 0.0),
    ("", "", 1.0),
    (" ABC ", "abc", 1.0),
])
def test_anls(prediction, reference, expected):
    assert anls(prediction, reference) == pytest.approx(expected)


def test_max_over_references():
    examples = [Example("kitten", ("xyz", "sitting")), Example("96%", ("50", "1.0")), Example("", ("a",))]
    assert get_metric("anls").compute(examples).per_sample == pytest.approx([4 / 7, 0.0, 0.0])
    relaxed = get_metric("relaxed_accuracy").compute(examples)
    assert relaxed.per_sample == [0.0, 1.0, 0.0] and relaxed.value == pytest.approx(1 / 3)


def test_missing_dependency_names_the_extra():
    with pytest.raises(ImportError, match=r"vlmtune\[eval\]"):
        require("vlmtune_no_such_module", "no-such-package")
