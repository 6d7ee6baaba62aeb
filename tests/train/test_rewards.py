"""GRPO's rewards score sampled answers as TRL calls them (``completions`` and the dataset's ``sample_index``)
against each sample's reference, with the evaluation's metrics and the family's own grounding syntax: Qwen2.5-VL
writes absolute pixels of the image as its processor resized it, Qwen3-VL a 0-1000 grid."""

import pytest
from PIL import Image

from tests.conftest import write_jsonl
from vlmtune.config.schema import DataConfig
from vlmtune.core.errors import ConfigError
from vlmtune.data.formats import read_dataset
from vlmtune.data.settings import renderer_for
from vlmtune.models import get_family
from vlmtune.train.grpo import References


def _answers(*texts: str) -> list:
    """Completions as TRL hands conversational ones to a reward function."""
    return [[{"role": "assistant", "content": t}] for t in texts]


def _references(tmp_path, tiny_dir, family: str, answers: list) -> References:
    """One sample per answer (a 200 x 100 image, "Where is it?"), read from messages JSONL."""
    Image.new("RGB", (200, 100), (250, 250, 250)).save(tmp_path / "shot.png")
    path = write_jsonl(tmp_path / "d.jsonl", [{"messages": [
        {"role": "user", "content": [{"type": "image", "image": "shot.png"}, {"type": "text", "text": "Where?"}]},
        {"role": "assistant", "content": answer}]} for answer in answers])
    samples = read_dataset(path, "auto").samples
    return References(renderer_for(str(tiny_dir(family)), DataConfig(train=str(path)), get_family(family)), samples)


BOX = [{"type": "box", "box": [100, 50, 200, 100]}]


def test_qwen2_5_vl_rewards_read_boxes_in_pixels_of_the_resized_image(tmp_path, tiny_dir):
    refs = _references(tmp_path, tiny_dir, "qwen2_5_vl", [BOX])
    # 200 x 100 is resized to 196 x 112 (multiples of 28): x scales by 200/196, y by 100/112.
    assert refs.renderer.model_size((200, 100)) == (196, 112)
    answers = _answers('{"bbox_2d": [98, 56, 196, 112]}', '{"bbox_2d": [98, 56, 147, 112]}',
                       '{"bbox_2d": [0, 0, 98, 112]}', '{"point_2d": [147, 84]}', '{"point_2d": [10, 10]}', "left")
    index = [0] * len(answers)
    assert refs.reward_function("iou")(completions=answers, sample_index=index) == [1.0, 0.5, 0.0, 0.0, 0.0, 0.0]
    assert refs.reward_function("click")(completions=answers, sample_index=index) == [1, 1, 0, 1, 0, 0]
    assert refs.reward_function("format")(completions=answers, sample_index=index) == [1, 1, 1, 0, 0, 0]


def test_qwen3_vl_rewards_read_boxes_on_the_0_1000_grid(tmp_path, tiny_dir):
    refs = _references(tmp_path, tiny_dir, "qwen3_vl", [BOX])
    # [100, 50, 200, 100] of a 200 x 100 image is [500, 500, 1000, 1000] on the grid.
    assert refs.reference(0)[0] == '{"bbox_2d": [500, 500, 1000, 1000]}'
    answers = _answers('{"bbox_2d": [500, 500, 1000, 1000]}', '{"bbox_2d": [500, 500, 750, 1000]}',
                       '{"bbox_2d": [98, 56, 196, 112]}',
                       '{"bbox_2d": [500, 500, 1000, 1000]} {"bbox_2d": [0, 0, 1, 1]}')
    index = [0] * len(answers)
    assert refs.reward_function("iou")(completions=answers, sample_index=index) == [1.0, 0.5, 0.0, 0.5]
    assert refs.reward_function("click")(completions=answers, sample_index=index) == [1, 1, 0, 1]
    # Two boxes for the reference's one: not the task's form.
    assert refs.reward_function("format")(completions=answers, sample_index=index) == [1, 1, 1, 0]


