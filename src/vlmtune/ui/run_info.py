"""What the Runs tab shows of a run folder, read from the files ``vlmtune train`` writes there: no gradio here.

A run folder is one holding ``config.yaml``. Its state comes from the lock file (held while it trains), the final
``metrics.json`` (written when it finished) and, otherwise, neither: it stopped before its end (Ctrl-C, an error,
a killed process). The step comes from ``metrics.jsonl``, the total from the plan line the run logs in
``train.log`` before its first step.
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from ..evaluate.report import read_losses
from ..train.run_folder import LOCK_NAME

RUNNING, FINISHED, INTERRUPTED = "running", "finished", "interrupted"
# The plan line of train/run_plan.py: "optimizer steps: 4 an epoch (...), 6 in total over 2 epoch(s)".
_TOTAL = re.compile(r"plan: optimizer steps: .*?, (\d+) in total over ")
# A run's own sub-folders, never searched for further runs.
_INSIDE_RUN = ("adapter", "model", "checkpoints", "eval", "tensorboard")


@dataclass(frozen=True)
class Progress:
    """Where a run is: ``state`` (running | finished | interrupted), the last logged ``step`` and the run's
    ``total`` optimizer steps (None where the run has not logged its plan yet)."""

    state: str
    step: int
    total: int | None

    def __str__(self) -> str:
        of = f" of {self.total}" if self.total else ""
        share = f" ({100 * self.step / self.total:.0f}%)" if self.total else ""
        return f"{self.state}: step {self.step}{of}{share}"


def find_runs(root: str | Path) -> list[Path]:
    """Every run folder under ``root`` (``root`` itself included), newest first (by its config.yaml's time)."""
    root = Path(root)
    found: list[Path] = []
    if not root.is_dir():
        return found
    for folder, subfolders, files in os.walk(root):
        if "config.yaml" in files:
            found.append(Path(folder))
            subfolders[:] = [d for d in subfolders if d not in _INSIDE_RUN]
    return sorted(found, key=lambda p: ((p / "config.yaml").stat().st_mtime, str(p)), reverse=True)


def run_name(root: str | Path, run: Path) -> str:
    """The run's name in the UI: its path under ``root`` (``.`` for ``root`` itself)."""
    return Path(run).relative_to(root).as_posix()


def loss_points(run: str | Path) -> list[tuple[float, float, str]]:
    """``(step, loss, series)`` of every logged loss, series ``training`` then ``validation``, as plotted."""
    train, val = read_losses(Path(run) / "metrics.jsonl")
    return [(step, loss, "training") for step, loss in train] + [(step, loss, "validation") for step, loss in val]


def progress(run: str | Path) -> Progress:
    """The run's state, last logged step and total steps (see the module's docstring)."""
    run = Path(run)
    final = _json(run / "metrics.json")
    steps = [entry["step"] for entry in _jsonl(run / "metrics.jsonl") if isinstance(entry.get("step"), int)]
    step = max(steps, default=0)
    total = total_steps(run)
    if _locked(run):
        return Progress(RUNNING, step, total)
    if isinstance(final, dict) and isinstance(final.get("steps"), int):
        return Progress(FINISHED, final["steps"], total or final["steps"])
    return Progress(INTERRUPTED, step, total)


def total_steps(run: str | Path) -> int | None:
    """The total optimizer steps of the run's last start (a resumed run logs its plan again), from train.log."""
    try:
        text = (Path(run) / "train.log").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    found = _TOTAL.findall(text)
    return int(found[-1]) if found else None


def eval_rows(run: str | Path) -> list[list]:
    """``[metric, base, tuned, n]`` of the run's held-out evaluation (``eval/metrics.json``); none without one."""
    metrics = _json(Path(run) / "eval" / "metrics.json")
    table = metrics.get("metrics") if isinstance(metrics, dict) else None
    if not isinstance(table, dict):
        return []
    return [[name, values.get("base"), values.get("tuned"), values.get("n", metrics.get("n"))]
            for name, values in table.items() if isinstance(values, dict)]


def report_path(run: str | Path) -> Path | None:
    """The run's ``eval/report.html``, where it has one."""
    path = Path(run) / "eval" / "report.html"
    return path if path.is_file() else None


def _locked(run: Path) -> bool:
    """Whether a live process holds the run's lock (one on another host counts: it cannot be checked here)."""
    holder = _json(run / LOCK_NAME)
    if holder is None:
        return (run / LOCK_NAME).exists()  # being written this instant
    try:
        pid, host = int(holder["pid"]), str(holder["host"])
    except (KeyError, TypeError, ValueError):
        return True
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False  # a killed run leaves its lock behind
    except PermissionError:
        return True
    return True


def _json(path: Path) -> object | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _jsonl(path: Path) -> list[dict]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:  # a run killed mid-write leaves a partial last line
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries
