import math

import pytest

from vlmtune.evaluate.metrics import Example, get_metric
from vlmtune.evaluate.metrics.caption import ptb_tokenize


def test_bleu4_hand_worked():
    # "a b c d e" vs "a b c d f": precisions 4/5, 3/4, 2/3, 1/2, equal lengths (BP 1): (0.2) ** (1/4).
    result = get_metric("bleu4").compute([Example("a b c d e", ("a b c d f",))])
    assert result.value == pytest.approx(0.2 ** 0.25) and result.per_sample == pytest.approx([0.2 ** 0.25])
    # All precisions 1, hypothesis 4 words vs reference 6: BP = exp(1 - 6/4).
    short = get_metric("bleu4").compute([Example("a b c d", ("a b c d e f",))])
    assert short.value == pytest.approx(math.exp(-0.5))


def test_bleu4_varied_references_and_empty():
    examples = [Example("the cat sat on the mat", ("a dog ran", "the cat sat on the mat")),
                Example("", ("a dog ran in the park",))]
    result = get_metric("bleu4").compute(examples)
    assert result.per_sample == pytest.approx([1.0, 0.0]) and 0.0 < result.value < 1.0
    assert get_metric("bleu4").compute([]).value == 0.0


def test_rouge_l_hand_worked():
    # LCS("the cat sat", "the cat was sitting") = 2: P = 2/3, R = 2/4, F = 2PR / (P + R) = 4/7.
    result = get_metric("rouge_l").compute([Example("the cat sat", ("the cat was sitting",)),
                                            Example("the cat sat", ("the cat was sitting", "The cat sat.")),
                                            Example("", ("a dog",))])
    assert result.per_sample == pytest.approx([4 / 7, 1.0, 0.0]) and result.value == pytest.approx((4 / 7 + 1) / 3)


def test_cider_hand_worked():
    # Two images: idf of each n-gram = log(2) - log(1). Sample 1 matches its reference on the 1- and 2-grams
    # (cosine 1) and has no 3-/4-grams (0): mean 0.5, x10 = 5. Sample 2 shares nothing: 0.
    result = get_metric("cider").compute([Example("A b.", ("a b",)), Example("c", ("d",))])
    assert result.per_sample == pytest.approx([5.0, 0.0]) and result.value == pytest.approx(2.5)
    # One sample: log(#images) = 0, so every idf is 0.
    assert get_metric("cider").compute([Example("a b", ("a b",))]).value == 0.0
    assert get_metric("cider").compute([Example("", ("",)), Example("a", ("",))]).per_sample == [0.0, 0.0]


def test_ptb_tokenize():
    assert ptb_tokenize("Don't") == "do n't" and ptb_tokenize("100%") == "100 %"
    assert ptb_tokenize('A man (in red) said "hi," -- it\'s 3.5 well-known...') == (
        "a man in red said hi it 's 3.5 well-known")
