"""What the Runs tab reads of a run folder (list, loss points, progress, evaluation), the Data tab's marked spans,
the Train tab's command, and ``vlmtune ui`` without gradio: plain functions, no server."""

import json
import os
import socket
import sys
from pathlib import Path

import pytest

from vlmtune.cli.main import main
from vlmtune.config import Config, DataConfig, ModelConfig, TrainConfig
from vlmtune.data.check import CheckReport
from vlmtune.train.run_plan import Plan, plan_lines
from vlmtune.ui import run_info

LOG = [{"step": 1, "epoch": 0.1, "loss": 2.5}, {"step": 2, "epoch": 0.2, "loss": 2.25},
       {"step": 2, "epoch": 0.2, "eval_loss": 2.4}, {"step": 3, "epoch": 0.3, "loss": 2.0}]


def _plan_line(tmp_path: Path, total: int) -> str:
    """The plan line a run logs in train.log, made by the run's own code."""
    cfg = Config(model=ModelConfig(path="m"), data=DataConfig(train="t.jsonl"), train=TrainConfig(output_dir="r"))
    report = CheckReport(source="t.jsonl", format="messages", records=8)
    facts, _ = plan_lines(cfg, Plan(4, 4, total, 2, 0, 1), report, None, "float32", "cpu", tmp_path, tmp_path)
    return "\n".join(f"plan: {line}" for line in facts)


def _run(folder: Path, log: list[dict] = LOG, total: int | None = 8, tail: str = "") -> Path:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("model:\n  path: m\n")
    (folder / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log) + tail)
    if total is not None:
        (folder / "train.log").write_text("data.train: 8 samples\n" + _plan_line(folder, total) + "\n")
    return folder


def test_find_runs_lists_run_folders_newest_first_and_not_inside_a_run(tmp_path):
    old, new = _run(tmp_path / "old"), _run(tmp_path / "group" / "new")
    os.utime(old / "config.yaml", (1_000, 1_000))
    (new / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (new / "checkpoints" / "checkpoint-2" / "config.yaml").write_text("not a run\n")
    (tmp_path / "notes").mkdir()
    assert run_info.find_runs(tmp_path) == [new, old]
    assert [run_info.run_name(tmp_path, r) for r in run_info.find_runs(tmp_path)] == ["group/new", "old"]
    assert run_info.find_runs(tmp_path / "missing") == []


def test_loss_points_are_the_logged_losses_and_skip_a_cut_line(tmp_path):
    run = _run(tmp_path / "r", tail='{"step": 4, "lo')
    assert run_info.loss_points(run) == [(1, 2.5, "training"), (2, 2.25, "training"), (3, 2.0, "training"),
                                         (2, 2.4, "validation")]


def test_progress_of_a_running_run_reads_the_lock_the_log_and_the_plan(tmp_path):
    run = _run(tmp_path / "r", tail='{"step": 4, "lo')
    (run / ".vlmtune.lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    progress = run_info.progress(run)
    assert progress == run_info.Progress("running", 3, 8)
    assert str(progress) == "running: step 3 of 8 (38%)"


def test_progress_of_a_finished_and_of_a_stopped_run(tmp_path):
    finished = _run(tmp_path / "done")
    (finished / "metrics.json").write_text(json.dumps({"train_loss": 2.2, "steps": 8}))
    assert run_info.progress(finished) == run_info.Progress("finished", 8, 8)

    stopped = _run(tmp_path / "stopped", total=None)
    assert run_info.progress(stopped) == run_info.Progress("interrupted", 3, None)
    assert str(run_info.progress(stopped)) == "interrupted: step 3"

    # A killed run leaves its lock behind: a process that is gone does not make it running.
    killed = _run(tmp_path / "killed")
    gone = _exited_pid()
    (killed / ".vlmtune.lock").write_text(json.dumps({"pid": gone, "host": socket.gethostname()}))
    assert run_info.progress(killed) == run_info.Progress("interrupted", 3, 8)


def _exited_pid() -> int:
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_total_steps_takes_the_last_plan_of_a_resumed_run(tmp_path):
    run = _run(tmp_path / "r", total=8)
    with open(run / "train.log", "a") as f:
        f.write("resuming from checkpoint-4\n" + _plan_line(run, 12) + "\n")
    assert run_info.total_steps(run) == 12


def test_eval_rows_and_report(tmp_path):
    run = _run(tmp_path / "r")
    assert run_info.eval_rows(run) == [] and run_info.report_path(run) is None
    (run / "eval").mkdir()
    (run / "eval" / "metrics.json").write_text(json.dumps({"n": 4, "metrics": {
        "exact_match": {"base": 0.25, "tuned": 0.75, "n": 4}, "anls": {"tuned": 0.5}}}))
    (run / "eval" / "report.html").write_text("<html></html>")
    assert run_info.eval_rows(run) == [["exact_match", 0.25, 0.75, 4], ["anls", None, 0.5, 4]]
    assert run_info.report_path(run) == run / "eval" / "report.html"


def test_data_spans_split_the_trained_marks():
    pytest.importorskip("gradio")
    from vlmtune.ui.data import data_args, spans

    assert spans("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n[[red<|im_end|>]]") == [
        ("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", None), ("red<|im_end|>", "trained")]
    assert spans("[[a]]b[[c]]") == [("a", "trained"), ("b", None), ("c", "trained")]
    assert data_args("d.jsonl", "", " m ", "llava", "data.max_length=64") == [
        "data", "check", "d.jsonl", "--model", "m", "--format", "llava", "data.max_length=64"]


def test_train_command_is_the_cli():
    pytest.importorskip("gradio")
    from vlmtune.ui.train import train_command

    assert train_command(" c.yaml ", "train.lr=1e-4 'data.system=Answer briefly.'") == [
        sys.executable, "-m", "vlmtune.cli.main", "train", "c.yaml", "train.lr=1e-4", "data.system=Answer briefly."]


def test_ui_without_gradio_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # makes `import gradio` raise ImportError
    assert main(["ui", "--runs", "nowhere"]) == 2
    err = capsys.readouterr().err
    assert err == "vlmtune ui: error: the web UI needs gradio: pip install 'vlmtune[ui]'\n"


def test_data_tab_errors_are_one_line_naming_the_file_or_key(tmp_path):
    pytest.importorskip("gradio")
    from vlmtune.ui.data import check

    missing = tmp_path / "missing.jsonl"
    assert check(str(missing), "", "", "auto", "", 2) == (f"error: {missing}: no such data file", [], [], "")
    data = tmp_path / "d.jsonl"
    data.write_text('{"messages": []}\n')
    summary = check(str(data), "", "", "auto", "data.nope=1", 2)[0]
    assert summary.startswith("error: ") and "data.nope: unknown key" in summary


def test_ui_with_a_missing_adapter_is_one_line(tmp_path, capsys):
    pytest.importorskip("gradio")
    missing = tmp_path / "nowhere"
    assert main(["ui", "--adapter", f"tuned={missing}"]) == 2
    assert capsys.readouterr().err == f"vlmtune ui: error: adapter 'tuned': folder not found: {missing}\n"
