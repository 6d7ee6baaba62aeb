"""What each subcommand does; heavy imports happen inside, so ``vlmtune --help`` is instant."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import ConfigError
from ..data.errors import DataError
from ..models.registry import UnknownFamilyError

# Errors caused by the user's input or data: printed as one clear message, no traceback.
USER_ERRORS = (ConfigError, DataError, UnknownFamilyError, FileNotFoundError, FileExistsError)


def train(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..train import build_model
    from ..train import train as run_training
    from ..train.lora import format_table, parameter_table

    cfg = load_config(args.config, args.overrides)
    if args.dry_run:
        import torch

        from ..models import spec_for
        from ..models.infer import is_inferred, unregistered_warning

        spec = spec_for(cfg.model.path, cfg.model.components)
        method, note = cfg.train.method, ""
        if cfg.train.method == "qlora" and not torch.cuda.is_available():
            # Same modules, same trainable counts: only the frozen weights' storage differs.
            cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"method": "lora"})})
            note = " (no CUDA here: counted without 4-bit quantisation, which changes no trainable count)"
        model = build_model(cfg, spec)
        shown = spec.components if is_inferred(spec) or cfg.model.components else None
        print(f"{cfg.model.path} (family {spec.name}), method {method}{note}\n"
              + format_table(parameter_table(model, spec), shown))
        if is_inferred(spec):
            print(unregistered_warning(spec))
        return 0
    from ..train.run import TrainingError

    try:
        result = run_training(cfg, resume=args.resume)
    except TrainingError as e:
        print(f"vlmtune train: {e}", file=sys.stderr)
        return 1
    _leave_process_group()
    if not result.metrics:  # a data-parallel worker (RANK > 0): the main process reports the run
        return 0
    print(f"{result.weights_dir.name}: {result.weights_dir}\nmetrics: {result.run_dir / 'metrics.json'}")
    for key, value in result.metrics.items():
        print(f"  {key}: {value}")
    return 0


def _leave_process_group() -> None:
    """End a data-parallel run together: every process waits for the others (the main one may still be writing
    files) and closes the process group, instead of one exiting while its communication threads still run."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def predict(args: argparse.Namespace) -> int:
    from ..data import ImagePart, Message, Renderer, Sample, TextPart
    from ..evaluate import generate
    from ..models import family_of, load_model, load_processor

    for image in args.image:
        if not Path(image).is_file():
            raise FileNotFoundError(f"image not found: {image}")
    spec = family_of(args.model)
    model = load_model(args.model)
    if args.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter)
    parts = [ImagePart(Path(p).resolve()) for p in args.image] + [TextPart(args.prompt)]
    prompt = Sample(messages=(Message("user", tuple(parts)),), id="<prompt>")
    min_pixels, max_pixels, image_size = image_settings(args, args.adapter or args.model)
    renderer = Renderer(load_processor(args.model, spec, min_pixels, max_pixels), spec, image_size=image_size)
    print(generate(model, renderer, [prompt], args.max_new_tokens, progress=False)[0])
    return 0


def image_settings(args: argparse.Namespace, weights: str) -> tuple[int | None, int | None, tuple | None]:
    """``(min_pixels, max_pixels, image_size)`` to show images at: the command's options, or else, for weights in a
    run directory of ``vlmtune train`` (RUN/adapter, RUN/model), the run's data settings, so a model is scored
    and used at the resolution it was trained at."""
    given = (args.min_pixels, args.max_pixels, tuple(args.image_size) if args.image_size else None)
    run_config = Path(weights).parent / "config.yaml"
    if any(v is not None for v in given) or not run_config.is_file():
        return given
    import yaml

    data = (yaml.safe_load(run_config.read_text()) or {}).get("data") or {}
    found = (data.get("min_pixels"), data.get("max_pixels"), tuple(data["image_size"]) if data.get("image_size")
             else None)
    if any(v is not None for v in found):
        shown = ", ".join(f"{k}={v}" for k, v in zip(("min_pixels", "max_pixels", "image_size"), found,
                                                     strict=True) if v is not None)
        print(f"images as in training ({run_config}): {shown}", file=sys.stderr)
    return found


