"""Measuring a Trainer run from the outside: a callback times each optimizer step and the wait for its batches,
and a one-method subclass counts the tokens of every batch the step trains on. The training loop stays the
Trainer's own.

Per step the Trainer fetches the step's batches, then calls ``on_step_begin``, runs forward/backward/optimizer and
calls ``on_step_end``. So ``on_step_begin - previous on_step_end`` is the time the step waited for data (loading,
collating, moving to the device), and ``on_step_end - on_step_begin`` its compute.
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import time
from dataclasses import dataclass, field

import torch
from transformers import TrainerCallback

from ..data.collate import SAMPLE_IDS


@dataclass
class Counts:
    samples: int = 0
    tokens: int = 0
    """Real (non-padding) tokens, visual included."""
    visual: int = 0
    padded: int = 0
    """Token slots including padding (batch x longest)."""
    patches: int = 0
    """Vision-tower input patches where the family passes patch rows (Qwen-VL); else 0."""


@dataclass
class StepMeter(TrainerCallback):
    """Times steps after ``warmup`` warm-up steps; ``count`` adds a batch's tokens to the current step."""

    warmup: int
    image_token_id: int | None
    counts: Counts = field(default_factory=Counts)
    waits: list[float] = field(default_factory=list)
    computes: list[float] = field(default_factory=list)
    memory_scope: str = "measured steps"
    _step: int = 0
    _last_end: float = 0.0
    _begin: float = 0.0

    def _now(self) -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self._last_end = self._now()
        if self.warmup == 0:
            self.memory_scope = reset_peak_memory()

    def on_step_begin(self, args, state, control, **kwargs):
        self._step = state.global_step + 1
        self._begin = self._now()

    def on_step_end(self, args, state, control, **kwargs):
        end = self._now()
        if state.global_step > self.warmup:
            self.waits.append(self._begin - self._last_end)
            self.computes.append(end - self._begin)
        elif state.global_step == self.warmup:
            self.memory_scope = reset_peak_memory()
        self._last_end = self._now()

    def count(self, inputs: dict) -> None:
        if self._step <= self.warmup:
            return
        ids = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        c = self.counts
        c.samples += len(inputs[SAMPLE_IDS]) if SAMPLE_IDS in inputs else ids.shape[0]  # a packed row holds several
        c.padded += ids.numel()
        c.tokens += int(mask.sum()) if mask is not None else ids.numel()
        if self.image_token_id is not None:
            c.visual += int((ids == self.image_token_id).sum())
        pixels = inputs.get("pixel_values")
        if pixels is not None and pixels.dim() == 2:
            c.patches += pixels.shape[0]

    def summary(self) -> dict:
        """Throughput, padding and data-wait shares, step time and peak memory of the measured steps."""
        seconds = sum(self.waits) + sum(self.computes)
        c = self.counts
        per_s = (lambda n: n / seconds) if seconds > 0 else (lambda n: 0.0)
        memory, kind = peak_memory_mb()
        return {
            "steps": len(self.computes), "seconds": seconds, "samples": c.samples,
            "samples_per_s": per_s(c.samples), "tokens_per_s": per_s(c.tokens),
            "text_tokens_per_s": per_s(c.tokens - c.visual), "visual_tokens_per_s": per_s(c.visual),
            "padding_share": (c.padded - c.tokens) / c.padded if c.padded else 0.0,
            "data_wait_share": sum(self.waits) / seconds if seconds > 0 else 0.0,
            "mean_batch_size": c.samples / max(1, len(self.computes)),
            "step_ms_median": 1000 * statistics.median([w + s for w, s in zip(self.waits, self.computes, strict=True)])
            if self.computes else 0.0,
            "peak_memory_mb": memory, "peak_memory_kind": kind if kind != "rss" else f"rss ({self.memory_scope})",
        }


def measured(trainer_cls: type, meter: StepMeter) -> type:
    """``trainer_cls`` whose ``training_step`` first hands each batch to ``meter.count``."""

    class Measured(trainer_cls):
        def training_step(self, model, inputs, num_items_in_batch=None):
            meter.count(inputs)
            return super().training_step(model, inputs, num_items_in_batch)

    Measured.__name__ = f"Measured{trainer_cls.__name__}"
    return Measured


def reset_peak_memory() -> str:
    """Restart peak-memory tracking; returns what the later peak covers."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return "measured steps"
    # Linux resets the process's peak RSS (VmHWM) on "5" written here; elsewhere the peak is the process's.
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return "measured steps"
    return "whole process"


def peak_memory_mb() -> tuple[float, str]:
    """(peak, kind): CUDA max allocated on a GPU, else the process's peak resident set size."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20, "cuda_max_allocated"
    with contextlib.suppress(OSError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024, "rss"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss"
