"""What the Trainer of a run is built from, each computed from the config and the prepared data in one named step:
the encoded datasets, the collator, the callbacks, the batch lengths, the generation scorer, the per-process trace
and the TensorBoard folder."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from transformers import EarlyStoppingCallback, TrainerCallback, TrainingArguments

from ..config import Config
from ..core.sample import Sample
from ..data import Collator, EncodedDataset, Renderer
from ..data.cache import AUTO, CACHE_FOLDER, CachedRenderer, auto_cache_limit
from ..data.check import CheckReport
from ..data.collate import placeholder_image_features
from ..data.pack import PackingCollator
from ..evaluate import compare
from .callbacks import MetricsFile, ReadableCheckpoints
from .interrupt import StopOnInterrupt
from .packing import packing_collator
from .prepare import Prepared
from .resume_check import CurrentIntervals

log = logging.getLogger("vlmtune")


def encoded_datasets(cfg: Config, data: Prepared) -> tuple[EncodedDataset, EncodedDataset | None]:
    """The training and validation datasets (no validation dataset without held-out samples), rendered on
    demand or read from ``data.cache_dir``."""
    encoder = data_cache(cfg, data.renderer) or data.renderer
    train_ds = EncodedDataset(data.train_samples, encoder, cache=cfg.data.cache_in_memory)
    if not data.val_samples:
        return train_ds, None
    return train_ds, EncodedDataset(data.val_samples, encoder, cache=cfg.data.cache_in_memory)


def data_cache(cfg: Config, renderer: Renderer) -> CachedRenderer | None:
    """The rendered-sample cache of ``data.cache_dir``: ``auto`` is ``RUN/cache``, limited to a quarter of the
    disk's free space, in a run that reads its samples more than once; None where it is off."""
    setting = cfg.data.cache_dir
    if not setting:
        return None
    if setting != AUTO:
        return CachedRenderer(renderer, setting)
    if not several_passes(cfg):
        # Each sample is rendered once anyway; writing its pixel tensors (megabytes a sample) would cost more.
        log.info("data cache: off (data.cache_dir: auto caches runs of more than one epoch; set a folder to cache "
                 "this one)")
        return None
    folder = Path(cfg.train.output_dir) / CACHE_FOLDER
    return CachedRenderer(renderer, folder, max_bytes=auto_cache_limit(folder))


def several_passes(cfg: Config) -> bool:
    """Whether the run may read a sample more than once: more than one epoch, or a step count (``max_steps``)
    that may run past the first."""
    return cfg.train.epochs > 1 or cfg.train.max_steps > 0


def render_ahead(cfg: Config, device: torch.device) -> bool:
    """Whether the next batches render in a background thread while the model trains (``data.prefetch``): by
    default where the model runs on an accelerator. On CPU the model's operations keep every core busy, and a
    rendering thread beside them slows each step by more than the rendering it takes off the loop."""
    setting = cfg.data.prefetch
    return device.type != "cpu" if setting == AUTO else setting


def batch_collator(cfg: Config, data: Prepared, world_size: int, model: torch.nn.Module | None = None
                   ) -> Collator | PackingCollator:
    """The collator, with the placeholder image for batches without one where ``data.image_in_every_batch``;
    with ``train.packing`` the one that packs each batch into a row, with ``model``'s positions (see
    :func:`.packing.packing_collator`, which also prepares ``model`` for packed rows)."""
    placeholder = None
    if image_in_every_batch(cfg.data.image_in_every_batch, world_size, [*data.train_samples, *data.val_samples]):
        placeholder = placeholder_image_features(data.renderer)
        log.info("batches without an image get a placeholder image (%d tokens, masked out of attention and loss)",
                 len(placeholder["input_ids"]))
    if cfg.train.packing:
        return packing_collator(model, data.spec, placeholder)
    return Collator(data.processor.tokenizer.pad_token_id, placeholder_image=placeholder)


def image_in_every_batch(setting: str | bool, world_size: int, samples: list[Sample]) -> bool:
    """Whether batches without an image get the placeholder image (``data.image_in_every_batch``)."""
    if setting == "auto":
        return world_size > 1 and any(not s.images for s in samples)
    return bool(setting)


