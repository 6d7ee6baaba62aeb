"""One training run, top to bottom: config -> data -> model -> Trainer -> adapter + metrics."""

from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import EarlyStoppingCallback, TrainingArguments, set_seed

from ..config import Config, ConfigError, dump_config
from ..config.rules import check_config
from ..config.schema import DataConfig
from ..data import Collator, DataError, EncodedDataset, Renderer, Sample
from ..data.cache import CachedRenderer
from ..data.check import TOO_LONG, CheckReport, check_dataset
from ..data.collate import placeholder_image_features
from ..evaluate import compare
from ..evaluate.report import loss_curve_png
from ..evaluate.run import check_references
from ..files import make_readable
from ..models import FamilySpec, load_model, load_processor, resolve_dtype, spec_for
from ..models.kernels import use_liger_kernels
from . import run_folder
from .callbacks import MetricsFile, ReadableCheckpoints
from .checkpoints import checkpoint_step, checkpoints, resolve_resume
from .interrupt import StopOnInterrupt, TrainingInterrupted
from .lora import apply_lora, check_targets, format_table, parameter_table, prepare_full
from .resume_check import CurrentIntervals, check_resume
from .run_plan import log_plan, trainer_plan
from .trainer import NonFiniteLoss, VlmTrainer, causal_lm_loss

log = logging.getLogger("vlmtune")


@dataclass
class RunResult:
    run_dir: Path
    weights_dir: Path
    """The adapter folder (LoRA) or the full model folder."""
    metrics: dict = field(default_factory=dict)


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
    # One run per folder: only the main process checks it and holds the lock (the others see its files).
    main_process = run_folder.is_main_process()
    early = logging.handlers.BufferingHandler(capacity=10_000)  # what is said before train.log may be opened
    log.addHandler(early)
    log.setLevel(logging.INFO)
    with run_folder.RunLock(run_dir) if main_process else contextlib.nullcontext(), _removed(early):
        if main_process:
            run_folder.prepare(run_dir, resume, overwrite)
        checkpoint = resolve_resume(resume, run_dir / "checkpoints")
        if main_process and checkpoint is not None:
            check_resume(checkpoint.parent.parent / "config.yaml", cfg, force)
            run_folder.cut_metrics(run_dir, checkpoint_step(checkpoint))
        run_dir.mkdir(parents=True, exist_ok=True)
        if main_process:
            dump_config(cfg, run_dir / "config.yaml")
        # One log file per run: data-parallel workers (RANK > 0) log to their console only.
        log_file = logging.FileHandler(run_dir / "train.log", mode="a" if checkpoint else "w") if main_process \
            else None
        if log_file:
            for record in early.buffer:
                log_file.handle(record)
            log.addHandler(log_file)
        log.removeHandler(early)
        try:
            return _train(cfg, run_dir, checkpoint)
        finally:
            if log_file:
                log.removeHandler(log_file)
                log_file.close()


def check_runnable(cfg: Config) -> None:
    """Refuse, before anything loads, what this machine or this config cannot do."""
    t = cfg.train
    if t.method == "qlora" and not torch.cuda.is_available():
        raise ConfigError("train.method=qlora needs a CUDA GPU (bitsandbytes 4-bit weights); this machine has none. "
                          "Use train.method=lora here.")
    check_config(cfg)
    check_targets(cfg)  # a wrong lora.targets name stops the run before any data or weight is read


