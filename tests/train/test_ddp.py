"""Two CPU processes (torchrun, gloo) train exactly like one process with the doubled batch: each rank gets its
own share of every global batch, gradients are averaged, and the loss is normalised by the label tokens of all
ranks together (transformers' ``average_tokens_across_devices``, on by default), not averaged per rank."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from peft import PeftModel, get_peft_model_state_dict
from safetensors.torch import load_file
from transformers import AutoTokenizer

from vlmtune.config import load_config
from vlmtune.data.demo import make_demo_data
from vlmtune.models import load_model
from vlmtune.train import train

FAMILY, WORLD, BATCH, STEPS = "qwen2_5_vl", 2, 2, 4
# fp32 sums taken in another order (per-rank partial sums joined by gloo, other padding lengths) differ by about
# 1e-7 relative; a per-rank mean instead of the global token mean differs by about 1e-2, a lost rank's gradient
# doubles or halves the gradient norm.
REL = 1e-5
ADAPTER_ATOL = 1e-5  # weights of about 0.1; one Adam step moves each by about lr = 1e-3

pytestmark = [pytest.mark.multiprocess,
              pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_dir):
    """(two-process run folder, one-process run folder, answer tokens per train.jsonl line)."""
    root = tmp_path_factory.mktemp("ddp")
    data = make_demo_data(root / "data", n_train=WORLD * BATCH * STEPS, n_val=1, seed=1)["train"]
    # Answers of 1 to 5 words: the ranks of a step hold different numbers of label tokens, so a per-rank mean of
    # the loss would differ from the mean over the doubled batch.
    records = [json.loads(line) for line in data.read_text().splitlines()]
    for i, record in enumerate(records):
        answer = record["messages"][1]["content"][0]
        answer["text"] = " ".join([answer["text"]] * (1 + i % 5))
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir(FAMILY))
    answer_tokens = {i + 1: len(tokenizer(r["messages"][1]["content"][0]["text"], add_special_tokens=False).input_ids)
                     for i, r in enumerate(records)}

    def config(name: str, batch: int) -> str:
        path = root / f"{name}.yaml"
        path.write_text(json.dumps({
            "model": {"path": str(tiny_dir(FAMILY))},
            "data": {"train": str(data)},
            "lora": {"r": 4, "dropout": 0.0},
            "train": {"output_dir": str(root / name), "max_steps": STEPS, "batch_size": batch, "lr": 1e-3,
                      "logging_steps": 1, "seed": 3, "progress": False, "report_to": "none",
                      "trace_samples": True},
        }))
        return str(path)

    # --standalone: torchrun picks a free port itself, so parallel test sessions cannot collide on one.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
               "-m", "vlmtune.cli.main", "train", config("ddp", BATCH)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})  # 2 procs, 2 cores
    try:
        _, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers, not only torchrun
        raise
    assert proc.returncode == 0, err[-3000:]
    train(load_config(config("one", BATCH * WORLD)))
    return root / "ddp", root / "one", answer_tokens


def _trace(run_dir, rank: int) -> dict[int, list[int]]:
    """Step -> train.jsonl line numbers of the samples this rank trained on."""
    lines = (run_dir / f"samples.rank{rank}.jsonl").read_text().splitlines()
    steps = [json.loads(line) for line in lines]
    assert len(steps) == len({s["step"] for s in steps}), "a step traced twice (gradient accumulation?)"
    return {s["step"]: [int(i.rsplit(":", 1)[1]) for i in s["ids"]] for s in steps}


def _logs(run_dir) -> dict[int, dict]:
    entries = (json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines())
    return {e["step"]: e for e in entries if "loss" in e}


def test_ranks_share_each_global_batch_without_overlap(runs):
    ddp, one, answer_tokens = runs
    ranks = [_trace(ddp, r) for r in range(WORLD)]
    reference = _trace(one, 0)
    assert not (ddp / f"samples.rank{WORLD}.jsonl").exists()
    assert all(sorted(r) == list(range(1, STEPS + 1)) for r in [*ranks, reference])
    uneven = 0
    for step in range(1, STEPS + 1):
        a, b = ranks[0][step], ranks[1][step]
        assert len(a) == len(b) == BATCH and not set(a) & set(b), step
        assert set(a) | set(b) == set(reference[step]), step  # the same global batch as the one process
        uneven += sum(answer_tokens[i] for i in a) != sum(answer_tokens[i] for i in b)
    assert uneven, "every step split the label tokens evenly: the loss check below would prove nothing"


def test_loss_and_gradient_norm_match_one_process_with_the_doubled_batch(runs):
    ddp, one, _ = runs
    got, want = _logs(ddp), _logs(one)
    assert sorted(got) == sorted(want) == list(range(1, STEPS + 1))
    for step in want:  # rank 0 logs the mean over ranks, which here is the global per-token mean
        assert got[step]["loss"] == pytest.approx(want[step]["loss"], rel=REL), step
        assert got[step]["grad_norm"] == pytest.approx(want[step]["grad_norm"], rel=REL), step


def test_the_adapter_is_saved_once_loads_with_peft_and_matches_one_process(runs, tiny_dir):
    ddp, one, _ = runs
    saved = list(ddp.rglob("adapter_model.safetensors"))
    assert saved == [ddp / "adapter" / "adapter_model.safetensors"]
    reference = load_file(one / "adapter" / "adapter_model.safetensors")
    model = PeftModel.from_pretrained(load_model(tiny_dir(FAMILY)), ddp / "adapter")
    weights = get_peft_model_state_dict(model)
    assert sorted(weights) == sorted(reference)
    assert any(w.abs().max() > 0 for k, w in weights.items() if "lora_B" in k), "the adapter did not train"
    for key, value in reference.items():
        torch.testing.assert_close(weights[key], value, rtol=0, atol=ADAPTER_ATOL, msg=key)
