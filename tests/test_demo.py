"""The demo end to end: a tiny model really learns, and its adapter is a plain PEFT adapter."""

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForImageTextToText

from vlmtune.cli.main import main
from vlmtune.data import Renderer, read_samples
from vlmtune.demo import run_demo
from vlmtune.models import get_family, load_processor

pytestmark = pytest.mark.slow  # trains the demo to near-perfect accuracy: minutes on 2 CPU cores


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_root")
    scores = run_demo(root, progress=False)
    return root / "demo", scores


def test_fine_tuning_lifts_held_out_accuracy_from_chance_to_near_perfect(demo_run):
    demo, scores = demo_run
    assert scores["val_samples"] == 100
    assert scores["base_accuracy"] <= 0.45  # chance is about 0.29
    assert scores["tuned_accuracy"] >= 0.9
    metrics = json.loads((demo / "run" / "metrics.json").read_text())
    assert metrics["val_exact_match"] == scores["tuned_accuracy"]
    assert metrics["base_val_exact_match"] == scores["base_accuracy"]
    losses = [json.loads(line)["loss"] for line in (demo / "run" / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert losses[-1] < losses[0] / 3
    assert (demo / "run" / "config.yaml").is_file()
    assert "final metrics" in (demo / "run" / "train.log").read_text()
    rows = [json.loads(line) for line in (demo / "run" / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 100 and {"id", "prompt", "reference", "base", "tuned", "scores"} <= rows[0].keys()
    assert sum(r["scores"]["exact_match"]["tuned"] for r in rows) / 100 == scores["tuned_accuracy"]
    eval_metrics = json.loads((demo / "run" / "eval" / "metrics.json").read_text())
    expected = {"base": scores["base_accuracy"], "tuned": scores["tuned_accuracy"], "n": 100}
    assert eval_metrics["metrics"]["exact_match"] == expected
    assert (demo / "run" / "eval" / "report.html").is_file()


def test_adapter_loads_with_plain_peft_and_changes_the_model(demo_run):
    demo, _ = demo_run
    base_dir, adapter_dir = demo / "base" / "model", demo / "run" / "adapter"
    adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert all(".language_model." in name for name in adapter_config["target_modules"])

    spec = get_family("qwen2_5_vl")
    renderer = Renderer(load_processor(base_dir, spec), spec)
    prompt, _ = read_samples(demo / "data" / "val.jsonl")[0].prompt_and_answer()
    inputs = {k: v.unsqueeze(0) if k in ("input_ids", "attention_mask", "mm_token_type_ids") else v
              for k, v in renderer.encode_prompt(prompt).items()}
    base = AutoModelForImageTextToText.from_pretrained(base_dir)
    with torch.no_grad():
        base_logits = base(**inputs).logits
        tuned = PeftModel.from_pretrained(base, adapter_dir)
        tuned_logits = tuned(**inputs).logits
    assert not torch.allclose(base_logits, tuned_logits, atol=1e-3)


def test_predict_command_answers_with_the_adapter(demo_run, tmp_path, capsys):
    demo, _ = demo_run
    import random

    from vlmtune.data.demo import draw_shape

    draw_shape("square", "blue", random.Random(1)).save(tmp_path / "q.png")
    code = main(["predict", "--model", str(demo / "base" / "model"), "--adapter", str(demo / "run" / "adapter"),
                 "--image", str(tmp_path / "q.png"), "--prompt", "What colour is the shape?",
                 "--max-new-tokens", "4"])
    assert code == 0
    assert capsys.readouterr().out.strip() == "blue"


def test_train_command_rejects_a_bad_key_before_loading_anything(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  path: nowhere\ndata:\n  train: t.jsonl\n")
    assert main(["train", str(config), "train.epoch=3"]) == 2
    assert "train.epoch: unknown key (did you mean 'epochs'?)" in capsys.readouterr().err