def _train(cfg: Config, run_dir: Path, checkpoint: Path | None) -> RunResult:
    set_seed(cfg.train.seed)

    # Data first: every record is checked in seconds, before any weights are loaded.
    spec = spec_for(cfg.model.path, cfg.model.components)
    processor = load_processor(cfg.model.path, spec, cfg.data.min_pixels, cfg.data.max_pixels)
    renderer = Renderer(processor, spec, cfg.data.max_length, cfg.data.image_size)
    train_report = checked_report(cfg.data.train, cfg.data, renderer, "data.train")
    train_samples = train_report.samples
    val_report = checked_report(cfg.data.val, cfg.data, renderer, "data.val") if cfg.data.val else None
    val_samples = val_report.samples if val_report else []
    if val_samples and (cfg.eval.at_end or cfg.train.best_by != "loss"):  # a bad reference stops it before training
        check_references(renderer, val_samples[:cfg.eval.max_samples], cfg.eval.metric_names())

    # The arguments before the model: under a ZeRO-3 launch they make transformers load each weight straight
    # into its shards (zero.Init), so no process holds the whole model. Not for full fine-tuning: transformers
    # 5.24 saves a model loaded that way under other weight names (model.model.layers...), which would not load.
    args = training_arguments(cfg, run_dir, has_val=bool(val_samples))
    with _zero3_init_off() if cfg.train.method == "full" else contextlib.nullcontext():
        model = build_model(cfg, spec)
    if any(hasattr(p, "ds_numel") for p in model.parameters()):
        log.info("weights partitioned over the %d processes as they loaded (ZeRO-3)", args.world_size)
    log.info("trainable parameters (%s, family %s):\n%s", cfg.train.method, spec.name,
             format_table(parameter_table(model, spec)))

    encoder = CachedRenderer(renderer, cfg.data.cache_dir) if cfg.data.cache_dir else renderer
    train_ds = EncodedDataset(train_samples, encoder, cache=cfg.data.cache_in_memory)
    val_ds = EncodedDataset(val_samples, encoder, cache=cfg.data.cache_in_memory) if val_samples else None
    placeholder = None
    if image_in_every_batch(cfg.data.image_in_every_batch, args.world_size, [*train_samples, *val_samples]):
        placeholder = placeholder_image_features(renderer)
        log.info("batches without an image get a placeholder image (%d tokens, masked out of attention and loss)",
                 len(placeholder["input_ids"]))
    tensorboard_dir = Path(os.environ.get("TENSORBOARD_LOGGING_DIR", run_dir / "tensorboard"))
    stop = StopOnInterrupt(save=bool(cfg.train.save_steps))
    callbacks = [MetricsFile(run_dir / "metrics.jsonl", append=checkpoint is not None), CurrentIntervals(), stop,
                 ReadableCheckpoints()]
    if cfg.train.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(cfg.train.early_stopping_patience))
    if "tensorboard" in args.report_to and args.should_log:
        log.info("TensorBoard: tensorboard --logdir %s", tensorboard_dir)
    if checkpoint is not None:
        log.info("resuming from %s", checkpoint)
    trainer = None
    try:
        with _env("TENSORBOARD_LOGGING_DIR", str(tensorboard_dir)):  # read when the Trainer makes its callbacks
            trainer = VlmTrainer(
                model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
                data_collator=Collator(processor.tokenizer.pad_token_id, placeholder_image=placeholder),
                callbacks=callbacks,
                compute_loss_func=causal_lm_loss, max_tokens_per_batch=cfg.train.max_tokens_per_batch,
                eval_epochs=cfg.train.eval_epochs if val_ds is not None else None,
                score_generations=generation_scorer(cfg, renderer, val_samples)
                if cfg.train.best_by != "loss" and val_samples else None,
                train_lengths=[t + v for t, v in train_report.lengths] if cfg.train.group_by_length
                or cfg.train.max_tokens_per_batch else None,
                trace_file=run_dir / f"samples.rank{args.process_index}.jsonl" if cfg.train.trace_samples else None,
            )
            warn_if_engine_unused(trainer)
            weights_dir = run_dir / ("model" if cfg.train.method == "full" else "adapter")
            plan = trainer_plan(trainer)  # on every process: building the loader is accelerate's business
            if args.should_log:
                log_plan(cfg, plan, train_report, val_report, _dtype_name(model), str(args.device), run_dir,
                         weights_dir)
            # Ctrl-C finishes the step and saves it (one process only: several would have to agree on the step).
            with stop.catching_ctrl_c(enabled=args.world_size == 1):
                output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except KeyboardInterrupt:  # a second Ctrl-C, or one in a data-parallel run: stopped mid-step, nothing saved
        kept = checkpoints(run_dir / "checkpoints")
        raise TrainingInterrupted(trainer.state.global_step if trainer else 0, kept[-1] if kept else None,
                                  saves=stop.save) from None
    except NonFiniteLoss as e:
        kept = checkpoints(run_dir / "checkpoints")
        where = f"last good checkpoint: {kept[-1]}" if kept else "no checkpoint was saved (train.save_steps)"
        raise TrainingError(f"{e}. The run stopped; {where}. Check those samples or lower train.lr") from None
    if stop.stopped_at is not None:
        saved = run_dir / "checkpoints" / f"checkpoint-{stop.stopped_at}"
        kept = checkpoints(run_dir / "checkpoints")
        raise TrainingInterrupted(stop.stopped_at, saved if saved in kept else kept[-1] if kept else None,
                                  saves=stop.save)
    # Every process takes part in the last validation and the save: under ZeRO-3 / FSDP the weights are sharded
    # and gathering them needs all ranks; the main process alone writes files.
    trainer.score_generations = None  # the held-out evaluation below generates once more, base and tuned
    val_loss = trainer.evaluate()["eval_loss"] if val_ds is not None else None
    trainer.save_model(str(weights_dir))
    # Under FSDP and ZeRO-3 each forward gathers the weight shards of all processes, so every process generates
    # the held-out answers (transformers' synced_gpus keeps them in step); the main process alone writes them.
    # Otherwise the main process alone generates: a full fine-tune's base copy is then loaded once, not per GPU.
    sharded = trainer.is_fsdp_enabled or _zero3()
    scores = evaluate_run(cfg, model, renderer, val_samples, run_dir, write=args.should_save) \
        if val_ds is not None and cfg.eval.at_end and (sharded or args.should_save) else {}
    if not args.should_save:
        return RunResult(run_dir=run_dir, weights_dir=weights_dir, metrics={})
    if cfg.train.method == "full":
        processor.save_pretrained(weights_dir)
    write_loss_curve(run_dir / "metrics.jsonl", run_dir / "loss.png")
    metrics = {"train_loss": output.training_loss, "steps": output.global_step,
               "train_runtime_s": output.metrics.get("train_runtime"), "family": spec.name}
    if val_ds is not None:
        metrics["val_loss"] = val_loss
        metrics.update(scores)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log.info("final metrics: %s", json.dumps(metrics))
    make_readable(run_dir)  # safetensors writes the weights 0600
    return RunResult(run_dir=run_dir, weights_dir=weights_dir, metrics=metrics)


