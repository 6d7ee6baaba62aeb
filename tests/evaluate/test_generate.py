"""`vlmtune eval --task grounding` scores the boxes a Qwen2-VL writes between its special tokens: generation keeps
them in the answer (decoding with skip_special_tokens lost them, and every box scored IoU 0)."""

import json

import pytest
import torch

from vlmtune.cli.main import main
from vlmtune.config.schema import DataConfig
from vlmtune.data.demo import make_grounding_data
from vlmtune.data.formats import read_dataset
from vlmtune.data.settings import renderer_for
from vlmtune.evaluate import command


def test_qwen2_vl_box_answers_are_scored_by_eval(tiny_dir, tmp_path, monkeypatch, capsys):
    model_dir = str(tiny_dir("qwen2_vl"))
    data = make_grounding_data(tmp_path / "data", n_train=0, n_val=1, size=56)["val"]
    renderer = renderer_for(model_dir, DataConfig(train=str(data)))
    [sample] = read_dataset(data, "auto").samples
    reference = renderer.message_text(sample, 1)
    assert reference.startswith("<|box_start|>(") and reference.endswith(")<|box_end|>")
    tokenizer = renderer.processor.tokenizer
    # The model writes the reference box, ends its turn, then pads as a batch row that finished early would.
    written = tokenizer.encode(reference, add_special_tokens=False) + tokenizer.convert_tokens_to_ids(
        ["<|im_end|>", "<|endoftext|>"])
    load = command.load_for_inference

    def load_forced(*args, **kwargs):
        model = load(*args, **kwargs)

        def generate(input_ids, **_):
            return torch.cat([input_ids, torch.tensor([written] * len(input_ids))], dim=1)

        model.generate = generate
        return model

    monkeypatch.setattr(command, "load_for_inference", load_forced)
    out = tmp_path / "eval"
    assert main(["eval", "--model", model_dir, "--data", str(data), "--task", "grounding", "--no-compare-base",
                 "-o", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["iou"]["tuned"] == pytest.approx(1.0, abs=0.05)
    assert metrics["accuracy_at_iou_0.5"]["tuned"] == 1.0
    [row] = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert row["tuned"] == reference
