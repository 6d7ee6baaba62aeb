"""``model.adapter``: a run continues the LoRA adapter of an earlier run (its weights loaded trainable)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from vlmtune.cli.main import main
from vlmtune.config import load_config
from vlmtune.data.demo import make_demo_data
from vlmtune.train.model import build_model


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, tiny_dir):
    """A 3-step supervised run (built once for the module): its config and its folder."""
    tmp_path = tmp_path_factory.mktemp("sft")
    data = make_demo_data(tmp_path / "data", n_train=8, n_val=0, seed=0)
    config = tmp_path / "sft.yaml"
    config.write_text(json.dumps({
        "model": {"path": str(tiny_dir("qwen2_vl"))}, "data": {"train": str(data["train"])},
        "lora": {"r": 4, "targets": ["q_proj", "v_proj"]},
        "train": {"output_dir": str(tmp_path / "sft"), "max_steps": 3, "lr": 1e-2, "progress": False,
                  "report_to": "none"}}))
    assert main(["train", str(config)]) == 0
    return config, tmp_path / "sft"


def test_a_run_folder_as_model_adapter_loads_its_weights_trainable(sft_run, tmp_path):
    config, run = sft_run
    saved = load_file(run / "adapter" / "adapter_model.safetensors")
    cfg = load_config(str(config), [f"model.adapter={run}", "lora.r=16", "lora.targets=all-linear"])
    model = build_model(cfg)
    params = dict(model.named_parameters())
    trainable = {name for name, p in params.items() if p.requires_grad}
    # Exactly the saved adapter's weights train (its rank and targets, not lora.*), holding the saved values.
    assert {name.replace(".default", "") for name in trainable} == set(saved)
    for name in trainable:
        assert torch.equal(params[name].detach(), saved[name.replace(".default", "")]), name
    assert any(saved[k].abs().sum() > 0 for k in saved if "lora_B" in k)  # the SFT steps moved it off zero


def test_model_adapter_without_an_adapter_config_is_refused_naming_the_key(sft_run, tmp_path, capsys):
    config, _ = sft_run
    (tmp_path / "empty").mkdir()
    code = main(["train", str(config), f"model.adapter={tmp_path / 'empty'}",
                 f"train.output_dir={tmp_path / 'next'}"])
    assert code != 0
    err = capsys.readouterr().err
    assert f"model.adapter {tmp_path / 'empty'}: no adapter_config.json" in err


def test_model_adapter_with_full_fine_tuning_is_refused(sft_run, tmp_path, capsys):
    config, run = sft_run
    code = main(["train", str(config), f"model.adapter={run}", "train.method=full",
                 f"train.output_dir={tmp_path / 'next'}"])
    assert code != 0
    assert "model.adapter continues a LoRA adapter, but train.method is full" in capsys.readouterr().err
