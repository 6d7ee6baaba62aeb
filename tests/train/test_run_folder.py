"""One run per folder: a folder holding a run is refused unless --resume or --overwrite, --resume names what changed
and refuses what breaks an exact resume, metrics.jsonl holds each step once, a lock keeps a second run out, Ctrl-C
saves the step and prints the command that resumes it, and the run plan's step counts are the Trainer's."""

import json
import shlex
import signal
import socket
import subprocess
import sys

import pytest
from transformers import TrainerCallback

import vlmtune.models as models_module
import vlmtune.train.model as model_module
import vlmtune.train.prepare as prepare_module
import vlmtune.train.run as run_module
from vlmtune.cli.main import main
from vlmtune.data.demo import make_demo_data
from vlmtune.train.trainer import VlmTrainer

pytestmark = pytest.mark.slow  # trains into run folders, resumes, interrupts

FAMILY = "qwen2_vl"


@pytest.fixture
def config(tmp_path, tiny_dir):
    """``config(name, **train)`` -> path of a YAML config training into ``tmp_path/name``."""
    data = make_demo_data(tmp_path / "data", n_train=12, n_val=2, seed=1)

    def write(name: str = "run", **train) -> str:
        path = tmp_path / f"{name}.yaml"
        path.write_text(json.dumps({
            "model": {"path": str(tiny_dir(FAMILY))},
            "data": {"train": str(data["train"])},
            "lora": {"r": 4, "dropout": 0.0},
            "train": {"output_dir": str(tmp_path / name), "max_steps": 4, "batch_size": 2, "lr": 1e-3,
                      "logging_steps": 1, "seed": 3, "progress": False, "report_to": "none", **train},
            "eval": {"at_end": False},
        }))
        return str(path)

    return write


