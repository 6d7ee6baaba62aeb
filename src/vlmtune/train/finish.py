"""The end of a run: the last validation, the saved weights, the held-out evaluation (base vs tuned), loss.png and
metrics.json."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from ..config import Config
from ..core.sample import Sample
from ..data import Renderer
from ..evaluate import compare
from ..evaluate.report import loss_curve_png
from ..files import make_readable
from ..models import load_model, resolve_dtype
from .model import zero3_enabled, zero3_init_off
from .prepare import Prepared
from .streaming import stream_metrics

log = logging.getLogger("vlmtune")


@dataclass
class RunResult:
    run_dir: Path
    weights_dir: Path
    """The adapter folder (LoRA) or the full model folder."""
    metrics: dict = field(default_factory=dict)


def weights_dir(cfg: Config, run_dir: Path) -> Path:
    """Where the run saves what it trained: ``RUN/model`` (full fine-tuning) or ``RUN/adapter``."""
    return cfg.train.method.weights_dir(run_dir)


def finish(cfg: Config, trainer, model: torch.nn.Module, data: Prepared, output, run_dir: Path) -> RunResult:
    """Validate once more, save the weights, evaluate base vs tuned on the held-out samples (``eval.at_end``) and
    write loss.png and metrics.json. ``model``: the model given to the Trainer (``trainer.model`` may be wrapped
    by then); ``output``: what ``trainer.train()`` returned."""
    saved = weights_dir(cfg, run_dir)
    has_val = bool(data.val_samples)
    args = trainer.args
    # Every process takes part in the last validation and the save: under ZeRO-3 / FSDP the weights are sharded
    # and gathering them needs all ranks; the main process alone writes files.
    trainer.score_generations = None  # the held-out evaluation below generates once more, base and tuned
    # A GRPO trainer has no validation set: its held-out samples are scored by generating, below.
    val_loss = trainer.evaluate()["eval_loss"] if has_val and trainer.eval_dataset is not None else None
    trainer.save_model(str(saved))
    # Under FSDP and ZeRO-3 each forward gathers the weight shards of all processes, so every process generates
    # the held-out answers (transformers' synced_gpus keeps them in step); the main process alone writes them.
    # Otherwise the main process alone generates: a full fine-tune's base copy is then loaded once, not per GPU.
    sharded = trainer.is_fsdp_enabled or zero3_enabled()
    evaluated = has_val and cfg.eval.at_end and (sharded or args.should_save)
    scores = evaluate_run(cfg, model, data.renderer, data.val_samples, run_dir, write=args.should_save) \
        if evaluated else {}
    if not args.should_save:
        return RunResult(run_dir=run_dir, weights_dir=saved, metrics={})
    if not cfg.train.method.trains_adapter:  # a whole checkpoint loads alone: its processor goes with it
        data.processor.save_pretrained(saved)
    write_loss_curve(run_dir / "metrics.jsonl", run_dir / "loss.png")
    metrics = {"train_loss": output.training_loss, "steps": output.global_step,
               "train_runtime_s": output.metrics.get("train_runtime"), "family": data.spec.name}
    if has_val:
        if val_loss is not None:
            metrics["val_loss"] = val_loss
        metrics.update(scores)
    if cfg.data.streaming:  # what the stream dropped after the first check
        metrics.update(stream_metrics(run_dir))
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log.info("final metrics: %s", json.dumps(metrics))
    make_readable(run_dir)  # safetensors writes the weights 0600
    return RunResult(run_dir=run_dir, weights_dir=saved, metrics=metrics)


def write_loss_curve(metrics_log: Path, out: Path) -> None:
    """``loss.png`` from the run's metrics.jsonl; a line saying why where matplotlib is missing."""
    try:
        png = loss_curve_png(metrics_log)
    except ImportError:
        log.info("no loss.png: matplotlib is not installed (pip install 'vlmtune[report]')")
        return
    if png is not None:
        out.write_bytes(png)


def evaluate_run(cfg: Config, model: torch.nn.Module, renderer: Renderer, samples: list[Sample],
                 run_dir: Path, write: bool = True) -> dict[str, float]:
    """Base vs tuned on the held-out samples, written to ``RUN/eval`` (with ``write``); returns ``val_<metric>``
    values. Every process of a sharded run (FSDP, ZeRO-3) must call it: generating gathers the weights."""
    e = cfg.eval
    samples = samples[:e.max_samples] if e.max_samples else samples
    base = None
    if e.compare_base and cfg.train.method.separate_base:  # no adapter to switch off: load the checkpoint again
        with zero3_init_off():
            base = load_model(cfg.model.path, resolve_dtype(cfg.model.dtype)).to(next(model.parameters()).device)
    comparison = compare(model, renderer, samples, e.metric_names(), base, e.compare_base, e.max_new_tokens,
                         e.batch_size, cfg.train.progress and write)
    values: dict[str, float] = {"val_samples": comparison.n}
    for name, sides in comparison.metrics.items():
        values[f"val_{name}"] = sides["tuned"]
        if "base" in sides:
            values[f"base_val_{name}"] = sides["base"]
    if not write:
        return values
    adapter = cfg.train.method.adapter_dir(run_dir)
    out = comparison.write(run_dir / "eval", loss_log=run_dir / "metrics.jsonl", task=e.task,
                           model=cfg.model.path, adapter=str(adapter) if adapter else None)
    log.info("held-out evaluation (%s):\n%s", out, comparison.summary())
    return values


def leave_process_group() -> None:
    """End a data-parallel run together: every process waits for the others (the main one may still be writing
    files) and closes the process group, instead of one exiting while its communication threads still run."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
