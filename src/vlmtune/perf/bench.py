"""``vlmtune bench``: N measured training steps after W warm-up steps with the config's own settings, and with
``baseline`` the common recipe (:mod:`.baseline`) on the same data, model and Trainer arguments, in the same
process, one after the other.

Both runs go through transformers' Trainer; :class:`.meter.StepMeter` times them from a callback. Reported per
run: samples/s, text and visual tokens/s, padding share, data-wait share, median step time, peak memory (CUDA max
allocated, or peak RSS), model TFLOP/s by :mod:`.flops` and, on a GPU in :mod:`.gpus`' table, MFU against its
dense bf16 peak; and the time each spent preparing data before its first step.
"""

from __future__ import annotations

import datetime
import gc
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, Trainer, set_seed

from ..config import Config
from ..core.errors import ConfigError
from ..data import Collator, EncodedDataset
from ..data.cache import AUTO, CachedRenderer
from ..models import resolve_dtype
from ..train.arguments import training_arguments
from ..train.model import build_model
from ..train.packing import packing_collator
from ..train.prepare import Prepared, prepare
from ..train.run import check_runnable
from ..train.trainer import VlmTrainer, causal_lm_loss
from ..train.trainer_inputs import batch_lengths, encoded_datasets, render_ahead, several_passes
from .arch import random_model
from .baseline import BaselineCollator, baseline_dataset
from .flops import matmul_weights, step_tokens, train_flops
from .gpus import find_gpu
from .meter import StepMeter, measured

RATIO_KEYS = ("samples_per_s", "tokens_per_s")


def run_bench(cfg: Config, steps: int = 20, warmup: int = 3, baseline: bool = False,
              random_init: str | bool = False, progress: bool = False) -> dict[str, Any]:
    """Measure training on ``cfg`` (and the baseline); returns the report :func:`format_report` prints.

    ``random_init``: build the model from its config with random weights instead of loading them (speed and memory
    do not depend on the values): True for ``cfg.model.path``'s config, or a ``config.json`` / folder whose
    architecture replaces it (the processor still comes from ``cfg.model.path``).
    """
    check_runnable(cfg)
    if random_init and cfg.train.method.quantized:
        raise ConfigError("--random-init builds unquantised weights; benchmark QLoRA from a checkpoint")
    data = prepare(cfg, splits=("train",))
    report = data.train
    load_before = os.getloadavg()
    result: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": cfg.model.path, "random_init": random_init, "method": cfg.train.method,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({platform.machine()})",
        "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "steps": steps, "warmup": warmup,
        "data": {"file": cfg.data.train, "samples": len(report.samples), "tokens": report.length_stats()},
        "batching": {"batch_size": cfg.train.batch_size, "group_by_length": cfg.train.group_by_length,
                     "max_tokens_per_batch": cfg.train.max_tokens_per_batch, "packing": cfg.train.packing,
                     "dataloader_workers": cfg.train.dataloader_workers, "cache_dir": cfg.data.cache_dir,
                     "cache_in_memory": cfg.data.cache_in_memory},
    }
    runs = [("vlmtune", True)] + ([("baseline", False)] if baseline else [])
    with tempfile.TemporaryDirectory() as tmp:
        for name, ours in runs:
            result[name] = _measure(cfg, data, Path(tmp) / name, steps, warmup, ours, random_init, progress)
    result["load_average"] = {"before": list(load_before), "after": list(os.getloadavg())}
    if baseline:
        result["ratio"] = {k: result["vlmtune"][k] / result["baseline"][k] if result["baseline"][k] else None
                           for k in RATIO_KEYS}
    return result


def _measure(cfg: Config, data: Prepared, out: Path, steps: int, warmup: int, ours: bool, random_init: str | bool,
             progress: bool) -> dict[str, Any]:
    spec, renderer, samples = data.spec, data.renderer, data.train_samples
    run_cfg = _bench_config(cfg, out, warmup + steps, progress, workers=cfg.train.dataloader_workers if ours else 0)
    start = time.perf_counter()
    if ours:
        dataset, _ = encoded_datasets(run_cfg, data)  # data.cache_dir: auto caches under the bench's own folder
        prepared = _prefill(cfg, dataset.renderer, dataset)
    else:
        dataset = baseline_dataset(samples, renderer, progress)
        prepared = f"Dataset.map over {len(samples)} samples"
    preprocess_s = time.perf_counter() - start

    set_seed(cfg.train.seed)  # the same initial weights (random init) and adapter init on both sides
    if random_init:
        model = random_model(cfg, spec, random_init, kernels=ours)
    elif ours or cfg.train.method.quantized:
        model = build_model(cfg, spec)
    else:  # the recipe loads with plain from_pretrained: none of vlmtune's kernel choices
        plain = AutoModelForImageTextToText.from_pretrained(cfg.model.path, dtype=resolve_dtype(cfg.model.dtype))
        model = build_model(cfg, spec, base=plain)
    config = model.config
    meter = StepMeter(warmup, getattr(config, "image_token_id", None) or getattr(config, "image_token_index", None))
    args = training_arguments(run_cfg, out, has_val=False)
    if not ours:
        args.use_liger_kernel = False  # the plain recipe: none of vlmtune's kernel choices
    if ours:
        trainer = measured(VlmTrainer, meter)(
            model=model, args=args, train_dataset=dataset, callbacks=[meter],
            data_collator=packing_collator(model, spec) if cfg.train.packing else
            Collator(renderer.processor.tokenizer.pad_token_id), compute_loss_func=causal_lm_loss,
            train_lengths=batch_lengths(cfg, data.train), max_tokens_per_batch=cfg.train.max_tokens_per_batch,
            packed=cfg.train.packing, render_ahead=render_ahead(cfg, args.device))
    else:
        trainer = measured(Trainer, meter)(model=model, args=args, train_dataset=dataset, callbacks=[meter],
                                           data_collator=BaselineCollator(renderer.processor.tokenizer))
    trainer.train()
    summary = meter.summary()
    summary.update(preprocess_s=preprocess_s, preprocess=prepared)
    summary.update(_flops(model, spec, meter, summary["seconds"], cfg.train.gradient_checkpointing))
    del trainer, model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return summary


