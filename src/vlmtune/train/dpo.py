"""Preference tuning (``train.stage: dpo``) on TRL's DPOTrainer.

The pairs are rendered by vlmtune's Renderer (the processor's own chat template and image processing, labels on
the answer and its end-of-turn token, never truncated) and handed to DPOTrainer ready batched
(:class:`~vlmtune.data.preference.PreferenceCollator`); the model, the arguments and the callbacks are the run's
own, so the run folder, resuming, TensorBoard, the frozen components and the held-out evaluation are those of
supervised training.
"""

from __future__ import annotations

import dataclasses
import functools
import logging

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from ..config import Config
from ..core.errors import ConfigError
from ..data.preference import PreferenceCollator, pair_datasets
from ..models import load_model, resolve_dtype
from .prepare import Prepared
from .trainer_inputs import data_cache

log = logging.getLogger("vlmtune")


def dpo_trainer(cfg: Config, data: Prepared, model: torch.nn.Module, args: TrainingArguments,
                callbacks: list[TrainerCallback]) -> Trainer:
    """TRL's DPOTrainer over the run's model, with ``args`` (the run's TrainingArguments) carried over into a
    DPOConfig and ``cfg.dpo``'s loss settings.

    The reference model: with LoRA, the model with its adapters switched off, or (``dpo.reference: start`` with
    ``model.adapter``) a frozen copy of the adapter the run starts from; in full fine-tuning a second, frozen copy
    of the checkpoint.
    """
    try:
        from trl import DPOConfig
    except ImportError:
        raise ConfigError("train.stage dpo needs TRL: pip install 'vlmtune[rl]'") from None
    dpo_args = DPOConfig(**_values(args), beta=cfg.dpo.beta, loss_type=[cfg.dpo.loss_type],
                         label_smoothing=cfg.dpo.label_smoothing, max_length=None, precompute_ref_log_probs=False)
    encoder = data_cache(cfg, data.renderer) or data.renderer
    # One collator serves both splits (the Trainer has one): the validation pairs come after the training ones.
    chosen, rejected = pair_datasets([*data.train_samples, *data.val_samples], encoder, cfg.data.cache_in_memory)
    collator = PreferenceCollator(chosen, rejected, data.processor.tokenizer.pad_token_id)
    train_ds = _rows(data.train_samples, 0)
    val_ds = _rows(data.val_samples, len(data.train_samples)) if data.val_samples else None
    ref_model = _full_reference(cfg) if not cfg.train.method.trains_adapter else None
    trainer = _trainer_class()(model=model, ref_model=ref_model, args=dpo_args, data_collator=collator,
                               train_dataset=train_ds, eval_dataset=val_ds, processing_class=data.processor,
                               callbacks=callbacks)
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    peft_config = getattr(unwrapped, "peft_config", {})
    # TRL keeps a frozen copy ("ref") of an adapter the model arrives with. A new adapter is zero, so switching
    # adapters off gives the same reference without the copy; dpo.reference base asks for that reference anyway.
    if "ref" in peft_config and (not cfg.model.adapter or cfg.dpo.reference == "base"):
        unwrapped.delete_adapter("ref")
    if "ref" in peft_config:
        log.info("DPO reference: the model as the run starts (a frozen copy of the adapter in %s)",
                 cfg.model.adapter)
    else:
        log.info("DPO reference: the base checkpoint (%s)",
                 "adapters switched off" if peft_config else "a second, frozen copy")
    return trainer


def _values(args: TrainingArguments) -> dict:
    """The run's TrainingArguments as keyword arguments, to build a DPOConfig (a subclass) from the same values:
    TRL's own defaults (gradient checkpointing on, bf16) never apply."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}


def _rows(samples: list, first: int):
    """The rows TRL's trainer iterates: each pair's index into the collator's pairs, and its image paths, which
    tell TRL the data is a vision dataset, so that it leaves the rows to the collator untouched."""
    from datasets import Dataset

    return Dataset.from_dict({"index": list(range(first, first + len(samples))),
                              "images": [[str(p) for p in s.images] for s in samples]})


def _full_reference(cfg: Config) -> torch.nn.Module:
    """A frozen copy of the checkpoint for full fine-tuning, loaded the way the run's model was."""
    reference = load_model(cfg.model.path, resolve_dtype(cfg.model.dtype)).eval()
    reference.requires_grad_(False)
    return reference


@functools.cache
def _trainer_class() -> type[Trainer]:
    """DPOTrainer with the one override a run needs; built on first use, as TRL is an optional dependency."""
    from trl import DPOTrainer

    class DpoTrainer(DPOTrainer):
        def _save(self, output_dir: str | None = None, state_dict=None):
            # PEFT saves every adapter of the model: the frozen reference copy stays out of the run's weights.
            peft_config = getattr(self.accelerator.unwrap_model(self.model), "peft_config", {})
            reference = peft_config.pop("ref", None)
            try:
                super()._save(output_dir, state_dict)
            finally:
                if reference is not None:
                    peft_config["ref"] = reference

    return DpoTrainer