def run_callbacks(cfg: Config, run_dir: Path, stop: StopOnInterrupt, resumed: bool) -> list[TrainerCallback]:
    """metrics.jsonl (continued by a resumed run), the interval check of a resumed run, the Ctrl-C stop,
    readable checkpoints and, with ``train.early_stopping_patience``, early stopping."""
    callbacks = [MetricsFile(run_dir / "metrics.jsonl", append=resumed), CurrentIntervals(), stop,
                 ReadableCheckpoints()]
    if cfg.train.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(cfg.train.early_stopping_patience))
    return callbacks


def tensorboard_dir(run_dir: Path, args: TrainingArguments) -> Path:
    """Where TensorBoard logs go (``TENSORBOARD_LOGGING_DIR``, else ``RUN/tensorboard``); says how to view them
    where the run logs to TensorBoard."""
    folder = Path(os.environ.get("TENSORBOARD_LOGGING_DIR", run_dir / "tensorboard"))
    if "tensorboard" in args.report_to and args.should_log:
        log.info("TensorBoard: tensorboard --logdir %s", folder)
    return folder


@contextlib.contextmanager
def environ(key: str, value: str) -> Iterator[None]:
    """``os.environ[key] = value`` for the block (transformers' TensorBoard callback reads its folder there)."""
    before = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if before is None:
            del os.environ[key]
        else:
            os.environ[key] = before


def batch_lengths(cfg: Config, report: CheckReport) -> list[int] | None:
    """Tokens of each training sample (visual included) where batches are grouped by length or filled up to
    ``train.max_tokens_per_batch``; None for random batches."""
    if not (cfg.train.group_by_length or cfg.train.max_tokens_per_batch):
        return None
    return [text + visual for text, visual in report.lengths]


def trace_file(cfg: Config, run_dir: Path, process_index: int) -> Path | None:
    """``RUN/samples.rankN.jsonl``, the ids of every batch of this process, with ``train.trace_samples``."""
    return run_dir / f"samples.rank{process_index}.jsonl" if cfg.train.trace_samples else None


def best_by_scorer(cfg: Config, data: Prepared) -> Callable[[torch.nn.Module], dict[str, float]] | None:
    """:func:`generation_scorer` over the held-out samples where ``train.best_by`` names a metric; else None."""
    if cfg.train.best_by == "loss" or not data.val_samples:
        return None
    return generation_scorer(cfg, data.renderer, data.val_samples)


def generation_scorer(cfg: Config, renderer: Renderer, samples: list[Sample]):
    """``model -> {metric: value}``: the tuned model's answers to the held-out samples (the first
    ``eval.max_samples``), scored with the run's metrics; every validation calls it when ``train.best_by`` names a
    metric. Every process generates the same answers: under ZeRO-3 / FSDP all of them must run each forward."""
    e = cfg.eval
    held_out = samples[:e.max_samples] if e.max_samples else samples

    def score(model: torch.nn.Module) -> dict[str, float]:
        comparison = compare(model, renderer, held_out, e.metric_names(), compare_base=False,
                             max_new_tokens=e.max_new_tokens, batch_size=e.batch_size, progress=False)
        return {name: sides["tuned"] for name, sides in comparison.metrics.items()}

    return score


def warn_if_engine_unused(trainer) -> None:
    """Say so when ``accelerate launch`` was given an FSDP or DeepSpeed config that the Trainer does not use:
    accelerate 1.x turns FSDP on only for GPUs and other accelerators, and otherwise trains plain data-parallel
    (every process holding the whole model) without a word."""
    for engine, variable, used in (("FSDP", "ACCELERATE_USE_FSDP", trainer.is_fsdp_enabled),
                                   ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED", trainer.is_deepspeed_enabled)):
        if os.environ.get(variable, "false").lower() == "true" and not used:
            log.warning("launched with an accelerate %s config, but %s is not in use here (accelerate enables it "
                        "only on GPUs and other accelerators): training is plain data-parallel, each process "
                        "holding the whole model", engine, engine)
