"""transformers' TrainingArguments from the run config: the schedule, the validation and checkpoint cadence, the
precision and the machine's defaults (optimizer, TF32, CPU), and the integrations to log to."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import TrainingArguments

from ..config import Config
from ..models import resolve_dtype
from ..models.kernels import use_liger_kernels

log = logging.getLogger("vlmtune")


def training_arguments(cfg: Config, run_dir: Path, has_val: bool) -> TrainingArguments:
    """transformers' TrainingArguments for ``cfg``. With ``train.eval_epochs``, ``eval_steps`` holds a stand-in
    that :class:`VlmTrainer` replaces once the steps of an epoch are known."""
    t = cfg.train
    dtype = resolve_dtype(cfg.model.dtype) if t.autocast else None
    evaluate_every = has_val and (t.eval_steps is not None or t.eval_epochs is not None)
    eval_steps = t.eval_steps or t.save_steps or 1
    return TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio if t.warmup_ratio is not None else t.warmup_steps,  # a float < 1 is a ratio
        lr_scheduler_type=t.scheduler,
        max_grad_norm=t.max_grad_norm,
        eval_strategy="steps" if evaluate_every else "no",
        eval_steps=eval_steps if evaluate_every else None,
        logging_steps=t.logging_steps,
        save_strategy="steps" if t.save_steps else "no",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=bool(t.save_steps and evaluate_every),
        metric_for_best_model=f"eval_{t.best_by}" if t.save_steps and evaluate_every else None,
        greater_is_better=t.best_by != "loss",
        activation_checkpointing=t.gradient_checkpointing,  # transformers 5's name for gradient checkpointing
        activation_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        optim=_optimizer(t.optimizer),
        seed=t.seed,
        data_seed=t.seed,
        tf32=_tf32(t.tf32),
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=False,  # the collator needs pixel_values, image_grid_thw, mm_token_type_ids
        report_to=report_to(t.report_to),
        disable_tqdm=not t.progress,
        dataloader_num_workers=t.dataloader_workers,
        dataloader_persistent_workers=t.dataloader_workers > 0,  # workers keep what they cached between epochs
        use_liger_kernel=use_liger_kernels(),
        torch_compile=t.compile,
    )


def report_to(setting: list[str] | str) -> list[str]:
    """transformers integrations to log to: the requested ones that are installed (auto: TensorBoard)."""
    from transformers.integrations import get_available_reporting_integrations

    if setting == "none":
        return []
    available = set(get_available_reporting_integrations())
    if setting == "auto":
        if "tensorboard" not in available:
            log.info("no TensorBoard logs: tensorboard is not installed (pip install 'vlmtune[track]')")
        return ["tensorboard"] if "tensorboard" in available else []
    for name in setting:
        if name not in available:
            log.warning("train.report_to: %s is not installed; not logging to it", name)
    return [name for name in setting if name in available]


def _optimizer(name: str) -> str:
    if name == "auto":
        return "adamw_torch_fused" if torch.cuda.is_available() else "adamw_torch"
    return name


def _tf32(setting: bool | None) -> bool | None:
    if setting and not torch.cuda.is_available():
        log.warning("train.tf32: no CUDA GPU here, so TF32 matmuls do not apply; training in plain fp32")
        return None
    return setting
