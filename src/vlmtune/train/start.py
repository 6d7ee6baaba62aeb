"""A run takes its folder: the lock, the folder and resume checks, ``config.yaml`` and ``train.log``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from ..config import Config, dump_config
from . import run_folder
from .checkpoints import checkpoint_step, resolve_resume
from .logs import held_back, train_log
from .resume_check import check_resume


@contextlib.contextmanager
def started_run(cfg: Config, run_dir: Path, resume: str | None, overwrite: bool, force: bool
                ) -> Iterator[Path | None]:
    """Hold ``run_dir`` for the run in the block and yield the checkpoint it resumes from (None: a new run).

    One run per folder: only the main process checks it and holds the lock (the others see its files). A changed
    config key that breaks an exact resume is refused unless ``force``; a resumed run's logs are cut back to its
    checkpoint and its train.log continues.
    """
    main_process = run_folder.is_main_process()
    with held_back() as early, run_folder.RunLock(run_dir) if main_process else contextlib.nullcontext():
        if main_process:
            run_folder.prepare(run_dir, resume, overwrite)
        checkpoint = resolve_resume(resume, run_dir / "checkpoints")
        if main_process and checkpoint is not None:
            check_resume(checkpoint.parent.parent / "config.yaml", cfg, force)
            run_folder.cut_metrics(run_dir, checkpoint_step(checkpoint))
        run_dir.mkdir(parents=True, exist_ok=True)
        if main_process:
            dump_config(cfg, run_dir / "config.yaml")
        # One log file per run: data-parallel workers (RANK > 0) log to their console only.
        with train_log(run_dir / "train.log" if main_process else None, checkpoint is not None, early):
            yield checkpoint
