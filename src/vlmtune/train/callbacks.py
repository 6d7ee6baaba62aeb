"""Trainer callbacks: every log line also goes to ``metrics.jsonl`` in the run directory; checkpoints are
readable like the rest of the run."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback

from ..files import make_readable


class MetricsFile(TrainerCallback):
    """Appends each ``Trainer`` log (loss, lr, grad norm, eval loss) as one JSON line with its step."""

    def __init__(self, path: str | Path, append: bool = False):
        self.path = Path(path)
        if not append:  # a resumed run continues the file of the run it resumes
            self.path.write_text("")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")


class ReadableCheckpoints(TrainerCallback):
    """After each checkpoint save, gives its files the permissions the umask allows (safetensors writes 0600)."""

    def on_save(self, args, state, control, **kwargs):
        if args.should_save:
            make_readable(Path(args.output_dir) / f"checkpoint-{state.global_step}")
