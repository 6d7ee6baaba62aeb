"""Generated answers keep the special tokens they are made of (the family's grounding markers) and lose the
template's control tokens (end of turn, padding): Qwen2-VL boxes survive decoding, other answers decode as before."""

import pytest

from vlmtune.models import get_family, load_processor
from vlmtune.models.answers import AnswerText


def _tokenizer(tiny_dir, family: str):
    return load_processor(tiny_dir(family), get_family(family)).tokenizer


def test_a_qwen2_vl_box_answer_is_the_plain_decode_without_the_end_tokens(tiny_dir):
    spec, tokenizer = get_family("qwen2_vl"), _tokenizer(tiny_dir, "qwen2_vl")
    answer = "<|object_ref_start|>the red square<|object_ref_end|><|box_start|>(120,250),(480,700)<|box_end|>"
    # As generation ends a row of a batch: the end of turn, then padding while the other rows go on.
    ids = tokenizer.encode(answer, add_special_tokens=False) + tokenizer.convert_tokens_to_ids(
        ["<|im_end|>", "<|endoftext|>", "<|endoftext|>"])
    plain = tokenizer.decode(ids, skip_special_tokens=False)
    assert plain == answer + "<|im_end|><|endoftext|><|endoftext|>"
    assert AnswerText(tokenizer, spec.answer_tokens)(ids) == answer
    assert tokenizer.decode(ids, skip_special_tokens=True) == "the red square(120,250),(480,700)"  # boxes lost
    [box] = spec.grounding.parse(AnswerText(tokenizer, spec.answer_tokens)(ids), (1000, 1000), (1000, 1000))
    assert box.box == (120.0, 250.0, 480.0, 700.0) and box.label == "the red square"


def test_internvl_keeps_its_box_tags(tiny_dir):
    spec, tokenizer = get_family("internvl"), _tokenizer(tiny_dir, "internvl")
    answer = "<ref>cat</ref><box>[[10, 20, 300, 400]]</box>"
    ids = tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    assert AnswerText(tokenizer, spec.answer_tokens)(ids) == answer


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "llava"])
def test_answers_without_kept_tokens_decode_as_skip_special_tokens_did(tiny_dir, family):
    spec, tokenizer = get_family(family), _tokenizer(tiny_dir, family)
    ids = tokenizer.encode('a blue circle {"bbox_2d": [1, 2, 3, 4]}', add_special_tokens=False)
    ids += [tokenizer.convert_tokens_to_ids(spec.turn_end), tokenizer.pad_token_id]
    assert AnswerText(tokenizer, spec.answer_tokens)(ids) == tokenizer.decode(ids, skip_special_tokens=True)
