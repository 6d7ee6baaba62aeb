"""The run plan: what a run will do, logged before its first step, one fact a line.

Step counts come from the Trainer's own arithmetic (``set_initial_training_values`` over the training DataLoader the
Trainer builds, token-budget batches included), so the plan says what the run then does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..data.check import CheckReport

log = logging.getLogger("vlmtune")


@dataclass
class Plan:
    batches_per_epoch: int
    """Batches one process trains on in an epoch."""
    steps_per_epoch: int
    total_steps: int
    epochs: int
    warmup_steps: int
    world_size: int
    rendering: str = "in the training loop"
    """Where samples are rendered: in the loop, in a background thread, in DataLoader workers; and their cache."""


def trainer_plan(trainer) -> Plan:
    """The step counts ``trainer.train()`` will use (before it runs)."""
    args = trainer.args
    loader = trainer.get_train_dataloader()
    try:
        epochs, per_epoch, *_, batches, total = trainer.set_initial_training_values(args, loader)
    finally:
        prepared = getattr(trainer.accelerator, "_dataloaders", None)
        if prepared is not None and loader in prepared:  # only measured: not a loader the run trains from
            prepared.remove(loader)
    return Plan(batches_per_epoch=batches, steps_per_epoch=per_epoch, total_steps=total, epochs=epochs,
                warmup_steps=args.get_warmup_steps(total), world_size=args.world_size,
                rendering=_rendering(trainer))


def _rendering(trainer) -> str:
    dataset, workers = trainer.train_dataset, trainer.args.dataloader_num_workers
    where = (f"in {workers} DataLoader worker process(es)" if workers else
             "ahead of the loop, in a background thread (data.prefetch)"
             if getattr(dataset, "prefetcher", None) is not None else "in the training loop")
    cache = getattr(getattr(dataset, "renderer", None), "root", None)
    return where + (f"; cached in {cache}" if cache is not None else "; not cached")


def plan_lines(cfg: Config, plan: Plan, train: CheckReport, val: CheckReport | None, dtype: str, device: str,
               run_dir: Path, weights_dir: Path) -> tuple[list[str], list[str]]:
    """(facts, warnings) of the plan, each one line."""
    t = cfg.train
    facts = [_samples("data.train", train)]
    if cfg.data.streaming:  # the report is of the records checked before training, not of the whole stream
        facts[0] = (f"data.train: streamed; {len(train.samples)} of its first {train.records} records usable (the "
                    "others are checked as they are read)")
    if val is not None:
        facts.append(_samples("data.val", val))
    effective = t.batch_size * t.grad_accum * plan.world_size
    budget = f", up to {t.max_tokens_per_batch} tokens a batch" if t.max_tokens_per_batch else ""
    budget += ", each batch packed into one row without padding (train.packing)" if t.packing else ""
    facts.append(f"effective batch: {t.batch_size} x {t.grad_accum} grad_accum x {plan.world_size} processes = "
                 f"{effective} samples an optimizer step{budget}")
    facts.append(f"optimizer steps: {plan.steps_per_epoch} an epoch ({plan.batches_per_epoch} batches per process), "
                 f"{plan.total_steps} in total over {plan.epochs} epoch(s)"
                 + (f" (train.max_steps {t.max_steps})" if t.max_steps > 0 else ""))
    facts.append(f"warm-up: {plan.warmup_steps} of {plan.total_steps} steps, then {t.scheduler} schedule")
    if not cfg.data.streaming:
        facts.append(f"rendering: {plan.rendering}")
    every_eval = _validation(cfg, plan)
    if val is not None:
        facts.append(f"validation: {every_eval}")
    facts.append(f"weights: {dtype}; autocast {'on' if t.autocast else 'off'}; device {device}")
    facts.append(f"outputs: {run_dir} ({weights_dir.name}/, metrics.jsonl, train.log"
                 + (", checkpoints/" if t.save_steps else "") + ")")

    warnings = []
    if plan.warmup_steps >= plan.total_steps:
        warnings.append(f"warm-up ({plan.warmup_steps} steps) is not shorter than the run ({plan.total_steps} "
                        "steps): the learning rate never reaches train.lr; lower train.warmup_steps / warmup_ratio")
    if t.logging_steps > plan.total_steps:
        warnings.append(f"train.logging_steps {t.logging_steps} > {plan.total_steps} steps in total: no training "
                        "loss will be logged; lower train.logging_steps")
    if val is not None and every_eval.startswith("never"):
        warnings.append(f"validation {every_eval}; lower train.eval_steps / eval_epochs")
    if t.save_steps and t.save_steps > plan.total_steps:
        warnings.append(f"train.save_steps {t.save_steps} > {plan.total_steps} steps in total: no checkpoint will "
                        "be saved")
    return facts, warnings


def _samples(key: str, report: CheckReport) -> str:
    dropped = report.records - len(report.samples)
    return f"{key}: {len(report.samples)} samples used, {dropped} dropped (of {report.records} records)"


def _validation(cfg: Config, plan: Plan) -> str:
    t = cfg.train
    if t.eval_epochs:
        interval = t.eval_epochs * plan.steps_per_epoch
    elif t.eval_steps:
        interval = t.eval_steps
    else:
        return "at the end only (no train.eval_steps / eval_epochs)"
    times = plan.total_steps // interval
    if times == 0:
        return f"never during training (every {interval} steps, the run has {plan.total_steps}); at the end only"
    return f"every {interval} steps ({times} times) and at the end"


def log_plan(cfg: Config, plan: Plan, train: CheckReport, val: CheckReport | None, dtype: str, device: str,
             run_dir: Path, weights_dir: Path) -> None:
    facts, warnings = plan_lines(cfg, plan, train, val, dtype, device, run_dir, weights_dir)
    for line in facts:
        log.info("plan: %s", line)
    for line in warnings:
        log.warning("plan: %s", line)

