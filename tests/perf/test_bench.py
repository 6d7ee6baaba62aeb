"""The performance tools run and report what they promise: ``vlmtune bench`` for a few steps (with the baseline),
``vlmtune estimate`` with parameter counts equal to the real model's, random-init architectures, the FLOPs rule."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageTextToText

from vlmtune.cli.main import main
from vlmtune.config import load_config
from vlmtune.core.errors import ConfigError
from vlmtune.data.demo import make_demo_data
from vlmtune.models import spec_for
from vlmtune.perf.arch import architecture_config, random_model
from vlmtune.perf.flops import train_flops
from vlmtune.perf.gpus import find_gpu
from vlmtune.train import build_model, parameter_table

SEVEN_B = Path(__file__).resolve().parents[2] / "benchmarks" / "qwen2_5_vl_7b.json"
RUN_FIELDS = ("samples_per_s", "text_tokens_per_s", "visual_tokens_per_s", "padding_share", "data_wait_share",
              "peak_memory_mb", "peak_memory_kind", "mfu", "model_tflops_per_s", "preprocess_s", "steps")


@pytest.fixture
def config(tmp_path, tiny_dir):
    data = make_demo_data(tmp_path / "data", n_train=12, n_val=1, seed=2)["train"]
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps({
        "model": {"path": str(tiny_dir("qwen2_vl"))},
        "data": {"train": str(data), "cache_dir": str(tmp_path / "cache")},
        "lora": {"r": 4}, "train": {"batch_size": 2, "output_dir": str(tmp_path / "run")},
    }))
    return path


@pytest.mark.slow  # `vlmtune bench` trains both recipes
def test_bench_runs_a_few_steps_of_both_recipes_and_writes_every_field(config, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", str(config), "--steps", "2", "--warmup", "1", "--baseline", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    for run in ("vlmtune", "baseline"):
        assert all(key in result[run] for key in RUN_FIELDS), run
        assert result[run]["steps"] == 2 and result[run]["samples"] == 4 and result[run]["samples_per_s"] > 0
        assert result[run]["visual_tokens_per_s"] > 0 and result[run]["mfu"] is None  # no GPU here
    assert result["vlmtune"]["preprocess"].startswith("data.cache_dir: 12 samples rendered")
    assert set(result["ratio"]) == {"samples_per_s", "tokens_per_s"}
    assert {"date", "device", "torch_threads", "load_average", "batching"} <= set(result)
    shown = capsys.readouterr().out
    assert "samples/s" in shown and "padding share" in shown and "ratio" in shown


def test_estimate_prints_the_fields_and_counts_the_real_models_parameters(config, capsys):
    assert main(["estimate", str(config), "--gpu", "A100", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["gpu"] == "A100" and result["data"]["samples"] == 12
    assert set(result["visual_tokens_per_image"]) >= {"224x224", "448x448"}
    assert set(result["methods"]) == {"full", "lora", "qlora"}
    cfg = load_config(str(config))
    spec = spec_for(cfg.model.path, check_split=False)
    for method in ("full", "lora"):
        run = cfg.model_copy(update={"train": cfg.train.model_copy(update={"method": method})})
        real = parameter_table(build_model(run, spec), spec)
        estimated = result["methods"][method]["parameters"]
        assert {c: (v["trainable"], v["total"]) for c, v in estimated.items()} == real, method
    m = result["methods"]
    assert m["qlora"]["memory_gib"]["weights"] < m["lora"]["memory_gib"]["weights"]
    assert m["full"]["memory_gib"]["train_state"] > m["lora"]["memory_gib"]["train_state"]
    assert all(v["step_s"] > 0 and v["memory_gib"]["total"] > 1 for v in m.values())
    assert main(["estimate", str(config)]) == 0
    text = capsys.readouterr().out
    for field in ("visual tokens per image", "tokens per sample", "trainable params", "total GiB", "step time s",
                  "MFU assumed", "memory = weights"):
        assert field in text, field


def test_random_init_builds_the_7b_architecture_on_meta_and_the_tiny_one_for_real(config, tiny_dir):
    tiny_25 = str(tiny_dir("qwen2_5_vl"))
    seven = architecture_config(tiny_25, str(SEVEN_B))
    assert seven.get_text_config().hidden_size == 3584
    assert seven.image_token_id == architecture_config(tiny_25).image_token_id != 151655  # the tiny processor's
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(seven, dtype=torch.bfloat16)
    assert sum(p.numel() for p in model.parameters()) == 8_292_166_656  # Qwen2.5-VL-7B-Instruct's count
    cfg = load_config(str(config))
    with pytest.raises(ConfigError, match="qwen2_5_vl config"):  # a Qwen2-VL processor cannot feed it
        architecture_config(cfg.model.path, str(SEVEN_B))
    spec = spec_for(cfg.model.path, check_split=False)
    assert parameter_table(random_model(cfg, spec), spec) == parameter_table(build_model(cfg, spec), spec)


def test_flops_rule_and_gpu_table():
    n, t, patches = 1000, 10, 40
    weights = {"vision": (n, 0), "projector": (n, 0), "language": (n, n), "lm_head": (n, n)}
    tokens = {"vision": patches, "projector": 5, "language": t, "lm_head": t}
    # Frozen vision and projector in front: forward only; trained language model and head: 6·N·t.
    assert train_flops(weights, tokens) == 2 * n * patches + 2 * n * 5 + 6 * n * t * 2
    lora = {**weights, "language": (n, 10), "lm_head": (n, 0)}
    assert train_flops(lora, tokens) == 2 * n * patches + 2 * n * 5 + (4 * n + 20) * t + 4 * n * t
    assert train_flops(lora, tokens, checkpointing=True) == train_flops(lora, tokens) + 2 * n * t
    for name, gpu in (("NVIDIA H100 80GB HBM3", "H100"), ("NVIDIA H100 PCIe", "H100 PCIe"), ("h200", "H200"),
                      ("NVIDIA A100-SXM4-80GB", "A100"), ("NVIDIA L4", "L4"), ("NVIDIA L40S", "L40S")):
        assert find_gpu(name).name == gpu, name
    assert find_gpu("Tesla T4") is None