def evaluate(args: argparse.Namespace) -> int:
    from ..data import Renderer
    from ..data.check import check_dataset
    from ..data.formats import ReadOptions
    from ..evaluate import compare
    from ..evaluate.metrics import TASK_METRICS, get_metric
    from ..models import family_of, load_model, load_processor

    if args.task not in TASK_METRICS:
        raise ConfigError(f"--task {args.task!r}: expected one of {', '.join(TASK_METRICS)}")
    metrics = args.metric or list(TASK_METRICS[args.task])
    try:
        [get_metric(name) for name in metrics]
    except ValueError as e:
        raise ConfigError(f"--metric: {e}") from None
    spec = family_of(args.model)
    min_pixels, max_pixels, image_size = image_settings(args, args.adapter or args.model)
    renderer = Renderer(load_processor(args.model, spec, min_pixels, max_pixels), spec, image_size=image_size)
    report = check_dataset(args.data, args.format, ReadOptions(), renderer)
    for problem in report.problems:
        print(f"skipped {problem}")
    samples = report.samples[:args.max_samples] if args.max_samples else report.samples
    if not samples:
        raise DataError(f"{args.data}: no usable sample to evaluate")
    model = load_model(args.model)
    if args.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter)
    base = load_model(args.base_model) if args.base_model else None
    result = compare(model, renderer, samples, metrics, base, args.compare_base or base is not None,
                     args.max_new_tokens, args.batch_size, not args.no_progress)
    out = result.write(args.output_dir, Path(args.loss_log) if args.loss_log else None, task=args.task,
                       model=args.model, adapter=args.adapter)
    print(result.summary())
    print(f"wrote {out / 'metrics.json'}, {out / 'predictions.jsonl'}, {out / 'report.html'}")
    return 0


def export(args: argparse.Namespace) -> int:
    import logging

    from ..export import SETTINGS_FILE, export_adapter, export_merged, require_adapter
    from ..models import family_of

    adapter = require_adapter(args.adapter)  # before any model is read
    log = logging.getLogger("vlmtune")
    if args.dtype and not args.merge:
        log.warning("export: --dtype applies to --merge only; ignored")
    if args.base_model_name and args.merge:
        log.warning("export: --base-model-name applies to the adapter export only; ignored with --merge")
    min_pixels, max_pixels, image_size = image_settings(args, str(adapter))
    settings = {"min_pixels": min_pixels, "max_pixels": max_pixels, "image_size": image_size}
    if args.merge:
        out = export_merged(args.model, adapter, args.output, args.dtype, **settings)
        print(f"merged model written to {out} (loads with AutoModelForImageTextToText.from_pretrained)")
        return 0
    # A run directory written by `vlmtune train` holds the adapter next to config.yaml and metrics.json.
    run_dir = adapter.parent if (adapter.parent / "config.yaml").is_file() else None
    model = Path(args.model)
    base = args.base_model_name or (str(model.resolve()) if model.is_dir() else args.model)
    out = export_adapter(adapter, args.output, run_dir, base_model=base, spec=family_of(args.model), **settings)
    print(f"adapter written to {out} (adapter_config.json, adapter_model.safetensors, README.md, "
          f"{SETTINGS_FILE})")
    return 0


def make_tiny_model(args: argparse.Namespace) -> int:
    from ..models import get_family
    from ..models.tiny import build_tiny

    out = build_tiny(get_family(args.family), args.out_dir, seed=args.seed)
    print(f"tiny {args.family} model written to {out}")
    return 0


def demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    scores = run_demo(args.root, progress=not args.no_progress)
    return 0 if scores["tuned_accuracy"] > scores["base_accuracy"] else 1


def _read_options(args: argparse.Namespace):
    from ..data.formats import ReadOptions

    columns = {}
    for item in args.column:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise DataError(f"--column {item!r}: expected FIELD=COLUMN, e.g. --column image=image_path")
        columns[key] = value
    return ReadOptions(columns=columns, prompt=args.prompt, system=args.system,
                       media_root=Path(args.media_root) if args.media_root else None,
                       allow_outside_root=args.allow_outside_root)


def data_check(args: argparse.Namespace) -> int:
    import json

    from ..data.check import check_dataset

    renderer = None
    if args.model:
        from ..data import Renderer
        from ..models import family_of, load_processor

        spec = family_of(args.model)
        processor = load_processor(args.model, spec, args.min_pixels, args.max_pixels)
        renderer = Renderer(processor, spec, args.max_length, args.image_size)
    report = check_dataset(args.path, args.format, _read_options(args), renderer, shrink=args.on_too_long == "shrink")
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0 if report.ok else 1


def data_convert(args: argparse.Namespace) -> int:
    from ..data.convert import convert

    print(convert(args.path, args.output, args.format, _read_options(args)))
    return 0


def data_split(args: argparse.Namespace) -> int:
    from ..data.convert import split

    out = Path(args.output_dir) if args.output_dir else Path(args.path).parent
    print(split(args.path, out, args.val, args.seed, args.format, _read_options(args)))
    return 0


def bench(args: argparse.Namespace) -> int:
    import json

    from ..config import load_config
    from ..perf.bench import format_report, run_bench

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    result = run_bench(cfg, args.steps, args.warmup, args.baseline, args.random_init, progress=False)
    print(format_report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def estimate(args: argparse.Namespace) -> int:
    import json

    from ..config import load_config
    from ..perf.estimate import estimate as run_estimate
    from ..perf.estimate import format_estimate

    cfg = load_config(args.config, args.overrides)
    result = run_estimate(cfg, args.data, args.gpu, args.mfu, args.architecture)
    print(json.dumps(result, indent=2) if args.json else format_estimate(result))
    return 0
