"""Ctrl-C while training: finish the step, save a checkpoint there (with ``train.save_steps``) and stop.

The first Ctrl-C only raises a flag; the Trainer stops at the end of the optimizer step it is in, after that step's
logging, so the checkpoint is exactly the one a scheduled save would have written and the resumed run continues as
if never stopped. A second Ctrl-C stops at once (Python's own KeyboardInterrupt). With several processes the ranks
would have to agree on the step to stop at; there Ctrl-C keeps its usual meaning and the last scheduled checkpoint
is the one to resume from.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import signal
import threading
from pathlib import Path

from transformers import TrainerCallback

log = logging.getLogger("vlmtune")


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C at ``step``. ``checkpoint``: the newest complete one (that step's, when the stop
    came at the step's end) or None; ``saves``: whether the run writes checkpoints (``train.save_steps``)."""

    def __init__(self, step: int, checkpoint: Path | None, saves: bool = True):
        self.step, self.checkpoint, self.saves = step, checkpoint, saves
        super().__init__(f"training interrupted at step {step}; "
                         + (f"checkpoint saved: {checkpoint}" if checkpoint else "nothing was saved"))


def interrupted_message(e: TrainingInterrupted, config: str, overrides: list[str]) -> str:
    """What a Ctrl-C left and the command that resumes it (the user's own config and overrides)."""
    command = "vlmtune train " + shlex.join([config, *overrides]) + " --resume"
    if e.checkpoint is not None and e.checkpoint.name == f"checkpoint-{e.step}":
        return f"vlmtune train: interrupted at step {e.step}; checkpoint saved: {e.checkpoint}\nresume with: {command}"
    if e.checkpoint is not None:
        return (f"vlmtune train: interrupted at step {e.step}, in the middle of a step; the newest checkpoint is "
                f"{e.checkpoint}\nresume from it with: {command}")
    if e.saves:
        return (f"vlmtune train: interrupted at step {e.step}, in the middle of a step, before the first checkpoint; "
                "nothing was saved")
    return (f"vlmtune train: interrupted at step {e.step}; nothing was saved (train.save_steps is not set). Set "
            "train.save_steps=N to write a checkpoint every N steps and on Ctrl-C, which --resume continues from")


class StopOnInterrupt(TrainerCallback):
    """Turns a Ctrl-C (``requested``) into a stop, and a save when the run saves checkpoints, at the step's end."""

    def __init__(self, save: bool):
        self.save = save
        self.requested = False
        self.stopped_at: int | None = None

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_training_stop = True
            control.should_save = self.save
            self.stopped_at = state.global_step
        return control

    @contextlib.contextmanager
    def catching_ctrl_c(self, enabled: bool = True):
        """While in the block, the first SIGINT sets ``requested`` instead of raising (main thread only)."""
        if not enabled or threading.current_thread() is not threading.main_thread():
            yield
            return

        def first(signum, frame):
            self.requested = True
            log.warning("Ctrl-C: stopping at the end of this step%s (Ctrl-C again to stop at once)",
                        ", saving a checkpoint there" if self.save else "")
            signal.signal(signal.SIGINT, before)

        before = signal.signal(signal.SIGINT, first)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, before)
