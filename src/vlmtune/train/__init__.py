"""Training over transformers' Trainer: LoRA or full fine-tuning, run directory, metrics."""

from .lora import apply_lora, language_lora_modules, parameter_table, prepare_full
from .run import RunResult, build_model, train

__all__ = [
    "RunResult", "apply_lora", "build_model", "language_lora_modules", "parameter_table", "prepare_full", "train",
]
