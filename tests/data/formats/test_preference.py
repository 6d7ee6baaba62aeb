"""Preference readers: TRL's prompt/chosen/rejected (plain and conversational), ShareGPT ranking (LLaMA-Factory,
with and without its registry) and RLHF-V, each found by ``format: auto``; ``vlmtune data check`` names the record
of every broken pair."""

from __future__ import annotations

import json

import pytest

from tests.conftest import write_jsonl
from vlmtune.cli.main import main
from vlmtune.core.sample import ImagePart, Message, PreferenceSample, TextPart
from vlmtune.data.formats import read_dataset


def _user(*parts) -> Message:
    return Message("user", tuple(parts))


def _answer(text: str) -> Message:
    return Message("assistant", (TextPart(text),))


def _read_one(path, expected_format: str) -> PreferenceSample:
    result = read_dataset(path)
    assert result.format == expected_format
    assert result.problems == []
    [sample] = result.samples
    assert isinstance(sample, PreferenceSample)
    return sample


def test_trl_plain_strings_with_an_image_placeholder(tmp_path, images):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "<image>\nWhat colour is it?", "chosen": "red",
                                               "rejected": "blue", "images": ["red.png"], "id": "q1"}])
    sample = _read_one(path, "preference")
    assert sample.prompt == (_user(ImagePart(images["red.png"]), TextPart("What colour is it?")),)
    assert (sample.chosen, sample.rejected) == (_answer("red"), _answer("blue"))
    assert sample.id == f'{path}:1 (id "q1")'
    assert sample.meta == {"id": "q1"}


def test_trl_plain_prompt_without_placeholder_gets_its_images_first(tmp_path, images):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Which colour?", "chosen": "red", "rejected": "green",
                                               "image": "red.png"}])
    sample = _read_one(path, "preference")
    assert sample.prompt == (_user(ImagePart(images["red.png"]), TextPart("Which colour?")),)


def test_trl_conversational_with_system_and_earlier_turns(tmp_path, images):
    record = {"prompt": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]},
                         {"role": "assistant", "content": "red"},
                         {"role": "user", "content": [{"type": "text", "text": "And this?"}, {"type": "image"}]}],
              "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "blue"}]}],
              "rejected": [{"role": "assistant", "content": "green"}], "images": ["red.png", "blue.png"]}
    sample = _read_one(write_jsonl(tmp_path / "p.jsonl", [record]), "preference")
    assert sample.prompt == (
        Message("system", (TextPart("Be brief."),)), _user(ImagePart(images["red.png"]), TextPart("Colour?")),
        _answer("red"), _user(TextPart("And this?"), ImagePart(images["blue.png"])))
    assert (sample.chosen, sample.rejected) == (_answer("blue"), _answer("green"))
    assert sample.chosen_sample().messages == (*sample.prompt, _answer("blue"))
    assert sample.rejected_sample().messages == (*sample.prompt, _answer("green"))


def test_sharegpt_ranking_jsonl(tmp_path, images):
    record = {"conversations": [{"from": "human", "value": "<image>What colour?"}],
              "chosen": {"from": "gpt", "value": "red"}, "rejected": {"from": "gpt", "value": "blue"},
              "images": ["red.png"], "system": "Answer in one word."}
    sample = _read_one(write_jsonl(tmp_path / "p.jsonl", [record]), "sharegpt_preference")
    assert sample.prompt == (Message("system", (TextPart("Answer in one word."),)),
                             _user(ImagePart(images["red.png"]), TextPart("What colour?")))
    assert (sample.chosen, sample.rejected) == (_answer("red"), _answer("blue"))


def test_llamafactory_registry_ranking_entry_with_its_own_columns(tmp_path, images):
    (tmp_path / "pairs.json").write_text(json.dumps([
        {"messages": [{"role": "user", "content": "<image>What colour?"}],
         "better": {"role": "assistant", "content": "red"}, "worse": {"role": "assistant", "content": "blue"},
         "pics": ["red.png"]}]))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"rlhf_demo": {
        "file_name": "pairs.json", "formatting": "sharegpt", "ranking": True,
        "columns": {"messages": "messages", "chosen": "better", "rejected": "worse", "images": "pics"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}}))
    sample = _read_one(tmp_path / "dataset_info.json#rlhf_demo", "llamafactory")
    assert isinstance(sample, PreferenceSample)
    assert sample.prompt == (_user(ImagePart(images["red.png"]), TextPart("What colour?")),)
    assert (sample.chosen, sample.rejected) == (_answer("red"), _answer("blue"))


