"""The run folder (``train.output_dir``) belongs to one run at a time.

A folder that already holds a run is refused unless the user says what to do with it: ``--resume`` continues it,
``--overwrite`` replaces it. Overwriting removes only what vlmtune writes there; a file vlmtune did not write stops
the overwrite, named, so nothing the user kept in the folder is lost. A lock file keeps a second run out while one
trains. Only the main process of a data-parallel launch (RANK 0) does any of this: the other ranks start when the
main one has already written its first files, and must not take those for an earlier run.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path

from ..core.errors import ConfigError

log = logging.getLogger("vlmtune")

LOCK_NAME = ".vlmtune.lock"
# Every name `vlmtune train` (and `vlmtune demo`) writes directly under the run folder; folders count as a whole.
WRITTEN = ("config.yaml", "train.log", "metrics.jsonl", "metrics.json", "loss.png", "checkpoints", "adapter",
           "model", "eval", "tensorboard", "samples.rank*.jsonl", "demo_scores.json", LOCK_NAME, "cache")
KEPT = ("cache",)
"""Kept by ``--overwrite``: the rendered-sample cache (``data.cache_dir: auto``) is keyed by everything its entries
depend on, so the new run reads what still applies and renders the rest."""


def is_main_process() -> bool:
    """Whether this process owns the run folder: the only one, or rank 0 of a data-parallel launch."""
    return int(os.environ.get("RANK", "0")) == 0


def written_by_vlmtune(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in WRITTEN)


def prepare(run_dir: Path, resume: str | None, overwrite: bool) -> None:
    """Refuse a folder holding a run unless ``resume`` or ``overwrite``; with ``overwrite``, empty it of what
    vlmtune wrote (refusing, by name, files it did not write). Call with the lock held, before anything loads."""
    if resume is not None and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other: continue the run or replace it")
    present = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_NAME) if run_dir.is_dir() else []
    if not present or resume is not None:
        return
    if not overwrite:
        shown = ", ".join(present[:5]) + (", ..." if len(present) > 5 else "")
        raise ConfigError(f"train.output_dir {run_dir} is not empty ({shown}): pass --resume to continue the run "
                          "there or --overwrite to replace it, or choose another train.output_dir")
    foreign = [name for name in present if not written_by_vlmtune(name)]
    if foreign:
        raise ConfigError(f"--overwrite: {run_dir} holds files vlmtune did not write ({', '.join(foreign)}); "
                          "move them away or choose another train.output_dir, nothing was removed")
    removed = [name for name in present if name not in KEPT]
    for name in removed:
        path = run_dir / name
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    log.info("--overwrite: removed the previous run in %s (%s)", run_dir, ", ".join(removed))


def cut_metrics(run_dir: Path, step: int) -> None:
    """Drop the log lines written after checkpoint ``step`` (and the finished run's closing summary at it), so a
    run resumed there logs each step once. The per-process sample traces are cut the same way."""
    for path in [run_dir / "metrics.jsonl", *sorted(run_dir.glob("samples.rank*.jsonl"))]:
        if not path.is_file():
            continue
        lines = path.read_text().splitlines()
        kept = [line for line in lines if _before(line, step)]
        if len(kept) < len(lines):
            path.write_text("".join(line + "\n" for line in kept))
            log.info("%s: removed %d lines logged after step %d, where the run resumes", path.name,
                     len(lines) - len(kept), step)


def _before(line: str, step: int) -> bool:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError:
        return False  # a line cut short when the run was killed
    logged = entry.get("step", 0)
    return logged < step or (logged == step and "train_runtime" not in entry)


class RunLock:
    """``RUN/.vlmtune.lock`` while a run trains there: who holds it (pid, host) and since when. A lock whose
    process is gone from this host is stale and taken over with a warning; one from another host is refused,
    since its process cannot be checked from here."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK_NAME
        self.held = False

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise ConfigError(f"{self.path}: could not take the run folder's lock")

    def _take_over_if_stale(self) -> None:
        try:
            holder = json.loads(self.path.read_text())
            pid, host, since = int(holder["pid"]), str(holder["host"]), str(holder.get("since", "?"))
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("%s: unreadable lock file, taken over", self.path)
            self.path.unlink(missing_ok=True)
            return
        if host == socket.gethostname() and not _alive(pid):
            log.warning("%s: stale lock of process %d on %s (since %s), which is gone; taken over", self.path, pid,
                        host, since)
            self.path.unlink(missing_ok=True)
            return
        raise ConfigError(f"{self.path.parent} is in use by another run: process {pid} on {host}, since {since}. "
                          f"Wait for it to end, or delete {self.path} if no run uses the folder")

    def __exit__(self, *exc) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