@contextlib.contextmanager
def _removed(handler: logging.Handler):
    try:
        yield
    finally:
        log.removeHandler(handler)


@contextlib.contextmanager
def _env(key: str, value: str):
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


def image_in_every_batch(setting: str | bool, world_size: int, samples: list[Sample]) -> bool:
    """Whether batches without an image get the placeholder image (``data.image_in_every_batch``)."""
    if setting == "auto":
        return world_size > 1 and any(not s.images for s in samples)
    return bool(setting)


def _dtype_name(model: torch.nn.Module) -> str:
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
    return "/".join(dtypes)


def _zero3() -> bool:
    from transformers.integrations import deepspeed

    return deepspeed.is_deepspeed_zero3_enabled()


@contextlib.contextmanager
def _zero3_init_off():
    """Models loaded in the block are whole, even in a ZeRO-3 run: transformers would otherwise partition them
    at load (``zero.Init``), and outside a DeepSpeed engine nothing gathers the pieces back for a forward."""
    from transformers.integrations import deepspeed

    if not _zero3():
        yield
        return
    ref = deepspeed._hf_deepspeed_config_weak_ref
    deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        deepspeed._hf_deepspeed_config_weak_ref = ref


class TrainingError(RuntimeError):
    """The run cannot go on (e.g. the loss is no longer finite); the message says why and what was kept."""


def write_loss_curve(metrics_log: Path, out: Path) -> None:
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
    if e.compare_base and cfg.train.method == "full":  # no adapter to switch off: load the checkpoint again
        with _zero3_init_off():
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
    out = comparison.write(run_dir / "eval", loss_log=run_dir / "metrics.jsonl", task=e.task,
                           model=cfg.model.path, adapter=str(run_dir / "adapter") if cfg.train.method != "full"
                           else None)
    log.info("held-out evaluation (%s):\n%s", out, comparison.summary())
    return values


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


def checked_samples(path: str, data: DataConfig, renderer: Renderer, key: str) -> list[Sample]:
    """The usable samples of a data file, after the checks of ``vlmtune data check``.

    Unusable records and over-long samples are dropped with a count (or stop the run, per
    ``data.on_bad_record`` / ``data.on_too_long``); a file with no usable sample stops it, naming why.
    """
    return checked_report(path, data, renderer, key).samples


def checked_report(path: str, data: DataConfig, renderer: Renderer, key: str) -> CheckReport:
    """:func:`checked_samples` with the whole check report: ``report.lengths`` holds the (text, visual) token
    counts of each usable sample, in the order of ``report.samples``."""
    report = check_dataset(path, data.format, data.read_options(), renderer, shrink=data.on_too_long == "shrink")
    if report.shrunk:
        log.info("%s: %s", key, report.shrunk_line().replace("max_length", "data.max_length", 1))
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
                        f"run `vlmtune data check {shlex.quote(str(path))}` for the full list")
    if report.warnings:
        log.warning("%s: %d warnings (samples kept), e.g. %s", key, len(report.warnings), report.warnings[0])
    log.info("%s: %d samples from %s (format %s)", key, len(report.samples), path, report.format)
    return report


