"""A run killed with SIGKILL resumes from its last complete checkpoint and continues exactly as if never stopped."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from vlmtune.config import load_config
from vlmtune.data.demo import make_demo_data
from vlmtune.train import train
from vlmtune.train.checkpoints import checkpoints, resolve_resume

STEPS, SAVE_EVERY, KILL_AFTER = 40, 5, 10


def _losses(run_dir) -> dict[int, float]:
    """Step -> training loss, from metrics.jsonl, which must hold each step once."""
    entries = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [e["step"] for e in entries if "loss" in e]
    assert len(steps) == len(set(steps)), f"steps logged twice: {sorted({s for s in steps if steps.count(s) > 1})}"
    return {e["step"]: e["loss"] for e in entries if "loss" in e}


@pytest.fixture
def config(tmp_path, tiny_dir):
    data = make_demo_data(tmp_path / "data", n_train=40, n_val=4, seed=1)

    def write(name: str) -> str:
        path = tmp_path / f"{name}.yaml"
        path.write_text(json.dumps({
            "model": {"path": str(tiny_dir("qwen2_vl"))},
            "data": {"train": str(data["train"])},
            "lora": {"r": 4, "dropout": 0.0},
            "train": {"output_dir": str(tmp_path / name), "max_steps": STEPS, "batch_size": 2, "lr": 1e-3,
                      "logging_steps": 1, "save_steps": SAVE_EVERY, "save_total_limit": 2, "seed": 3,
                      "progress": False, "report_to": "none"},
        }))
        return str(path)

    return write


@pytest.mark.slow  # trains in a subprocess, kills it and resumes
def test_sigkill_then_resume_continues_the_same_loss_sequence(config, tmp_path):
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "vlmtune.cli.main", "train", config("killed")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    try:
        deadline = time.monotonic() + 240
        while not any(int(p.name.split("-")[1]) >= KILL_AFTER for p in checkpoints(run / "checkpoints")):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    logged = _losses(run)
    killed_at = max(logged)
    assert killed_at < STEPS, "the run finished before the kill: nothing was resumed"
    resumed_from = resolve_resume("auto", run / "checkpoints")
    step = int(resumed_from.name.split("-")[1])
    assert KILL_AFTER <= step < STEPS

    resumed = train(load_config(config("killed")), resume="auto")
    assert resumed.metrics["steps"] == STEPS
    straight = train(load_config(config("straight")))

    after, reference = _losses(run), _losses(tmp_path / "straight")
    assert sorted(after) == sorted(reference) == list(range(1, STEPS + 1))
    for s in range(step + 1, STEPS + 1):  # every step after the resume point
        assert after[s] == pytest.approx(reference[s], rel=1e-4, abs=1e-5), s
    assert straight.metrics["steps"] == STEPS


def test_resume_refuses_an_incomplete_checkpoint_and_auto_skips_it(tmp_path):
    folder = tmp_path / "checkpoints"
    (folder / "checkpoint-5").mkdir(parents=True)
    (folder / "checkpoint-5" / "trainer_state.json").write_text("{}")
    (folder / "checkpoint-10").mkdir()  # killed while saving: no trainer_state.json yet
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint.*checkpoint-5"):
        resolve_resume(str(folder / "checkpoint-10"), folder)
    assert resolve_resume("auto", folder) == folder / "checkpoint-5"
    assert not (folder / "checkpoint-10").exists()
    assert resolve_resume("auto", tmp_path / "none") is None


def test_a_checkpoint_whose_state_does_not_parse_is_skipped_naming_it(tmp_path, caplog):
    folder = tmp_path / "checkpoints"
    for step, state in ((5, '{"global_step": 5}'), (10, '{"global_step": 10, "log_hist')):  # 10: cut short
        (folder / f"checkpoint-{step}").mkdir(parents=True)
        (folder / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    with caplog.at_level("WARNING", logger="vlmtune"):
        assert resolve_resume("auto", folder) == folder / "checkpoint-5"
    assert f"skipping {folder / 'checkpoint-10'}: its trainer_state.json does not parse" in caplog.text
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        resolve_resume(str(folder / "checkpoint-10"), folder)
