import pytest

from vlmtune.evaluate import exact_match, normalize_answer


@pytest.mark.parametrize("prediction, reference, expected", [
    ("Red", "red", 1.0), (" red. ", "red", 1.0), ("the circle", "circle", 1.0),
    ("A  blue   square!", "blue square", 1.0),
    ("red circle", "red", 0.0), ("", "red", 0.0), ("square", "circle", 0.0),
])
def test_exact_match(prediction, reference, expected):
    assert exact_match(prediction, reference) == expected


def test_normalize_answer():
    assert normalize_answer("The Answer: 42, isn't it?") == "answer 42 isn t it"
