"""Base vs tuned evaluation end to end on a tiny model: metrics.json, predictions.jsonl and report.html."""

import json

import pytest
import torch

from tests.conftest import write_jsonl
from vlmtune.cli.main import main
from vlmtune.config.schema import LoraConfig
from vlmtune.data import Renderer, read_samples
from vlmtune.evaluate import compare
from vlmtune.evaluate import run as eval_run
from vlmtune.models import get_family, load_model, load_processor
from vlmtune.train.lora import apply_lora


def _qa(image, question, answer):
    return {"messages": [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]},
        {"role": "assistant", "content": answer}]}


@pytest.fixture
def adapter(tmp_path, tiny_dir):
    """A LoRA adapter whose B weights are random, so the tuned model answers differently from the base."""
    torch.manual_seed(0)
    model = apply_lora(load_model(tiny_dir("qwen2_5_vl")), get_family("qwen2_5_vl"), LoraConfig(r=4))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    model.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


def test_eval_command_writes_metrics_predictions_and_report(tmp_path, images, tiny_dir, adapter, capsys):
    data = write_jsonl(tmp_path / "val.jsonl", [_qa("red.png", "Colour?", "red"), _qa("blue.png", "Colour?", "blue"),
                                                _qa("green.png", "Shape?", "square")])
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 3.0 / s}) + "\n" for s in range(1, 6)))
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(tiny_dir("qwen2_5_vl")), "--adapter", str(adapter), "--data", str(data),
                 "--compare-base", "--max-new-tokens", "4", "--loss-log", str(log), "-o", str(out),
                 "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 3 and metrics["task"] == "vqa" and metrics["adapter"] == str(adapter)
    assert set(metrics["metrics"]) == {"exact_match", "vqa_accuracy"}
    assert set(metrics["metrics"]["exact_match"]) == {"base", "tuned", "n"}
    assert metrics["metrics"]["exact_match"]["n"] == 3
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["reference"] for r in rows] == ["red", "blue", "square"]
    assert [r["prompt"] for r in rows] == ["Colour?", "Colour?", "Shape?"]
    assert any(r["base"] != r["tuned"] for r in rows), "the adapter should change the answers"
    for row, side in ((r, s) for r in rows for s in ("base", "tuned")):
        assert row["scores"]["exact_match"][side] == float(row[side].strip().lower() == row["reference"])
    mean = sum(r["scores"]["exact_match"]["tuned"] for r in rows) / 3
    assert metrics["metrics"]["exact_match"]["tuned"] == pytest.approx(mean)
    html = (out / "report.html").read_text()
    assert "exact_match" in html and "data:image" in html
    assert "exact_match" in capsys.readouterr().out


def test_base_answers_are_the_model_with_the_adapter_switched_off(tmp_path, images, tiny_dir, adapter):
    from peft import PeftModel

    spec = get_family("qwen2_5_vl")
    renderer = Renderer(load_processor(tiny_dir("qwen2_5_vl"), spec), spec)
    samples = read_samples(write_jsonl(tmp_path / "v.jsonl", [_qa("red.png", "Colour?", "red")]))
    tuned = PeftModel.from_pretrained(load_model(tiny_dir("qwen2_5_vl")), adapter)
    result = compare(tuned, renderer, samples, ["exact_match"], max_new_tokens=4, progress=False)
    alone = compare(load_model(tiny_dir("qwen2_5_vl")), renderer, samples, ["exact_match"], compare_base=False,
                    max_new_tokens=4, progress=False)
    assert result.rows[0]["base"] == alone.rows[0]["tuned"]
    assert "base" not in alone.rows[0] and set(alone.metrics["exact_match"]) == {"tuned"}