def _prefill(cfg: Config, encoder, dataset: EncodedDataset) -> str:
    """Fill the configured caches before timing (as the baseline's map runs before its first step)."""
    done = []
    if isinstance(encoder, CachedRenderer):
        for sample in dataset.samples:
            encoder.encode(sample)
        done.append(f"data.cache_dir: {encoder.misses} samples rendered, {encoder.hits} read")
    if cfg.data.cache_in_memory:
        for i in range(len(dataset)):
            dataset[i]
        done.insert(0, f"data.cache_in_memory: {len(dataset)} samples")
    if not done:
        return "none: samples rendered on demand while training"
    return done[0] + (f" ({done[1]})" if len(done) > 1 else "")


def _bench_config(cfg: Config, out: Path, max_steps: int, progress: bool, workers: int) -> Config:
    train = cfg.train.model_copy(update={
        "output_dir": str(out), "max_steps": max_steps, "save_steps": None, "eval_steps": None, "eval_epochs": None,
        "early_stopping_patience": None, "logging_steps": max_steps + 1, "report_to": "none", "progress": progress,
        "dataloader_workers": workers, "trace_samples": False})
    # The cache the user's run would have: auto caches a run of several epochs, not one of a single pass.
    data = cfg.data if several_passes(cfg) or cfg.data.cache_dir != AUTO else \
        cfg.data.model_copy(update={"cache_dir": None})
    return cfg.model_copy(update={"train": train, "data": data})


def _flops(model, spec, meter: StepMeter, seconds: float, checkpointing: bool) -> dict[str, Any]:
    c = meter.counts
    vision = getattr(model.config, "vision_config", None)
    merge = getattr(vision, "spatial_merge_size", 1) or 1
    tokens = step_tokens(c.tokens, c.visual, merge ** 2)
    if c.patches:
        tokens["vision"] = c.patches
    flops = train_flops(matmul_weights(model, spec), tokens, checkpointing)
    achieved = flops / seconds if seconds > 0 else 0.0
    gpu = find_gpu(torch.cuda.get_device_name()) if torch.cuda.is_available() else None
    return {"model_tflops_per_s": achieved / 1e12, "mfu": achieved / (gpu.bf16_tflops * 1e12) if gpu else None,
            "mfu_peak": f"{gpu.name} dense bf16 {gpu.bf16_tflops:g} TFLOP/s" if gpu else None}


_ROWS = (
    ("samples/s", "samples_per_s", "{:.1f}"), ("text tokens/s", "text_tokens_per_s", "{:.0f}"),
    ("visual tokens/s", "visual_tokens_per_s", "{:.0f}"), ("padding share", "padding_share", "{:.1%}"),
    ("data-wait share", "data_wait_share", "{:.1%}"), ("step time (median ms)", "step_ms_median", "{:.1f}"),
    ("mean batch size", "mean_batch_size", "{:.2f}"), ("peak memory (MiB)", "peak_memory_mb", "{:.0f}"),
    ("model TFLOP/s", "model_tflops_per_s", "{:.4f}"), ("MFU", "mfu", "{:.1%}"),
    ("data prep before step 1 (s)", "preprocess_s", "{:.1f}"),
)


def format_report(result: dict[str, Any]) -> str:
    """The bench result as a table (one column per run, and their ratio)."""
    runs = [name for name in ("vlmtune", "baseline") if name in result]
    lines = [f"{result['model']} ({result['method']}), {result['device']}, {result['torch_threads']} torch threads; "
             f"{result['steps']} measured steps after {result['warmup']} warm-up; "
             f"load average {result['load_average']['before'][0]:.2f} -> {result['load_average']['after'][0]:.2f}",
             f"{'':<30}" + "".join(f"{name:>14}" for name in runs) + (f"{'ratio':>10}" if len(runs) == 2 else "")]
    for label, key, fmt in _ROWS:
        values = [result[name].get(key) for name in runs]
        cells = "".join(f"{fmt.format(v) if v is not None else '-':>14}" for v in values)
        if len(runs) == 2 and key in RATIO_KEYS and values[1]:
            cells += f"{values[0] / values[1]:>9.2f}x"
        lines.append(f"{label:<30}{cells}")
    for name in runs:
        lines.append(f"{name}: memory = {result[name]['peak_memory_kind']}; data prep: {result[name]['preprocess']}")
    return "\n".join(lines)
