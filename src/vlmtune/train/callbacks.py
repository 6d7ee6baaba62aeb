"""Trainer callbacks: every log line also goes to ``metrics.jsonl`` in the run directory."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback


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