def test_grounding_predictions_are_parsed_back_to_original_pixels(tmp_path, images, tiny_dir, monkeypatch):
    spec = get_family("qwen2_5_vl")
    renderer = Renderer(load_processor(tiny_dir("qwen2_5_vl"), spec), spec)
    record = {"messages": [
        {"role": "user", "content": [{"type": "image", "image": "blue.png"}, {"type": "text", "text": "Find it."}]},
        {"role": "assistant", "content": [{"type": "box", "box": [10, 20, 50, 80], "label": "it"}]}]}
    [sample] = read_samples(write_jsonl(tmp_path / "g.jsonl", [record]))
    reference = renderer.message_text(sample, 1)
    # The tuned model answers the reference exactly; the base misses the box.
    answers = iter([[reference], ['{"bbox_2d": [0, 0, 1, 1], "label": "it"}']])
    monkeypatch.setattr(eval_run, "generate", lambda *args, **kwargs: next(answers))
    model = torch.nn.Linear(1, 1)
    model.disable_adapter = torch.no_grad  # any context manager: stands in for PEFT's
    result = compare(model, renderer, [sample], ["iou", "accuracy_at_iou_0.5"], progress=False)
    assert result.rows[0]["reference"] == reference and "bbox_2d" in reference
    assert result.metrics["iou"]["tuned"] == pytest.approx(1.0, abs=0.05)
    assert result.metrics["accuracy_at_iou_0.5"] == {"tuned": 1.0, "base": 0.0}


def test_grounding_task_scores_boxes_and_text_answers_of_a_mixed_set_apart(tmp_path, images, tiny_dir, monkeypatch,
                                                                           capsys):
    model = tiny_dir("qwen2_5_vl")

    def box(image, question, xyxy):
        return {"messages": [
            {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]},
            {"role": "assistant", "content": [{"type": "box", "box": xyxy, "label": "it"}]}]}

    data = write_jsonl(tmp_path / "gui.jsonl", [
        box("blue.png", "Click OK.", [10, 20, 50, 80]), _qa("red.png", "What does the title say?", "settings"),
        box("blue.png", "Click Cancel.", [40, 60, 80, 110]), _qa("red.png", "Which tab is open?", "general")])
    spec = get_family("qwen2_5_vl")
    renderer = Renderer(load_processor(model, spec), spec)
    ok_box = renderer.message_text(read_samples(data)[0], 1)
    # Right box for OK, a box far off for Cancel; the title read right, the tab wrong.
    answers = {"Click OK.": ok_box, "Click Cancel.": '{"bbox_2d": [0, 0, 1, 1], "label": "it"}',
               "What does the title say?": "Settings", "Which tab is open?": "advanced"}
    monkeypatch.setattr(eval_run, "generate", lambda _model, _renderer, prompts, *args, **kwargs: [
        answers[p.messages[-1].text] for p in prompts])
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(model), "--data", str(data), "--task", "grounding", "-o", str(out),
                 "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 4
    assert metrics["metrics"]["exact_match"] == {"tuned": 0.5, "n": 2}
    assert metrics["metrics"]["accuracy_at_iou_0.5"] == {"tuned": 0.5, "n": 2}
    assert metrics["metrics"]["click_accuracy"] == {"tuned": 0.5, "n": 2}
    assert metrics["metrics"]["iou"]["n"] == 2 and metrics["metrics"]["iou"]["tuned"] == pytest.approx(0.5, abs=0.03)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["scores"]["exact_match"]["tuned"] for r in rows] == [None, 1.0, None, 0.0]
    assert [r["scores"]["click_accuracy"]["tuned"] for r in rows] == [1.0, None, 0.0, None]
    summary = capsys.readouterr().out.splitlines()
    assert summary[summary.index(next(line for line in summary if line.startswith("metric"))):][:5] == [
        "metric                      base     tuned      n  (4 samples)",
        f"iou                            -     {metrics['metrics']['iou']['tuned']:.3f}      2",
        "accuracy_at_iou_0.5            -     0.500      2",
        "click_accuracy                 -     0.500      2",
        "exact_match                    -     0.500      2"]
    assert "<th>n</th>" in (out / "report.html").read_text()
