"""Checkpoints a run can resume from.

The Trainer writes ``checkpoint-N/`` with ``trainer_state.json`` last, after weights, optimizer, scheduler and
RNG states, and only then deletes older checkpoints: a checkpoint counts as complete once that file exists,
so a run killed while saving resumes from the previous complete one, never from a half-written folder.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

log = logging.getLogger("vlmtune")

COMPLETE_MARKER = "trainer_state.json"
_STEP = re.compile(r"^checkpoint-(\d+)$")


def checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints in ``folder``, oldest first."""
    found = [(int(m.group(1)), p) for p in folder.glob("checkpoint-*")
             if (m := _STEP.match(p.name)) and (p / COMPLETE_MARKER).is_file()]
    return [p for _, p in sorted(found)]


def resolve_resume(resume: str | None, folder: Path) -> Path | None:
    """The checkpoint to resume from: ``auto`` = the newest complete one in ``folder`` (None when there is none),
    or an explicit path, which must be a complete checkpoint."""
    if resume is None:
        return None
    if resume != "auto":
        path = Path(resume)
        if not (path / COMPLETE_MARKER).is_file():
            raise FileNotFoundError(f"--resume {resume}: not a complete checkpoint (no {COMPLETE_MARKER}); "
                                    f"complete ones in {folder}: {[p.name for p in checkpoints(folder)] or 'none'}")
        return path
    for partial in folder.glob("checkpoint-*"):
        if partial.is_dir() and not (partial / COMPLETE_MARKER).is_file():
            log.warning("removing %s: its save did not finish", partial)
            shutil.rmtree(partial)
    found = checkpoints(folder)
    if not found:
        log.warning("--resume auto: no checkpoint in %s yet; starting from the beginning", folder)
        return None
    return found[-1]