def test_rlhf_v_records_with_text_as_a_json_string(tmp_path, images):
    text = json.dumps({"question": "What is shown?", "chosen": "A red square.", "rejected": "A cat."})
    path = write_jsonl(tmp_path / "rlhfv.jsonl", [{"image": "red.png", "text": text, "idx": 3,
                                                   "origin_dataset": "demo"}])
    sample = _read_one(path, "rlhf_v")
    assert sample.prompt == (_user(ImagePart(images["red.png"]), TextPart("What is shown?")),)
    assert (sample.chosen, sample.rejected) == (_answer("A red square."), _answer("A cat."))
    assert sample.meta == {"idx": 3, "origin_dataset": "demo"}


def test_data_check_names_the_record_and_field_of_each_broken_pair(tmp_path, images, capsys):
    path = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "<image>Colour?", "chosen": "red", "rejected": "blue", "images": ["red.png"]},
        {"prompt": "<image>Colour?", "chosen": "red", "images": ["red.png"]},
        {"prompt": "<image>Colour?", "chosen": "red", "rejected": "red", "images": ["red.png"], "id": "same"},
        {"prompt": "<image>Colour? <image>", "chosen": "red", "rejected": "blue", "images": ["red.png"]},
        {"prompt": "<image>Colour?", "chosen": "red", "rejected": "blue", "images": ["red.png", "blue.png"]},
        {"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}],
         "chosen": "red", "rejected": "", "images": ["red.png"]},
    ])
    assert main(["data", "check", str(path), "--json"]) != 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "preference"
    assert (report["records"], report["usable"]) == (6, 1)
    assert [(p["where"], p["field"], p["problem"]) for p in report["problems"]] == [
        (f"{path}:2", "rejected", "no rejected answer: a preference record needs both chosen and rejected"),
        (f'{path}:3 (id "same")', "rejected", "chosen and rejected are the same answer: the pair prefers nothing"),
        (f"{path}:4", "prompt", "more <image> placeholders than images (1 given)"),
        (f"{path}:5", "images", "2 images but 1 image placeholders in the prompt; each image needs exactly one"),
        (f"{path}:6", "rejected", "no rejected answer: a preference record needs both chosen and rejected"),
    ]


def test_data_check_with_a_model_measures_the_longer_side_of_each_pair(tmp_path, images, tiny_dir, capsys):
    long_rejected = "no " * 40
    path = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "<image>Colour?", "chosen": "red", "rejected": long_rejected, "images": ["red.png"]}])
    model = tiny_dir("qwen2_vl")
    assert main(["data", "check", str(path), "--model", str(model), "--json"]) == 0
    measured = json.loads(capsys.readouterr().out)["tokens"]["total"]["max"]
    assert main(["data", "check", str(path), "--model", str(model), "--max-length", str(measured - 1),
                 "--json"]) != 0
    [problem] = json.loads(capsys.readouterr().out)["problems"]
    assert problem["where"] == f"{path}:1"
    assert problem["problem"].startswith(f"{measured} tokens")


@pytest.mark.parametrize("record", [
    {"conversations": [{"from": "human", "value": "Colour?"}], "chosen": {"from": "gpt", "value": "red"}},
    {"image": "red.png", "text": json.dumps({"question": "Colour?", "chosen": "red"})},
])
def test_a_missing_rejected_side_is_named_in_the_other_formats(record, tmp_path, images):
    path = write_jsonl(tmp_path / "p.jsonl", [record])
    [problem] = read_dataset(path).problems
    assert problem.field in ("rejected", "text.rejected")
    assert problem.problem == "no rejected answer: a preference record needs both chosen and rejected"


def test_data_convert_writes_pairs_that_read_back_the_same(tmp_path, images):
    source = write_jsonl(tmp_path / "ranking.jsonl", [
        {"conversations": [{"from": "human", "value": "<image>What colour?"}],
         "chosen": {"from": "gpt", "value": "red"}, "rejected": {"from": "gpt", "value": "blue"},
         "images": ["red.png"], "id": "p1"}])
    out = tmp_path / "pairs.jsonl"
    assert main(["data", "convert", str(source), "-o", str(out)]) == 0
    written = json.loads(out.read_text())
    assert set(written) == {"prompt", "chosen", "rejected", "id"}
    before, after = _read_one(source, "sharegpt_preference"), _read_one(out, "preference")
    assert (after.prompt, after.chosen, after.rejected) == (before.prompt, before.chosen, before.rejected)