def test_qwen2_vl_rewards_read_the_box_tokens_of_the_sampled_ids(tmp_path, tiny_dir):
    """TRL hands the rewards answers decoded with skip_special_tokens, without Qwen2-VL's box tokens; the rewards
    decode the sampled token ids (``completion_ids``) keeping them."""
    refs = _references(tmp_path, tiny_dir, "qwen2_vl", [BOX])
    reference = refs.reference(0)[0]
    assert reference == "<|box_start|>(500,500),(1000,1000)<|box_end|>"
    tokenizer = refs.renderer.processor.tokenizer
    sampled = [tokenizer.encode(text, add_special_tokens=False) + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
               for text in (reference, "<|box_start|>(500,500),(750,1000)<|box_end|>", "left")]
    as_trl_decodes = _answers(*tokenizer.batch_decode(sampled, skip_special_tokens=True))
    assert as_trl_decodes[0][0]["content"] == "(500,500),(1000,1000)"
    iou = refs.reward_function("iou")
    assert iou(completions=as_trl_decodes, sample_index=[0, 0, 0], completion_ids=sampled) == [1.0, 0.5, 0.0]
    assert iou(completions=as_trl_decodes, sample_index=[0, 0, 0]) == [0.0, 0.0, 0.0]  # what that text scores


def test_text_rewards_score_each_answer_against_its_own_sample(tmp_path, tiny_dir):
    refs = _references(tmp_path, tiny_dir, "qwen2_5_vl", ["Red", "42", '{"total": "4.20", "items": 2}'])
    iou = refs.reward_function("iou")
    assert iou(completions=_answers("red", "42"), sample_index=[0, 1]) == [None, None]  # no box to score
    exact = refs.reward_function("exact_match")
    assert exact(completions=_answers("red.", "blue", "42", "43"), sample_index=[0, 0, 1, 1]) == [1, 0, 1, 0]
    relaxed = refs.reward_function("relaxed_accuracy")
    assert relaxed(completions=_answers("43", "44.5", "forty"), sample_index=[1, 1, 1]) == [1, 0, 0]
    f1 = refs.reward_function("field_f1")
    assert f1(completions=_answers('{"total": "4.20", "items": 3}', '{"total": "4.20", "items": 2}'),
              sample_index=[2, 2]) == [0.5, 1.0]
    form = refs.reward_function("format")
    assert form(completions=_answers("forty", "41.5", "total: 4.20", '{"total": 1}', "", "Blue"),
                sample_index=[1, 1, 2, 2, 0, 0]) == [0, 1, 0, 1, 0, 1]


def test_a_user_reward_gets_the_examples_and_is_named_after_its_function(tmp_path, tiny_dir, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def shorter(examples):\n"
        "    return [1.0 / (1 + len(e.prediction)) if not e.ref_grounding else len(e.pred_grounding)\n"
        "            for e in examples]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    refs = _references(tmp_path, tiny_dir, "qwen2_5_vl", ["red", BOX])
    function = refs.reward_function("my_rewards:shorter")
    assert function.__name__ == "shorter"
    assert function(completions=_answers("abc", '{"bbox_2d": [1, 2, 3, 4]} {"point_2d": [1, 2]}'),
                    sample_index=[0, 1]) == [0.25, 2]


@pytest.mark.parametrize("name, message", [
    ("my_missing_module:f", "reward my_missing_module:f: cannot import module my_missing_module"),
    ("json:no_such_function", "reward json:no_such_function: module json has no function no_such_function"),
])
def test_a_user_reward_that_cannot_be_found_is_a_config_error_naming_it(tmp_path, tiny_dir, name, message):
    refs = _references(tmp_path, tiny_dir, "qwen2_5_vl", ["red"])
    with pytest.raises(ConfigError, match=f"^grpo.rewards: {message}"):
        refs.reward_function(name)