def build_model(cfg: Config, spec: FamilySpec | None = None, base: torch.nn.Module | None = None) -> torch.nn.Module:
    """The model with exactly the weights ``cfg`` trains left trainable (QLoRA: the language model in 4 bits).

    ``base``: an already built model to prepare instead of loading ``cfg.model.path`` (random-init benchmarks).
    """
    spec = spec or spec_for(cfg.model.path, cfg.model.components)
    method = cfg.train.method
    quantization = quantization_config(cfg, spec) if method == "qlora" else None
    model = base if base is not None else load_model(cfg.model.path, resolve_dtype(cfg.model.dtype), quantization)
    if method == "full":
        return prepare_full(model, spec, cfg.freeze)
    if quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, cfg.train.gradient_checkpointing)
    model = apply_lora(model, spec, cfg.lora, method, cfg.freeze)
    if cfg.train.gradient_checkpointing:
        # Frozen embeddings give activations without grad; checkpointed blocks need their inputs to carry one.
        model.enable_input_require_grads()
    return model


def quantization_config(cfg: Config, spec: FamilySpec):
    """bitsandbytes 4-bit config for QLoRA: the language model quantised, the vision tower, projector and head
    kept in full precision (quantising the small vision tower saves little memory and costs accuracy)."""
    from transformers import BitsAndBytesConfig

    q = cfg.quantization
    kept = [c for c in ("vision", "projector") if c not in q.components] + ["lm_head"]
    keep = [prefix for c in kept for prefix in spec.components.get(c, ())]
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=q.quant_type, bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=_DTYPES[q.compute_dtype], llm_int8_skip_modules=keep)


_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _optimizer(name: str) -> str:
    if name == "auto":
        return "adamw_torch_fused" if torch.cuda.is_available() else "adamw_torch"
    return name


def report_to(setting: list[str] | str) -> list[str]:
    """transformers integrations to log to: the requested ones that are installed (auto: TensorBoard)."""
    from transformers.integrations import get_available_reporting_integrations

    if setting == "none":
        return []
    available = set(get_available_reporting_integrations())
    if setting == "auto":
        if "tensorboard" not in available:
            log.info("no TensorBoard logs: tensorboard is not installed (pip install 'vlmtune[track]')")
        return ["tensorboard"] if "tensorboard" in available else []
    for name in setting:
        if name not in available:
            log.warning("train.report_to: %s is not installed; not logging to it", name)
    return [name for name in setting if name in available]


def _tf32(setting: bool | None) -> bool | None:
    if setting and not torch.cuda.is_available():
        log.warning("train.tf32: no CUDA GPU here, so TF32 matmuls do not apply; training in plain fp32")
        return None
    return setting


def training_arguments(cfg: Config, run_dir: Path, has_val: bool) -> TrainingArguments:
    """transformers' TrainingArguments for ``cfg``. With ``train.eval_epochs``, ``eval_steps`` holds a stand-in
    that :class:`VlmTrainer` replaces once the steps of an epoch are known."""
    t = cfg.train
    dtype = resolve_dtype(cfg.model.dtype) if t.autocast else None
    evaluate_every = has_val and (t.eval_steps is not None or t.eval_epochs is not None)
    eval_steps = t.eval_steps or t.save_steps or 1
    return TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio if t.warmup_ratio is not None else t.warmup_steps,  # a float < 1 is a ratio
        lr_scheduler_type=t.scheduler,
        max_grad_norm=t.max_grad_norm,
        eval_strategy="steps" if evaluate_every else "no",
        eval_steps=eval_steps if evaluate_every else None,
        logging_steps=t.logging_steps,
        save_strategy="steps" if t.save_steps else "no",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=bool(t.save_steps and evaluate_every),
        metric_for_best_model=f"eval_{t.best_by}" if t.save_steps and evaluate_every else None,
        greater_is_better=t.best_by != "loss",
        activation_checkpointing=t.gradient_checkpointing,  # transformers 5's name for gradient checkpointing
        activation_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        optim=_optimizer(t.optimizer),
        seed=t.seed,
        data_seed=t.seed,
        tf32=_tf32(t.tf32),
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=False,  # the collator needs pixel_values, image_grid_thw, mm_token_type_ids
        report_to=report_to(t.report_to),
        disable_tqdm=not t.progress,
        dataloader_num_workers=t.dataloader_workers,
        dataloader_persistent_workers=t.dataloader_workers > 0,  # workers keep what they cached between epochs
        use_liger_kernel=use_liger_kernels(),
    )
