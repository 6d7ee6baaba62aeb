"""One training run, top to bottom: config -> data -> model -> Trainer -> adapter + metrics."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments, set_seed

from ..config import Config, dump_config
from ..config.schema import DataConfig
from ..data import Collator, DataError, EncodedDataset, Renderer, Sample
from ..data.check import TOO_LONG, check_dataset
from ..evaluate import compare
from ..models import FamilySpec, family_of, load_model, load_processor, resolve_dtype
from .callbacks import MetricsFile
from .lora import apply_lora, format_table, parameter_table, prepare_full

log = logging.getLogger("vlmtune")


@dataclass
class RunResult:
    run_dir: Path
    weights_dir: Path
    """The adapter folder (LoRA) or the full model folder."""
    metrics: dict = field(default_factory=dict)


def train(cfg: Config) -> RunResult:
    """Fine-tune ``cfg.model`` on ``cfg.data`` and write the run directory."""
    run_dir = Path(cfg.train.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run_dir / "config.yaml")
    log_file = logging.FileHandler(run_dir / "train.log", mode="w")
    log.addHandler(log_file)
    log.setLevel(logging.INFO)
    try:
        return _train(cfg, run_dir)
    finally:
        log.removeHandler(log_file)
        log_file.close()


def _train(cfg: Config, run_dir: Path) -> RunResult:
    set_seed(cfg.train.seed)

    # Data first: every record is checked in seconds, before any weights are loaded.
    spec = family_of(cfg.model.path)
    processor = load_processor(cfg.model.path, spec, cfg.data.min_pixels, cfg.data.max_pixels)
    renderer = Renderer(processor, spec, cfg.data.max_length)
    train_samples = checked_samples(cfg.data.train, cfg.data, renderer, "data.train")
    val_samples = checked_samples(cfg.data.val, cfg.data, renderer, "data.val") if cfg.data.val else []

    model = build_model(cfg, spec)
    log.info("trainable parameters (%s, family %s):\n%s", cfg.train.method, spec.name,
             format_table(parameter_table(model, spec)))

    train_ds = EncodedDataset(train_samples, renderer, cache=cfg.data.cache_in_memory)
    val_ds = EncodedDataset(val_samples, renderer, cache=cfg.data.cache_in_memory) if val_samples else None
    trainer = Trainer(
        model=model,
        args=training_arguments(cfg, run_dir, has_val=val_ds is not None),
        train_dataset=train_ds,
        eval_dataset=val_ds,
        data_collator=Collator(processor.tokenizer.pad_token_id),
        callbacks=[MetricsFile(run_dir / "metrics.jsonl")],
    )
    output = trainer.train()

    weights_dir = run_dir / ("adapter" if cfg.train.method == "lora" else "model")
    model.save_pretrained(weights_dir)
    if cfg.train.method == "full":
        processor.save_pretrained(weights_dir)
    metrics = {"train_loss": output.training_loss, "steps": output.global_step,
               "train_runtime_s": output.metrics.get("train_runtime"), "family": spec.name}
    if val_ds is not None:
        metrics["val_loss"] = trainer.evaluate()["eval_loss"]
        if cfg.eval.at_end:
            metrics.update(evaluate_run(cfg, model, renderer, val_samples, run_dir))
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log.info("final metrics: %s", json.dumps(metrics))
    return RunResult(run_dir=run_dir, weights_dir=weights_dir, metrics=metrics)


def evaluate_run(cfg: Config, model: torch.nn.Module, renderer: Renderer, samples: list[Sample],
                 run_dir: Path) -> dict[str, float]:
    """Base vs tuned on the held-out samples, written to ``RUN/eval``; returns ``val_<metric>`` values."""
    e = cfg.eval
    samples = samples[:e.max_samples] if e.max_samples else samples
    base = None
    if e.compare_base and cfg.train.method == "full":  # no adapter to switch off: load the checkpoint again
        base = load_model(cfg.model.path, resolve_dtype(cfg.model.dtype)).to(next(model.parameters()).device)
    comparison = compare(model, renderer, samples, e.metric_names(), base, e.compare_base, e.max_new_tokens,
                         e.batch_size, cfg.train.progress)
    out = comparison.write(run_dir / "eval", loss_log=run_dir / "metrics.jsonl", task=e.task,
                           model=cfg.model.path, adapter=str(run_dir / "adapter") if cfg.train.method == "lora"
                           else None)
    log.info("held-out evaluation (%s):\n%s", out, comparison.summary())
    values: dict[str, float] = {"val_samples": comparison.n}
    for name, sides in comparison.metrics.items():
        values[f"val_{name}"] = sides["tuned"]
        if "base" in sides:
            values[f"base_val_{name}"] = sides["base"]
    return values


def checked_samples(path: str, data: DataConfig, renderer: Renderer, key: str) -> list[Sample]:
    """The usable samples of a data file, after the checks of ``vlmtune data check``.

    Unusable records and over-long samples are dropped with a count (or stop the run, per
    ``data.on_bad_record`` / ``data.on_too_long``); a file with no usable sample stops it, naming why.
    """
    report = check_dataset(path, data.format, data.read_options(), renderer)
    too_long = [p for p in report.problems if p.kind == TOO_LONG]
    invalid = [p for p in report.problems if p.kind != TOO_LONG]
    for problems, policy, what in ((invalid, "on_bad_record", "unusable"), (too_long, "on_too_long",
                                                                             "over max_length")):
        if not problems:
            continue
        if getattr(data, policy) == "fail":
            raise DataError(f"{key}: {len(problems)} of {report.records} records {what} (data.{policy}=fail); "
                            f"first: {problems[0]}")
        log.warning("%s: dropped %d of %d records as %s, e.g. %s", key, len(problems), report.records, what,
                    problems[0])
    if not report.samples:
        reasons = "; ".join(f"{n}x {r}" for r, n in report.counts_by_reason().most_common(3))
        raise DataError(f"{key}: no usable sample in {path} ({report.records} records): {reasons or 'empty file'}; "
                        f"run `vlmtune data check {path}` for the full list")
    log.info("%s: %d samples from %s (format %s)", key, len(report.samples), path, report.format)
    return report.samples


def build_model(cfg: Config, spec: FamilySpec | None = None) -> torch.nn.Module:
    """The model with exactly the weights ``cfg`` trains left trainable."""
    spec = spec or family_of(cfg.model.path)
    model = load_model(cfg.model.path, resolve_dtype(cfg.model.dtype))
    return apply_lora(model, spec, cfg.lora) if cfg.train.method == "lora" else prepare_full(model, spec)


def training_arguments(cfg: Config, run_dir: Path, has_val: bool) -> TrainingArguments:
    t = cfg.train
    dtype = resolve_dtype(cfg.model.dtype)
    evaluate_every = has_val and t.eval_steps is not None
    return TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_steps,
        lr_scheduler_type=t.scheduler,
        max_grad_norm=t.max_grad_norm,
        eval_strategy="steps" if evaluate_every else "no",
        eval_steps=t.eval_steps if evaluate_every else None,
        logging_steps=t.logging_steps,
        save_strategy="no",
        seed=t.seed,
        data_seed=t.seed,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=False,  # the collator needs pixel_values, image_grid_thw, mm_token_type_ids
        report_to="none",
        disable_tqdm=not t.progress,
        dataloader_num_workers=0,
    )
