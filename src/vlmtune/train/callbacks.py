"""Trainer callbacks: every log line also goes to ``metrics.jsonl`` in the run directory; checkpoints are
readable like the rest of the run; what the rendered-sample cache did; no rendering left running after training."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from transformers import TrainerCallback

from ..data.cache import CachedRenderer
from ..data.prefetch import Prefetcher
from ..files import make_readable

log = logging.getLogger("vlmtune")


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


class CacheSummary(TrainerCallback):
    """At the end of training, logs how many samples the rendered-sample cache served and how many were rendered."""

    def __init__(self, cache: CachedRenderer):
        self.cache = cache

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            log.info("data cache %s: %d samples read, %d rendered", self.cache.root, self.cache.hits,
                     self.cache.misses)


class DrainPrefetch(TrainerCallback):
    """At the end of training, waits for batches rendered ahead that training no longer asks for (a run ending at
    ``max_steps`` mid-epoch), so that nothing renders in the background during the held-out evaluation."""

    def __init__(self, prefetcher: Prefetcher):
        self.prefetcher = prefetcher

    def on_train_end(self, args, state, control, **kwargs):
        self.prefetcher.drain()
