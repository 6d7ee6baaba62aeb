"""Degenerate generations (a model stuck emitting brackets, digits or quotes) score 0 with every metric and every
grounding parser, and evaluation goes on; a reference the metrics cannot score stops evaluation before it generates."""

import json

import pytest

from tests.conftest import write_jsonl
from vlmtune.cli.main import main
from vlmtune.core.sample import BoxPart
from vlmtune.evaluate import run as eval_run
from vlmtune.evaluate.metrics import Example, get_metric, metric_names
from vlmtune.models import get_family
from vlmtune.models.registry import family_names

DEGENERATE = {
    "brackets": "[" * 1000,
    "braces": "{" * 5000,
    "digits_and_commas": ("1234567," * 12_500)[:100_000],
    "unbalanced_quotes": '{"a": "' * 3000,
    "nested_objects": '{"a":' * 5000,
    "nested_lists_closed": "[" * 900 + "]" * 900,
    "nested_objects_closed": '{"a":' * 400 + "1" + "}" * 400,
    "huge_json_list": "[" + ",".join(["7"] * 30_000) + "]",
    "box_tokens_unclosed": "<|box_start|>(1,2),(3," * 5000,
    "box_json_nested": '[{"bbox_2d": [' * 3000,
    "ref_tags_unclosed": "<ref>a</ref><box>" + "[" * 3000,
    "fence_of_spaces": "```json" + " " * 50_000 + "x",
}
REFERENCES = {"field_f1": '{"total": "12.50"}', "tree_accuracy": '{"total": "12.50"}'}


@pytest.mark.parametrize("name", metric_names())
@pytest.mark.parametrize("output", list(DEGENERATE), ids=list(DEGENERATE))
def test_every_metric_scores_a_degenerate_output_zero(name, output):
    metric = get_metric(name)
    reference_box = (BoxPart((10.0, 10.0, 50.0, 50.0)),) if metric.needs_grounding else ()
    example = Example(DEGENERATE[output], (REFERENCES.get(name, "red square"),), ref_grounding=reference_box)
    result = metric.compute([example])
    assert result.value == 0.0
    assert result.per_sample in ([0.0], [])


def _grounding_conventions():
    seen = {}
    for spec in map(get_family, family_names()):
        if spec.grounding is not None:
            seen.setdefault((spec.grounding.syntax, spec.grounding.grid), spec.name)
    return sorted(seen.values())


@pytest.mark.parametrize("family", _grounding_conventions())
@pytest.mark.parametrize("output", list(DEGENERATE), ids=list(DEGENERATE))
def test_every_grounding_parser_reads_no_box_from_a_degenerate_output(family, output):
    assert get_family(family).grounding.parse(DEGENERATE[output], (640, 480), (644, 476)) == []


def _extraction_record(image: str, answer: str) -> dict:
    return {"messages": [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Fields?"}]},
        {"role": "assistant", "content": answer}]}


def test_eval_scores_degenerate_answers_zero_and_writes_them(tmp_path, images, tiny_dir, monkeypatch, capsys):
    data = write_jsonl(tmp_path / "x.jsonl", [_extraction_record("red.png", '{"colour": "red"}'),
                                              _extraction_record("blue.png", '{"colour": "blue"}')])
    answers = [DEGENERATE["brackets"], DEGENERATE["nested_objects"]]
    monkeypatch.setattr(eval_run, "generate", lambda *args, **kwargs: list(answers))
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(tiny_dir("qwen2_5_vl")), "--data", str(data), "--task", "extraction",
                 "-o", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics == {"field_f1": {"tuned": 0.0, "n": 2}, "tree_accuracy": {"tuned": 0.0, "n": 2},
                       "exact_match": {"tuned": 0.0, "n": 2}}
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["tuned"] for r in rows] == answers


def test_a_reference_that_is_not_json_stops_eval_before_generating(tmp_path, images, tiny_dir, monkeypatch, capsys):
    data = write_jsonl(tmp_path / "x.jsonl", [_extraction_record("red.png", '{"colour": "red"}'),
                                              _extraction_record("blue.png", "colour: blue")])
    calls = []
    monkeypatch.setattr(eval_run, "generate", lambda *args, **kwargs: calls.append(args) or ["{}"] * 2)
    assert main(["eval", "--model", str(tiny_dir("qwen2_5_vl")), "--data", str(data), "--task", "extraction",
                 "-o", str(tmp_path / "eval"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"vlmtune eval: error: {data}:2: the reference answer is not JSON")
    assert "(metric field_f1): 'colour: blue'" in err
    assert calls == [] and not (tmp_path / "eval" / "metrics.json").exists()


def _train_config(tmp_path, tiny_dir, val_answers: list[str]) -> str:
    train = write_jsonl(tmp_path / "t.jsonl", [_extraction_record(f"{c}.png", json.dumps({"colour": c}))
                                               for c in ("red", "blue", "green", "red")])
    val = write_jsonl(tmp_path / "v.jsonl", [_extraction_record(f"{c}.png", a)
                                             for c, a in zip(("red", "blue"), val_answers, strict=True)])
    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  path: {tiny_dir('qwen2_vl')}\ndata:\n  train: {train}\n  val: {val}\n"
                      f"train:\n  output_dir: {tmp_path / 'run'}\n  max_steps: 2\n  eval_steps: 1\n  save_steps: 1\n"
                      "  batch_size: 2\n  progress: false\n  report_to: none\n  best_by: field_f1\n"
                      "eval:\n  task: extraction\n  max_new_tokens: 4\n  compare_base: false\nlora:\n  r: 4\n")
    return str(config)


def test_best_by_a_metric_scores_degenerate_answers_zero_and_training_goes_on(tmp_path, images, tiny_dir,
                                                                             monkeypatch):
    config = _train_config(tmp_path, tiny_dir, ['{"colour": "red"}', '{"colour": "blue"}'])
    answers = [DEGENERATE["brackets"], DEGENERATE["braces"]]
    monkeypatch.setattr(eval_run, "generate", lambda *args, **kwargs: list(answers))
    assert main(["train", config]) == 0
    run = tmp_path / "run"
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["eval_field_f1"] for e in logged if "eval_field_f1" in e] == [0.0, 0.0]
    final = json.loads((run / "metrics.json").read_text())
    assert final["steps"] == 2 and final["val_field_f1"] == 0.0 and final["val_tree_accuracy"] == 0.0


def test_a_reference_that_is_not_json_stops_training_before_it_starts(tmp_path, images, tiny_dir, monkeypatch,
                                                                     capsys):
    config = _train_config(tmp_path, tiny_dir, ['{"colour": "red"}', "blue"])
    loads = []
    monkeypatch.setattr("vlmtune.train.model.build_model", lambda *args, **kwargs: loads.append(args))
    assert main(["train", config]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{tmp_path / 'v.jsonl'}:2: the reference answer is not JSON" in err
    assert loads == [] and not (tmp_path / "run" / "checkpoints").exists()
