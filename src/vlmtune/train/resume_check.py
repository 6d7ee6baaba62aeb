"""What changed between the run being resumed and the config it is resumed with.

A checkpoint continues exactly only under the settings it was trained with: the same weights and adapters, the same
samples in the same order and batches (data position is a count of batches), the same optimizer, schedule and
numerics. Changing any of those under ``--resume`` silently mixes two runs, so it is refused unless ``--force``.
The keys in :data:`HARMLESS` change where or how often things are logged, validated or saved, how fast data is
prepared, or how long the run goes on; they do not change the steps already planned, and are listed and allowed.
Every other key, including any added later, counts as breaking: refusing by mistake costs a ``--force``, allowing
by mistake costs a run that cannot be reproduced.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainerCallback

from ..config import Config
from ..core.errors import ConfigError

log = logging.getLogger("vlmtune")

HARMLESS = (
    "train.output_dir",  # resuming another folder's checkpoint into this one
    "train.epochs", "train.max_steps",  # a longer (or shorter) run; the schedule is recomputed for the new length
    "train.logging_steps", "train.progress", "train.report_to", "train.trace_samples",
    "train.eval_steps", "train.eval_epochs", "train.save_steps", "train.save_total_limit",
    "train.early_stopping_patience",
    "train.dataloader_workers", "train.gradient_checkpointing", "train.compile",  # same numbers, other speed/memory
    "data.val",  # validation only: the training steps stay the same
    "data.cache_in_memory", "data.cache_dir", "data.prefetch",
    "eval.",
)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``; lists and other leaves stay whole."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def changed_keys(saved: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (old, new) for every value that differs (absent on one side: ``None``)."""
    old, now = flatten(saved), flatten(new)
    return {key: (old.get(key), now.get(key)) for key in sorted(old.keys() | now.keys())
            if old.get(key) != now.get(key)}


def is_harmless(key: str) -> bool:
    return any(key == h or (h.endswith(".") and key.startswith(h)) for h in HARMLESS)


def check_resume(saved_config: Path, cfg: Config, force: bool) -> None:
    """Log every key that changed since the run at ``saved_config`` was trained; refuse, naming them, changes
    that break an exact resume unless ``force``."""
    if not saved_config.is_file():
        log.warning("--resume: no %s to compare the config with; continuing with the config given", saved_config)
        return
    saved = yaml.safe_load(saved_config.read_text()) or {}
    changes = changed_keys(saved, cfg.model_dump(mode="json"))
    breaking = [key for key in changes if not is_harmless(key)]

    def shown(keys) -> str:
        return "; ".join(f"{key} {changes[key][0]!r} -> {changes[key][1]!r}" for key in keys)

    if breaking and not force:
        raise ConfigError(f"--resume: changed since the run was trained, so it would not continue exactly: "
                          f"{shown(breaking)}. Restore them, or pass --force to resume anyway")
    if breaking:
        log.warning("--resume --force: continuing despite changes that break an exact resume: %s", shown(breaking))
    allowed = [key for key in changes if is_harmless(key)]
    if allowed:
        log.info("--resume: changed since the run was trained (allowed): %s", shown(allowed))


class CurrentIntervals(TrainerCallback):
    """The logging, validation and saving intervals of this config, also on a resumed run: the Trainer otherwise
    keeps those stored in the checkpoint's state, so a changed ``train.logging_steps`` would silently not apply."""

    def on_train_begin(self, args, state, control, **kwargs):
        state.compute_steps(args, state.max_steps)
