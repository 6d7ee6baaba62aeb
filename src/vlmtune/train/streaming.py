"""A training run over ``data.streaming``: the check of the stream's first records before any weights load, the
stream the Trainer reads, its position in each checkpoint (``stream.json``) for an exact resume, and the records it
dropped on the way (``RUN/dropped.jsonl``, counted in metrics.json)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainingArguments

from ..config import Config
from ..core.errors import DataError
from ..data import Renderer
from ..data.check import CheckReport, Problem
from ..data.formats import get_reader
from ..data.mix import train_sources
from ..data.settings import read_options
from ..data.stream import DroppedLog, Position, SampleStream, StreamRules, checked_stream, dropped
from .prepare import checked_report

log = logging.getLogger("vlmtune")

STATE_FILE = "stream.json"
DROPPED_FILE = "dropped.jsonl"


def stream_rules(cfg: Config, renderer: Renderer) -> StreamRules:
    """The sources, reading options, Renderer, shrink rule and seed of ``cfg``'s stream."""
    return StreamRules(train_sources(cfg.data), read_options(cfg.data), renderer,
                       shrink=cfg.data.on_too_long == "shrink", seed=cfg.train.seed)


def first_records_report(cfg: Config, renderer: Renderer) -> CheckReport:
    """The check of the stream's first ``data.check_samples`` records, with the rules of :func:`checked_report`
    (a bad record stops the run or is dropped with a count; no usable one stops it)."""
    rules = stream_rules(cfg, renderer)
    name = " + ".join(s.name for s in rules.sources)
    formats = dict.fromkeys(get_reader(s.files[0], s.format).name for s in rules.sources)
    report = CheckReport(source=name, format=",".join(formats), max_length=renderer.max_length)
    for _, item, lengths in checked_stream(rules, Position.start(len(rules.sources))):
        report.records += 1
        if isinstance(item, Problem):
            report.problems.append(item)
        else:
            report.samples.append(item)
            report.lengths.append(lengths)
        if report.records >= cfg.data.check_samples:
            break
    report.images = sum(len(s.images) for s in report.samples)
    report.turns = sum(len(s.messages) for s in report.samples)
    log.info("data.train: streamed; the first %d records checked now, the others as training reads them",
             report.records)
    return checked_report(name, cfg.data, renderer, "data.train", report)


def stream_dataset(cfg: Config, renderer: Renderer, run_dir: Path, args: TrainingArguments,
                   checkpoint: Path | None) -> SampleStream:
    """The Trainer's training data: the stream from the start, or from where ``checkpoint`` stored it. The
    Trainer then skips no batch on resuming (``ignore_data_skip``): the stream itself starts where it was."""
    args.ignore_data_skip = True
    # Each process reads its own stream (accelerate would otherwise read it in one process and send the batches,
    # whose sample ids are no tensors it can send).
    args.accelerator_config.dispatch_batches = False
    start, consumed = None, 0
    saved = checkpoint / STATE_FILE if checkpoint is not None else None
    if saved is not None:
        if not saved.is_file():
            raise DataError(f"{checkpoint} holds no {STATE_FILE}: it was not saved by a streaming run "
                            "(data.streaming); resume it without data.streaming")
        state = json.loads(saved.read_text())
        consumed = state["samples"]
        start = Position.from_dict(state["position"]) if state.get("position") else None
    log_problem = DroppedLog(run_dir / DROPPED_FILE, cfg.data.on_bad_record, cfg.data.on_too_long)
    return SampleStream(stream_rules(cfg, renderer), log_problem, renderer, start, consumed,
                        batch_size=args.per_device_train_batch_size)


class StreamCheckpoints(TrainerCallback):
    """Stores in each checkpoint the samples the run consumed and, where the training process reads the stream
    (no DataLoader workers), the stream's :class:`Position` after them: a resumed run starts there."""

    def __init__(self, stream: SampleStream):
        self.stream = stream

    def on_save(self, args, state, control, **kwargs):
        if not args.should_save:
            return
        samples = state.global_step * args.per_device_train_batch_size * args.gradient_accumulation_steps * \
            args.world_size
        position = self.stream.position_after(samples) if args.dataloader_num_workers == 0 else None
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / STATE_FILE).write_text(json.dumps(
            {"samples": samples, "position": position.to_dict() if position else None}) + "\n")


def stream_metrics(run_dir: Path) -> dict[str, Any]:
    """What the stream dropped while training, for metrics.json (and logged): the count and the reasons."""
    records = dropped(run_dir / DROPPED_FILE)
    problems = [Problem(r["where"], r["problem"], r["field"], r["kind"]) for r in records]
    reasons = CheckReport(source=str(run_dir / DROPPED_FILE), format="", problems=problems).counts_by_reason()
    if records:
        log.warning("data.train: dropped %d streamed records while training (%s), e.g. %s; all in %s",
                    len(records), "; ".join(f"{n}x {r}" for r, n in reasons.most_common(3)), problems[0],
                    run_dir / DROPPED_FILE)
    return {"stream_dropped": len(records), "stream_dropped_reasons": dict(reasons)}
