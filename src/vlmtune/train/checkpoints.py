"""Checkpoints a run can resume from.

The Trainer writes ``checkpoint-N/`` with ``trainer_state.json`` last, after weights, optimizer, scheduler and
RNG states, and only then deletes older checkpoints: a checkpoint counts as complete once that file exists,
so a run killed while saving resumes from the previous complete one, never from a half-written folder. A
``trainer_state.json`` that does not parse (a disk that filled up, a copy cut short) makes its checkpoint unusable:
it is skipped, with a warning, for the previous one.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

log = logging.getLogger("vlmtune")

COMPLETE_MARKER = "trainer_state.json"
_STEP = re.compile(r"^checkpoint-(\d+)$")


def checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints in ``folder``, oldest first (one whose state file does not parse is left out)."""
    found = [(int(m.group(1)), p) for p in folder.glob("checkpoint-*")
             if (m := _STEP.match(p.name)) and (p / COMPLETE_MARKER).is_file()]
    return [p for _, p in sorted(found) if readable_state(p)]


def readable_state(checkpoint: Path) -> bool:
    """Whether the checkpoint's ``trainer_state.json`` parses as a JSON object; warns naming it when not."""
    try:
        state = json.loads((checkpoint / COMPLETE_MARKER).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        log.warning("skipping %s: its %s does not parse (%s)", checkpoint, COMPLETE_MARKER, e)
        return False
    if not isinstance(state, dict):
        log.warning("skipping %s: its %s is not a JSON object", checkpoint, COMPLETE_MARKER)
        return False
    return True


def checkpoint_step(checkpoint: Path) -> int:
    """The optimizer step a checkpoint was saved at (its ``trainer_state.json``, else its folder name)."""
    try:
        return int(json.loads((checkpoint / COMPLETE_MARKER).read_text())["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        m = _STEP.match(checkpoint.name)
        return int(m.group(1)) if m else 0


def resolve_resume(resume: str | None, folder: Path) -> Path | None:
    """The checkpoint to resume from: ``auto`` = the newest complete one in ``folder`` (None when there is none),
    or an explicit path, which must be a complete checkpoint."""
    if resume is None:
        return None
    if resume != "auto":
        path = Path(resume)
        if not (path / COMPLETE_MARKER).is_file() or not readable_state(path):
            raise FileNotFoundError(f"--resume {resume}: not a complete checkpoint (no readable {COMPLETE_MARKER}); "
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
