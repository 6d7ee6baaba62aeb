"""Schedule, precision and checkpoint settings reach the Trainer with their meaning: a warmup ratio is the warmup of
ceil(ratio x total steps), validation every N epochs falls on epoch ends, every checkpoint can be kept, bf16 can run
without autocast, TF32 on a machine without CUDA says it does nothing, and QLoRA can quantise more components."""

import json
import logging

import pytest
import torch

from vlmtune.config import load_config
from vlmtune.core.errors import ConfigError
from vlmtune.data.demo import make_demo_data
from vlmtune.models import get_family
from vlmtune.train import train
from vlmtune.train.arguments import training_arguments
from vlmtune.train.model import quantization_config

FAMILY = "qwen2_vl"


def _config(tmp_path, tiny_dir, *overrides: str, val: bool = False):
    data = make_demo_data(tmp_path / "data", n_train=12, n_val=2, seed=2)
    return load_config(None, [f"model.path={tiny_dir(FAMILY)}", f"data.train={data['train']}",
                              f"train.output_dir={tmp_path / 'run'}", "train.progress=false", "train.report_to=none",
                              "train.logging_steps=1", "train.batch_size=2", "lora.r=4", "eval.at_end=false",
                              *([f"data.val={data['val']}"] if val else []), *overrides])


def _logs(run_dir, key: str) -> dict[int, float]:
    entries = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {e["step"]: e[key] for e in entries if key in e}


@pytest.mark.slow  # trains for a few steps
def test_a_warmup_ratio_warms_up_for_the_ceiling_of_its_share_of_all_steps(tmp_path, tiny_dir):
    # 6 steps: a ratio of 0.3 is ceil(1.8) = 2 warmup steps, the same schedule as warmup_steps 2 and not as 1.
    runs = {name: train(_config(tmp_path / name, tiny_dir, "train.max_steps=6", "train.lr=1e-3", *extra))
            for name, extra in [("ratio", ["train.warmup_ratio=0.3"]), ("two", ["train.warmup_steps=2"]),
                                ("one", ["train.warmup_steps=1"])]}
    lrs = {name: list(_logs(r.run_dir, "learning_rate").values()) for name, r in runs.items()}
    assert len(lrs["ratio"]) == 6
    assert lrs["ratio"] == pytest.approx(lrs["two"], rel=1e-12)
    assert lrs["ratio"] != pytest.approx(lrs["one"], rel=1e-6)
    # The rate of each step: 0, half the peak, then the peak where the cosine decay starts.
    assert lrs["ratio"][:3] == pytest.approx([0, 1e-3 / 2, 1e-3])


def test_warmup_and_validation_are_each_set_one_way(tmp_path, tiny_dir):
    with pytest.raises(ConfigError, match=r"warmup_steps \(5\) and train.warmup_ratio \(0.1\) both set"):
        _config(tmp_path, tiny_dir, "train.warmup_steps=5", "train.warmup_ratio=0.1")
    with pytest.raises(ConfigError, match=r"eval_steps \(5\) and train.eval_epochs \(2\) both set"):
        _config(tmp_path, tiny_dir, "train.eval_steps=5", "train.eval_epochs=2")
    with pytest.raises(ConfigError, match="warmup_ratio"):
        _config(tmp_path, tiny_dir, "train.warmup_ratio=1.5")


@pytest.mark.slow  # trains for a few steps
def test_validation_every_n_epochs_falls_on_the_ends_of_those_epochs(tmp_path, tiny_dir):
    # 12 samples in batches of 2 are 6 batches; accumulating 4 makes ceil(6 / 4) = 2 optimizer steps an epoch
    # (the last one over 2 batches), so every 2 epochs is every 4 steps: steps 4 and 8 of 4 epochs.
    cfg = _config(tmp_path, tiny_dir, "train.epochs=4", "train.grad_accum=4", "train.eval_epochs=2",
                  "train.save_steps=4", "train.save_total_limit=null", val=True)
    result = train(cfg)
    assert result.metrics["steps"] == 8
    assert sorted(_logs(result.run_dir, "eval_loss")) == [4, 8]
    assert sorted(p.name for p in (result.run_dir / "checkpoints").glob("checkpoint-*")) == [
        "checkpoint-4", "checkpoint-8"]


def test_checkpoints_off_the_validation_epochs_are_refused_naming_the_interval(tmp_path, tiny_dir):
    cfg = _config(tmp_path, tiny_dir, "train.epochs=4", "train.grad_accum=4", "train.eval_epochs=2",
                  "train.save_steps=3", val=True)
    with pytest.raises(ConfigError, match=r"save_steps \(3\) must be a multiple of the validation interval, "
                                          r"train.eval_epochs 2 x 2 optimizer steps an epoch = 4"):
        train(cfg)


@pytest.mark.slow  # trains for a few steps
def test_save_total_limit_null_keeps_every_checkpoint(tmp_path, tiny_dir):
    result = train(_config(tmp_path, tiny_dir, "train.max_steps=4", "train.save_steps=1",
                           "train.save_total_limit=null"))
    kept = sorted(int(p.name.split("-")[1]) for p in (result.run_dir / "checkpoints").glob("checkpoint-*"))
    assert kept == [1, 2, 3, 4]
    limited = train(_config(tmp_path / "limited", tiny_dir, "train.max_steps=4", "train.save_steps=1"))
    assert len(list((limited.run_dir / "checkpoints").glob("checkpoint-*"))) == 2  # the default, 2


@pytest.mark.slow  # trains for a few steps
def test_bf16_without_autocast_trains_the_bf16_model_as_it_is(tmp_path, tiny_dir):
    cfg = _config(tmp_path, tiny_dir, "model.dtype=bf16", "train.autocast=false", "train.max_steps=2")
    args = training_arguments(cfg, tmp_path / "run", has_val=False)
    assert not args.bf16 and not args.fp16
    assert training_arguments(cfg.model_copy(update={"train": cfg.train.model_copy(update={"autocast": True})}),
                              tmp_path / "run", has_val=False).bf16
    result = train(cfg)
    losses = list(_logs(result.run_dir, "loss").values())
    assert len(losses) == 2 and all(map(torch.isfinite, torch.tensor(losses)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA, TF32 applies and nothing is said")
def test_tf32_without_cuda_is_reported_and_left_off(tmp_path, tiny_dir, caplog):
    cfg = _config(tmp_path, tiny_dir, "train.tf32=true")
    with caplog.at_level(logging.WARNING, logger="vlmtune"):
        args = training_arguments(cfg, tmp_path / "run", has_val=False)
    assert args.tf32 is None
    assert "train.tf32: no CUDA GPU here" in caplog.text


def test_qlora_can_quantise_the_vision_tower_and_projector_too(tmp_path, tiny_dir):
    spec = get_family(FAMILY)
    everything = _config(tmp_path, tiny_dir, "train.method=qlora",
                         "quantization.components=[language,vision,projector]")
    assert quantization_config(everything, spec).llm_int8_skip_modules == ["lm_head"]
    default = _config(tmp_path, tiny_dir, "train.method=qlora")
    assert quantization_config(default, spec).llm_int8_skip_modules == ["model.visual", "model.visual.merger",
                                                                        "lm_head"]
    with pytest.raises(ConfigError, match="must include language"):
        _config(tmp_path, tiny_dir, "quantization.components=[vision]")
