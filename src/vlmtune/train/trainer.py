"""transformers' Trainer with the few things a VLM run needs on top: the ids of each batch's samples (named when
the loss stops being finite), tokens per second in the logs, and an optional per-process trace of batches."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from transformers import Trainer
from transformers.loss.loss_utils import ForCausalLMLoss

from ..data.collate import SAMPLE_IDS


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
    def __init__(self, *args, trace_file: Path | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.trace_file = trace_file
        self._tokens = 0
        self._last_log = (time.perf_counter(), 0)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ids = inputs.pop(SAMPLE_IDS, [])
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if model.training:
            loss = result[0] if return_outputs else result
            if not torch.isfinite(loss.detach()).all():
                raise NonFiniteLoss(self.state.global_step + 1, float(loss.detach().float().mean()), ids)
            self._tokens += int(inputs["attention_mask"].sum()) if "attention_mask" in inputs else 0
            if self.trace_file is not None:
                with open(self.trace_file, "a") as f:
                    f.write(json.dumps({"step": self.state.global_step + 1, "ids": ids}) + "\n")
        return result

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
