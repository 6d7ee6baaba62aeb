"""What `vlmtune train` and `vlmtune eval` print, run as a user runs them (a subprocess, real stdout and stderr): the
final metrics once, and none of the third-party notices that mean nothing to the user."""

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import write_jsonl

pytestmark = pytest.mark.slow  # trains and evaluates as subprocesses

NOISE = ("Setting accelerator to CPU",           # DeepSpeed, on stdout, on a machine without a GPU
         "gemm_4bit_forward",                    # bitsandbytes' optional CPU kernel package
         "requires torchvision (not installed)",  # transformers' PIL image-processor fallback
         "FutureWarning", "DeprecationWarning",   # e.g. TrainingArguments(gradient_checkpointing=...), PEFT's reads
         "Loading weights")                       # transformers' progress bar, with progress off


def _qa(image: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": [{"type": "image", "image": image},
                                                      {"type": "text", "text": "Colour?"}]},
                         {"role": "assistant", "content": answer}]}


def _vlmtune(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}  # Python's default filters, as a user has
    done = subprocess.run([sys.executable, "-m", "vlmtune.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def test_train_and_eval_print_each_fact_once_and_no_third_party_noise(tmp_path, images, tiny_dir):
    model = tiny_dir("qwen2_5_vl")
    data = write_jsonl(tmp_path / "d.jsonl", [_qa(f"{c}.png", c) for c in ("red", "blue", "green")])
    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  path: {model}\ndata:\n  train: {data}\n  val: {data}\n"
                      f"train:\n  output_dir: {tmp_path}/run\n  max_steps: 2\n  gradient_checkpointing: true\n"
                      "  report_to: none\n  progress: false\neval:\n  max_new_tokens: 2\n  metrics: [exact_match]\n")
    out = _vlmtune("train", str(config))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"train_loss", "val_loss", "val_exact_match", "base_val_exact_match"} <= set(metrics)
    for key in ("train_loss", "steps", "train_runtime_s", "val_loss", "val_samples", "val_exact_match",
                "base_val_exact_match"):
        # Printed once, as the final metrics' JSON line; the Trainer's own log lines quote keys in single quotes,
        # and the run plan speaks of steps in words.
        assert out.count(f'"{key}": ') == 1, (key, out)
        assert re.findall(rf"^\s*{key}: ", out, re.M) == [], (key, out)
    assert [line for line in out.splitlines() if any(noise in line for noise in NOISE)] == []

    out = _vlmtune("eval", "--model", str(model), "--adapter", str(tmp_path / "run" / "adapter"), "--data",
                   str(data), "--max-new-tokens", "2", "-o", str(tmp_path / "eval"), "--no-progress")
    assert [line for line in out.splitlines() if any(noise in line for noise in NOISE)] == []
    assert sum(line.startswith("exact_match ") for line in out.splitlines()) == 1
