"""transformers' Trainer with the few things a VLM run needs on top: the ids of each batch's samples (named when
the loss stops being finite), tokens per second in the logs, an optional per-process trace of batches, batches
grouped by length (``sampler``), optionally rendered ahead in a background thread (``data.prefetch``), and logits only
where a label is (``logits``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from transformers import Trainer
from transformers.loss.loss_utils import ForCausalLMLoss

from ..core.errors import ConfigError
from ..data.cache import CachedRenderer
from ..data.collate import SAMPLE_IDS
from .callbacks import CacheSummary, DrainPrefetch
from .logits import accepts_logits_to_keep, answer_logits_only
from .sampler import LengthGroupedBatchSampler, SamplerEpoch, grouped_dataloader


def causal_lm_loss(outputs, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None
                   ) -> torch.Tensor:
    """Next-token cross-entropy summed over label tokens and divided by the label tokens of the whole optimizer
    step (all micro-batches, all processes) when the Trainer gives that count.

    Computed here rather than by the model because VLM classes differ: some (Qwen2.5-VL, Qwen3-VL) average
    per micro-batch, which weighs a short answer in a small batch like a long one under gradient accumulation
    or data parallelism. With this, every family trains on the per-token mean of the full batch.
    """
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    return ForCausalLMLoss(logits, labels, vocab_size=logits.shape[-1], num_items_in_batch=num_items_in_batch)


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, step: int, value: float, sample_ids: list[str]):
        self.step, self.value, self.sample_ids = step, value, sample_ids
        shown = ", ".join(sample_ids[:8]) + (" ..." if len(sample_ids) > 8 else "")
        super().__init__(f"training loss is {value} at step {step}; the batch held {shown}")


class VlmTrainer(Trainer):
    def __init__(self, *args, trace_file: Path | None = None, train_lengths: Sequence[int] | None = None,
                 max_tokens_per_batch: int | None = None, packed: bool = False, eval_epochs: int | None = None,
                 score_generations: Callable[[torch.nn.Module], dict[str, float]] | None = None,
                 render_ahead: bool = False, **kwargs):
        """``train_lengths`` (tokens of each training sample, visual included): batches grouped by length, of
        ``per_device_train_batch_size`` samples or up to ``max_tokens_per_batch`` tokens (see ``sampler``);
        ``packed``: batches are packed into one row, so the budget counts their tokens without padding.
        ``render_ahead``: render the next batches of the plan in a background thread (grouped batches, no
        DataLoader workers; see :func:`.trainer_inputs.render_ahead`).
        ``eval_epochs``: validate every that many epochs (``args.eval_steps`` is set once an epoch's steps are
        known). ``score_generations``: metrics of the model's generated answers, added to every validation's
        ``eval_*`` metrics (logged with the loss, seen by early stopping and the best-checkpoint choice)."""
        super().__init__(*args, **kwargs)
        self.eval_epochs, self.score_generations = eval_epochs, score_generations
        self.trace_file = trace_file
        self.batch_sampler = None
        if train_lengths is not None:
            self.batch_sampler = LengthGroupedBatchSampler(
                train_lengths, batch_size=None if max_tokens_per_batch else self._train_batch_size,
                max_tokens=max_tokens_per_batch, packed=packed,
                seed=self.args.seed if self.args.data_seed is None else self.args.data_seed,
                step_batches=self.args.world_size * self.args.gradient_accumulation_steps)
            self.add_callback(SamplerEpoch(self.batch_sampler))
            if render_ahead and self.args.dataloader_num_workers == 0 and hasattr(self.train_dataset, "prefetch"):
                self._prefetch_along(self.batch_sampler)
        if isinstance(getattr(self.train_dataset, "renderer", None), CachedRenderer):
            self.add_callback(CacheSummary(self.train_dataset.renderer))
        self._tokens = 0
        self._last_log = (time.perf_counter(), 0)
        self._keep_logits: bool | None = None
        self._parameters_counted: int | None = None

    def _prefetch_along(self, sampler: LengthGroupedBatchSampler) -> None:
        """Render the next batches of the plan in a background thread while the model trains on this one."""
        self.train_dataset.prefetch(lambda: sampler.plan(sampler.epoch), stride=self.args.world_size)
        self.add_callback(DrainPrefetch(self.train_dataset.prefetcher))

    def set_initial_training_values(self, args, dataloader):
        values = super().set_initial_training_values(args, dataloader)
        if self.eval_epochs is not None:
            steps_per_epoch = values[1]
            args.eval_steps = self.eval_epochs * steps_per_epoch
            if args.load_best_model_at_end and args.save_steps % args.eval_steps:
                raise ConfigError(
                    f"train.save_steps ({args.save_steps}) must be a multiple of the validation interval, "
                    f"train.eval_epochs {self.eval_epochs} x {steps_per_epoch} optimizer steps an epoch = "
                    f"{args.eval_steps}, so the best checkpoint by validation loss can be kept")
        return values

    def get_train_dataloader(self) -> DataLoader:
        if self.batch_sampler is None:
            return super().get_train_dataloader()
        return grouped_dataloader(self, self.batch_sampler)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ids = inputs.pop(SAMPLE_IDS, [])
        if model.training and self.compute_loss_func is not None and "labels" in inputs:
            if self._keep_logits is None:
                self._keep_logits = accepts_logits_to_keep(self.model)
            if self._keep_logits:
                inputs = answer_logits_only(inputs)
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if model.training:
            loss = result[0] if return_outputs else result
            if not torch.isfinite(loss.detach()).all():
                raise NonFiniteLoss(self.state.global_step + 1, float(loss.detach().float().mean()), ids)
            # A packed row has no attention mask and no padding: every token counts.
            self._tokens += int(inputs["attention_mask"].sum()) if "attention_mask" in inputs else \
                inputs["input_ids"].numel()
            if self.trace_file is not None:
                with open(self.trace_file, "a") as f:
                    f.write(json.dumps({"step": self.state.global_step + 1, "ids": ids}) + "\n")
        return result

    def floating_point_ops(self, inputs: dict) -> int:
        # The Trainer's own counts the model's parameters again at every step (milliseconds on a small model's
        # millisecond step); the count does not change during training.
        if self._parameters_counted is None:
            self._parameters_counted = (self.model.num_parameters(exclude_embeddings=True)
                                        if hasattr(self.model, "num_parameters") else 0)
        main_input = getattr(self.model, "main_input_name", "input_ids")
        return 6 * inputs[main_input].numel() * self._parameters_counted if main_input in inputs else 0

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                         metric_key_prefix)
        if self.score_generations is not None:
            scores = self.score_generations(self.model)
            output.metrics.update({f"{metric_key_prefix}_{name}": value for name, value in scores.items()})
        return output

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = {k: v for k, v in inputs.items() if k != SAMPLE_IDS}
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: tokens/s of this process since the previous one
            now, tokens = time.perf_counter(), self._tokens
            then, before = self._last_log
            if now > then and tokens > before:
                logs = {**logs, "tokens_per_s": round((tokens - before) / (now - then), 1)}
            self._last_log = (now, tokens)
        super().log(logs, start_time)
