"""Training over transformers' Trainer: LoRA or full fine-tuning, run directory, metrics."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .finish import RunResult
    from .lora import apply_lora, language_lora_modules, parameter_table, prepare_full
    from .model import build_model
    from .run import train

# Loaded on first use: the data and prediction commands import :mod:`.prepare` without the Trainer and PEFT.
_LAZY = {"RunResult": ".finish", "apply_lora": ".lora", "build_model": ".model", "language_lora_modules": ".lora",
         "parameter_table": ".lora", "prepare_full": ".lora", "train": ".run"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "RunResult", "apply_lora", "build_model", "language_lora_modules", "parameter_table", "prepare_full", "train",
]
