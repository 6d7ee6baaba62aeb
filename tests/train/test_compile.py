"""train.compile: the model runs under torch.compile (the Trainer's torch_compile, inductor) and trains to the
same losses as without it."""

import json

import pytest
import torch._dynamo
from torch._dynamo.utils import counters

from vlmtune.cli.main import main
from vlmtune.data.demo import make_demo_data

pytestmark = pytest.mark.slow  # compiling the model's forward and backward takes a minute or two on CPU


def _losses(run_dir) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if "loss" in row]


def test_a_compiled_model_trains_to_the_same_losses(tmp_path, tiny_dir):
    data = make_demo_data(tmp_path / "data", n_train=6, n_val=0, seed=3)
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({
        "model": {"path": str(tiny_dir("qwen2_vl"))}, "data": {"train": str(data["train"])}, "lora": {"r": 4},
        "train": {"batch_size": 2, "max_steps": 3, "logging_steps": 1, "lr": 1e-3, "progress": False,
                  "report_to": "none", "seed": 5},
        "eval": {"at_end": False}}))
    torch._dynamo.reset()
    counters.clear()
    assert main(["train", str(config), f"train.output_dir={tmp_path / 'plain'}"]) == 0
    assert counters["stats"]["unique_graphs"] == 0  # nothing compiled without the setting
    assert main(["train", str(config), f"train.output_dir={tmp_path / 'compiled'}", "train.compile=true"]) == 0
    assert counters["stats"]["unique_graphs"] > 0

    plain, compiled = _losses(tmp_path / "plain"), _losses(tmp_path / "compiled")
    assert len(plain) == len(compiled) == 3
    assert compiled == pytest.approx(plain, rel=1e-4)
