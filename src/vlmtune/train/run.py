"""One training run, top to bottom: config -> data -> model -> Trainer -> adapter + metrics.

Each step is one call into its module: :mod:`.start` (the run folder, config.yaml, train.log), :mod:`.prepare`
(spec, processor, Renderer, checked data), :mod:`.arguments` (TrainingArguments), :mod:`.model` (the weights a run
trains), :mod:`.trainer_inputs` (datasets, collator, callbacks, batching) and :mod:`.finish` (the last validation,
the saved weights, the held-out evaluation, metrics.json).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import set_seed

from ..config import Config
from ..config.rules import check_config
from ..core.errors import ConfigError, TrainingError
from .arguments import training_arguments
from .checkpoints import checkpoints
from .dpo import dpo_trainer
from .finish import RunResult, finish, weights_dir
from .grpo import grpo_trainer
from .interrupt import StopOnInterrupt, TrainingInterrupted
from .lora import check_targets
from .model import dtype_name, training_model
from .prepare import prepare
from .run_plan import log_plan, trainer_plan
from .start import started_run
from .streaming import StreamCheckpoints, stream_dataset
from .trainer import NonFiniteLoss, VlmTrainer, causal_lm_loss
from .trainer_inputs import (
    batch_collator,
    batch_lengths,
    best_by_scorer,
    encoded_datasets,
    environ,
    render_ahead,
    run_callbacks,
    tensorboard_dir,
    trace_file,
    warn_if_engine_unused,
)

log = logging.getLogger("vlmtune")

TRL_STAGES = {"dpo": dpo_trainer, "grpo": grpo_trainer}
"""train.stage -> the builder of its TRL trainer (sft trains with :class:`VlmTrainer`)."""


def train(cfg: Config, resume: str | None = None, overwrite: bool = False, force: bool = False) -> RunResult:
    """Fine-tune ``cfg.model`` on ``cfg.data`` and write the run directory.

    ``resume``: ``"auto"`` (the newest complete checkpoint of this run, if any) or a checkpoint folder; the run
    continues with its optimizer, scheduler, RNG and data position. A changed config key that breaks an exact
    resume is refused unless ``force``. ``overwrite``: replace the run already in ``train.output_dir`` (without it
    or ``resume`` such a folder is refused). Ctrl-C raises :class:`TrainingInterrupted` after saving a checkpoint
    (with ``train.save_steps``).
    """
    check_runnable(cfg)
    run_dir = Path(cfg.train.output_dir)
    with started_run(cfg, run_dir, resume, overwrite, force) as checkpoint:
        set_seed(cfg.train.seed)
        data = prepare(cfg)  # data first: every record is checked in seconds, before any weights are loaded
        # The arguments before the model: under a ZeRO-3 launch they make each weight load straight into its shards.
        args = training_arguments(cfg, run_dir, has_val=bool(data.val_samples))
        model = training_model(cfg, data.spec, args.world_size)
        train_ds, val_ds = encoded_datasets(cfg, data)
        collator = batch_collator(cfg, data, args.world_size, model)
        stop = StopOnInterrupt(save=bool(cfg.train.save_steps))
        callbacks = run_callbacks(cfg, run_dir, stop, resumed=checkpoint is not None)
        if cfg.data.streaming:  # records read, checked and rendered as training reaches them
            train_ds = stream_dataset(cfg, data.renderer, run_dir, args, checkpoint)
            callbacks.append(StreamCheckpoints(train_ds))
        tensorboard = tensorboard_dir(run_dir, args)
        if checkpoint is not None:
            log.info("resuming from %s", checkpoint)
        eval_epochs = cfg.train.eval_epochs if val_ds is not None else None
        scorer = best_by_scorer(cfg, data)
        lengths = batch_lengths(cfg, data.train) if not cfg.data.streaming else None
        trace = trace_file(cfg, run_dir, args.process_index)
        trainer = None
        try:
            with environ("TENSORBOARD_LOGGING_DIR", str(tensorboard)):  # read when the Trainer makes its callbacks
                if cfg.train.stage in TRL_STAGES:  # TRL's trainer over the same model, arguments and callbacks
                    trainer = TRL_STAGES[cfg.train.stage](cfg, data, model, args, callbacks)
                else:
                    trainer = VlmTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
                                         data_collator=collator, callbacks=callbacks, compute_loss_func=causal_lm_loss,
                                         max_tokens_per_batch=cfg.train.max_tokens_per_batch, eval_epochs=eval_epochs,
                                         packed=cfg.train.packing, score_generations=scorer, train_lengths=lengths,
                                         trace_file=trace, render_ahead=render_ahead(cfg, args.device))
                warn_if_engine_unused(trainer)
                plan = trainer_plan(trainer)  # on every process: building the loader is accelerate's business
                if args.should_log:
                    log_plan(cfg, plan, data.train, data.val, dtype_name(model), str(args.device), run_dir,
                             weights_dir(cfg, run_dir))
                # Ctrl-C finishes the step and saves it (one process only: several would have to agree on the step).
                with stop.catching_ctrl_c(enabled=args.world_size == 1):
                    output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        except KeyboardInterrupt:  # a second Ctrl-C, or one in a data-parallel run: stopped mid-step, nothing saved
            raise _interrupted(run_dir, trainer.state.global_step if trainer else 0, stop) from None
        except NonFiniteLoss as e:
            raise _diverged(run_dir, e) from None
        if stop.stopped_at is not None:
            raise _stopped_at_step_end(run_dir, stop)
        return finish(cfg, trainer, model, data, output, run_dir)


def check_runnable(cfg: Config) -> None:
    """Refuse, before anything loads, what this machine or this config cannot do."""
    t = cfg.train
    if t.method.quantized and not torch.cuda.is_available():
        raise ConfigError(f"train.method={t.method} needs a CUDA GPU (bitsandbytes 4-bit weights); this machine has "
                          f"none. Use train.method={t.method.unquantized} here.")
    check_config(cfg)
    check_targets(cfg)  # a wrong lora.targets name stops the run before any data or weight is read


def _interrupted(run_dir: Path, step: int, stop: StopOnInterrupt) -> TrainingInterrupted:
    kept = checkpoints(run_dir / "checkpoints")
    return TrainingInterrupted(step, kept[-1] if kept else None, saves=stop.save)


def _stopped_at_step_end(run_dir: Path, stop: StopOnInterrupt) -> TrainingInterrupted:
    saved = run_dir / "checkpoints" / f"checkpoint-{stop.stopped_at}"
    kept = checkpoints(run_dir / "checkpoints")
    return TrainingInterrupted(stop.stopped_at, saved if saved in kept else kept[-1] if kept else None,
                               saves=stop.save)


def _diverged(run_dir: Path, e: NonFiniteLoss) -> TrainingError:
    kept = checkpoints(run_dir / "checkpoints")
    where = f"last good checkpoint: {kept[-1]}" if kept else "no checkpoint was saved (train.save_steps)"
    return TrainingError(f"{e}. The run stopped; {where}. Check those samples or lower train.lr")