def _files(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _steps(run_dir, key: str = "loss") -> list[int]:
    """The steps of the metrics.jsonl lines holding ``key``, in file order (a duplicate shows twice)."""
    entries = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [e["step"] for e in entries if key in e]


def _losses(run_dir) -> dict[int, float]:
    entries = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {e["step"]: e["loss"] for e in entries if "loss" in e}


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_a_second_run_into_the_folder_is_refused_before_data_or_weights_are_read(config, tmp_path, capsys,
                                                                                   monkeypatch):
    assert main(["train", config()]) == 0
    before = _files(tmp_path / "run")

    def not_now(*args, **kwargs):
        raise AssertionError("read data or weights before refusing the folder")

    for module, name in ((prepare_module, "check_dataset"), (models_module, "load_processor"),
                         (model_module, "load_model")):
        monkeypatch.setattr(module, name, not_now)
    capsys.readouterr()
    assert main(["train", config()]) == 2
    err = _error(capsys)
    assert f"train.output_dir {tmp_path / 'run'} is not empty" in err and "--resume" in err and "--overwrite" in err
    assert _files(tmp_path / "run") == before  # the first run's files, byte for byte, and no lock left behind
    assert main(["train", config(), "--resume", "--overwrite"]) == 2
    assert "--resume and --overwrite exclude each other" in _error(capsys)
    assert _files(tmp_path / "run") == before


def test_overwrite_starts_a_fresh_run_and_refuses_files_vlmtune_did_not_write(config, tmp_path, capsys):
    assert main(["train", config(save_steps=2, max_steps=4)]) == 0
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert main(["train", config(max_steps=3), "--overwrite"]) == 0
    assert not list((tmp_path / "run").glob("checkpoints/checkpoint-*"))
    assert _steps(tmp_path / "run") == [1, 2, 3]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 3

    (tmp_path / "run" / "notes.txt").write_text("mine")
    before = _files(tmp_path / "run")
    capsys.readouterr()
    assert main(["train", config(max_steps=3), "--overwrite"]) == 2
    err = _error(capsys)
    assert "holds files vlmtune did not write (notes.txt)" in err and "nothing was removed" in err
    assert _files(tmp_path / "run") == before


def test_resume_lists_changed_keys_and_refuses_those_that_break_it_unless_forced(config, tmp_path, capsys):
    assert main(["train", config(save_steps=2, max_steps=4)]) == 0
    capsys.readouterr()
    # A longer run is allowed, and said.
    assert main(["train", config(save_steps=2, max_steps=6), "--resume"]) == 0
    log = (tmp_path / "run" / "train.log").read_text()
    assert "--resume: changed since the run was trained (allowed): train.max_steps 4 -> 6" in log
    assert _steps(tmp_path / "run") == [1, 2, 3, 4, 5, 6]
    # Another batch size is not the same run: refused, naming the key, before anything is written.
    before = _files(tmp_path / "run")
    capsys.readouterr()
    assert main(["train", config(save_steps=2, max_steps=6), "train.batch_size=3", "--resume"]) == 2
    err = _error(capsys)
    assert "train.batch_size 2 -> 3" in err and "--force" in err and "max_steps" not in err
    assert _files(tmp_path / "run") == before
    assert main(["train", config(save_steps=2, max_steps=6), "train.batch_size=3", "--resume", "--force"]) == 0
    assert "continuing despite changes that break an exact resume: train.batch_size 2 -> 3" in (
        tmp_path / "run" / "train.log").read_text()


def test_resuming_an_earlier_checkpoint_logs_each_step_once_as_the_run_that_never_stopped(config, tmp_path):
    assert main(["train", config(save_steps=2, max_steps=6, save_total_limit=None)]) == 0
    straight = _losses(tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoints" / "checkpoint-2"
    assert main(["train", config(save_steps=2, max_steps=6, save_total_limit=None), "--resume",
                 str(checkpoint)]) == 0
    assert _steps(tmp_path / "run") == [1, 2, 3, 4, 5, 6]
    assert _steps(tmp_path / "run", "train_runtime") == [6]  # the closing summary of the resumed run only
    assert _losses(tmp_path / "run") == pytest.approx(straight, rel=1e-5)


def test_a_live_lock_refuses_naming_its_process_and_a_stale_one_is_taken_over(config, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    lock = run / ".vlmtune.lock"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        lock.write_text(json.dumps({"pid": other.pid, "host": socket.gethostname(), "since": "2026-01-02 03:04:05"}))
        assert main(["train", config()]) == 2
        err = _error(capsys)
        assert f"in use by another run: process {other.pid} on {socket.gethostname()}, since 2026-01-02 03:04:05" \
            in err
        assert json.loads(lock.read_text())["pid"] == other.pid  # someone else's lock stays
    finally:
        other.kill()
        other.wait()
    # Its process is gone now: the lock is stale, taken over, and released when the run ends.
    assert main(["train", config()]) == 0
    assert f"stale lock of process {other.pid} on {socket.gethostname()} (since 2026-01-02 03:04:05), which is gone; " \
        "taken over" in (run / "train.log").read_text()
    assert not lock.exists()
    assert _steps(run) == [1, 2, 3, 4]


class _CtrlCAt(TrainerCallback):
    """Sends this process SIGINT, as a Ctrl-C would, while optimizer step ``step`` runs."""

    def __init__(self, step: int):
        self.step, self.sent = step, False

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step - 1 and not self.sent:
            self.sent = True
            signal.raise_signal(signal.SIGINT)


def _ctrl_c_at(monkeypatch, step: int) -> None:
    class Interrupted(VlmTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(_CtrlCAt(step))

    monkeypatch.setattr(run_module, "VlmTrainer", Interrupted)


def test_ctrl_c_saves_the_step_prints_the_command_and_resuming_it_ends_as_the_run_that_never_stopped(
        config, tmp_path, capsys, monkeypatch):
    assert main(["train", config("straight", save_steps=4, max_steps=6)]) == 0
    path = config("run", save_steps=4, max_steps=6)
    _ctrl_c_at(monkeypatch, 3)
    capsys.readouterr()
    assert main(["train", path, "lora.alpha=16"]) == 130
    err = capsys.readouterr().err
    checkpoint = tmp_path / "run" / "checkpoints" / "checkpoint-3"
    assert f"interrupted at step 3; checkpoint saved: {checkpoint}" in err and "Traceback" not in err
    command = err.strip().splitlines()[-1]
    assert command == f"resume with: vlmtune train {shlex.quote(path)} lora.alpha=16 --resume"
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert {"adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"} <= {
        p.name for p in checkpoint.iterdir()}
    assert not (tmp_path / "run" / "adapter").exists()  # the run did not finish
    assert not (tmp_path / "run" / ".vlmtune.lock").exists()

    monkeypatch.undo()
    assert main(shlex.split(command.removeprefix("resume with: vlmtune "))) == 0
    assert _steps(tmp_path / "run") == _steps(tmp_path / "straight") == [1, 2, 3, 4, 5, 6]
    assert _losses(tmp_path / "run") == pytest.approx(_losses(tmp_path / "straight"), rel=1e-5)


def test_ctrl_c_without_checkpoints_says_nothing_was_saved(config, tmp_path, capsys, monkeypatch):
    _ctrl_c_at(monkeypatch, 2)
    assert main(["train", config()]) == 130
    err = capsys.readouterr().err
    assert "interrupted at step 2; nothing was saved (train.save_steps is not set). Set train.save_steps=N" in err
    assert not list((tmp_path / "run").glob("checkpoints/checkpoint-*"))


def test_a_checkpoint_whose_state_does_not_parse_is_skipped_for_the_one_before(config, tmp_path):
    assert main(["train", config(save_steps=2, max_steps=4, save_total_limit=None)]) == 0
    straight = _losses(tmp_path / "run")
    state = tmp_path / "run" / "checkpoints" / "checkpoint-4" / "trainer_state.json"
    state.write_text(state.read_text()[:40])  # cut short
    assert main(["train", config(save_steps=2, max_steps=4, save_total_limit=None), "--resume"]) == 0
    log = (tmp_path / "run" / "train.log").read_text()
    assert f"skipping {state.parent}: its trainer_state.json does not parse" in log
    assert f"resuming from {tmp_path / 'run' / 'checkpoints' / 'checkpoint-2'}" in log
    assert _steps(tmp_path / "run") == [1, 2, 3, 4]
    assert _losses(tmp_path / "run") == pytest.approx(straight, rel=1e-5)


def _plan_steps(run_dir) -> tuple[int, int]:
    line = next(line for line in (run_dir / "train.log").read_text().splitlines()
                if line.startswith("plan: optimizer steps: "))
    words = line.split()
    return int(words[3]), int(words[words.index("in") - 1])


@pytest.mark.parametrize("extra", [[], ["train.max_tokens_per_batch=600"]], ids=["batches", "token-budget"])
def test_the_plan_counts_the_steps_the_trainer_takes(config, tmp_path, extra):
    # 12 samples in batches of 2 are 6 batches an epoch; accumulating 4 makes ceil(6 / 4) = 2 steps an epoch.
    assert main(["train", config(max_steps=-1, epochs=3, grad_accum=4, warmup_steps=1), *extra]) == 0
    per_epoch, total = _plan_steps(tmp_path / "run")
    steps = json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"]
    assert total == steps
    assert per_epoch * 3 == steps
    if not extra:
        assert (per_epoch, total) == (2, 6)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "plan: data.train: 12 samples used, 0 dropped (of 12 records)" in log
    assert "plan: effective batch: 2 x 4 grad_accum x 1 processes = 8 samples an optimizer step" in log
    assert f"plan: outputs: {tmp_path / 'run'} (adapter/, metrics.jsonl, train.log)" in log
    assert "warm-up (" not in log


def test_the_plan_warns_when_warmup_or_logging_outlast_the_run(config, tmp_path):
    assert main(["train", config(max_steps=3, warmup_steps=5, logging_steps=10)]) == 0
    log = (tmp_path / "run" / "train.log").read_text()
    assert "plan: warm-up: 5 of 3 steps" in log
    assert "plan: warm-up (5 steps) is not shorter than the run (3 steps)" in log
    assert "plan: train.logging_steps 10 > 3 steps in total: no training loss will be logged" in log
