"""The multi-GPU presets in configs/: every file parses, and accelerate 1.15's own launcher code turns each
accelerate config into the launch it promises, down to the FSDP / DeepSpeed plugin the Trainer will get. Nothing
is launched: there is no GPU here, so no GPU engine actually runs in these tests."""

import json
import os
from pathlib import Path
from unittest import mock

import pytest
import yaml
from accelerate.commands import launch
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env
from transformers import Qwen2_5_VLForConditionalGeneration

ROOT = Path(__file__).resolve().parents[2]
ACCELERATE = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))
DEEPSPEED = sorted((ROOT / "configs" / "deepspeed").glob("*.json"))


def test_the_presets_are_there():
    assert [p.stem for p in ACCELERATE] == ["ddp", "deepspeed_zero2", "deepspeed_zero3", "fsdp2"]
    assert [p.stem for p in DEEPSPEED] == ["zero2", "zero3"]


@pytest.mark.parametrize("path", ACCELERATE + DEEPSPEED, ids=lambda p: p.name)
def test_every_preset_parses(path):
    text = path.read_text()
    assert isinstance(json.loads(text) if path.suffix == ".json" else yaml.safe_load(text), dict)


def _launch(path: Path, monkeypatch) -> tuple:
    """The arguments ``accelerate launch --config_file PATH -m vlmtune.cli.main train run.yaml`` hands to its
    launcher, and the environment that launcher gives every process."""
    monkeypatch.chdir(ROOT)  # the DeepSpeed JSON paths are relative to the folder one launches from
    assert isinstance(load_config_from_file(str(path)), ClusterConfig)  # no key accelerate does not know
    seen = {}
    monkeypatch.setattr(launch, "multi_gpu_launcher", lambda args: seen.update(kind="torchrun", args=args))
    monkeypatch.setattr(launch, "deepspeed_launcher", lambda args: seen.update(kind="deepspeed", args=args))
    parser = launch.launch_command_parser()
    launch.launch_command(parser.parse_args(["--config_file", str(path), "-m", "vlmtune.cli.main", "train",
                                             "run.yaml"]))
    args = seen["args"]
    assert args.module and args.training_script == "vlmtune.cli.main"
    assert args.training_script_args == ["train", "run.yaml"]
    if seen["kind"] == "deepspeed":
        return args, prepare_deepspeed_cmd_env(args)[1]
    return args, prepare_multi_gpu_env(args)


def test_ddp_is_plain_data_parallel(monkeypatch):
    args, env = _launch(ROOT / "configs/accelerate/ddp.yaml", monkeypatch)
    assert args.multi_gpu and not args.use_fsdp and not args.use_deepspeed
    assert "ACCELERATE_USE_FSDP" not in env and "ACCELERATE_USE_DEEPSPEED" not in env
    assert env["ACCELERATE_MIXED_PRECISION"] == "no"  # vlmtune's model.dtype decides


def test_fsdp2_wraps_the_qwen2_5_vl_blocks_and_saves_full_weights(monkeypatch):
    args, env = _launch(ROOT / "configs/accelerate/fsdp2.yaml", monkeypatch)
    assert args.use_fsdp
    with mock.patch.dict(os.environ, env, clear=True):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert sorted(plugin.transformer_cls_names_to_wrap) == sorted(Qwen2_5_VLForConditionalGeneration._no_split_modules)
    assert plugin.state_dict_type.name == "FULL_STATE_DICT"
    assert not plugin.activation_checkpointing


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_leaves_batch_sizes_and_lr_to_the_trainer(stage, monkeypatch):
    args, env = _launch(ROOT / f"configs/accelerate/deepspeed_zero{stage}.yaml", monkeypatch)
    assert args.use_deepspeed
    with mock.patch.dict(os.environ, env, clear=True):  # raises if the YAML repeats what the JSON says
        plugin = DeepSpeedPlugin()
    config = plugin.deepspeed_config
    assert plugin.zero_stage == config["zero_optimization"]["stage"] == stage
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                "gradient_clipping"):
        assert config[key] == "auto", key
    assert config["bf16"]["enabled"] == config["fp16"]["enabled"] == "auto"
    assert "optimizer" not in config and "scheduler" not in config  # train.optimizer / train.scheduler apply
    if stage == 3:  # the saved weights are gathered, not the rank's empty partition
        assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
