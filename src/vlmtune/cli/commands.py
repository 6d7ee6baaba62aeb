"""What each subcommand does; heavy imports happen inside, so ``vlmtune --help`` is instant."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.errors import ConfigError, DataError, TrainingError


def train(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..config.rules import check_config

    # The config first: a typo is reported before torch is imported.
    cfg = load_config(args.config, args.overrides)
    if not args.dry_run:
        check_config(cfg)
    if not cfg.train.progress:
        from ..quiet import quiet_progress_bars

        quiet_progress_bars()
    if args.dry_run:
        from ..train.dry_run import dry_run_report

        print(dry_run_report(cfg))
        return 0
    from ..train import train as run_training
    from ..train.finish import leave_process_group
    from ..train.interrupt import TrainingInterrupted, interrupted_message

    try:
        result = run_training(cfg, resume=args.resume, overwrite=args.overwrite, force=args.force)
    except TrainingError as e:
        print(f"vlmtune train: {e}", file=sys.stderr)
        return 1
    except TrainingInterrupted as e:
        print(interrupted_message(e, args.config, args.overrides), file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # outside the training steps (data check, model load, final save): no traceback
        print("vlmtune train: interrupted; the run did not finish", file=sys.stderr)
        return 130
    leave_process_group()
    if not result.metrics:  # a data-parallel worker (RANK > 0): the main process reports the run
        return 0
    # The run has logged the final metrics once already ("final metrics: ..."): where they are is what is left.
    print(f"{result.weights_dir.name}: {result.weights_dir}\nmetrics: {result.run_dir / 'metrics.json'}")
    return 0


PREDICT_OPTIONS = ("model", "system", "min_pixels", "max_pixels", "image_size", "max_new_tokens")
EVAL_OPTIONS = ("model", "format", "task", "metric", "compare_base", "max_new_tokens", "batch_size", "max_samples",
                "min_pixels", "max_pixels", "image_size")
READ_OPTIONS = ("format", "column", "prompt", "system", "media_root", "allow_outside_root")
CHECK_OPTIONS = (*READ_OPTIONS, "model", "max_length", "on_too_long", "min_pixels", "max_pixels", "image_size")


def predict(args: argparse.Namespace) -> int:
    from .run_weights import weights_for
    from .settings import resolve

    settings = resolve(args, PREDICT_OPTIONS)
    weights = weights_for(settings, args)
    question = args.prompt or settings.cfg.data.prompt
    if not question:
        raise ConfigError("--prompt is required (the run config has no data.prompt)")
    from ..evaluate.predict import predict as answer

    print(answer(weights.model, settings.cfg, args.image, question, weights.adapter))
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from .run_weights import weights_for
    from .settings import resolve

    weights = weights_for(resolve(args, EVAL_OPTIONS), args)
    settings, cfg, model_path = weights.settings, weights.settings.cfg, weights.model
    data = args.data or (cfg.data.val if settings.source else None)
    if not data:
        raise ConfigError("--data is required (no run config with a data.val)")
    from ..evaluate.command import evaluate_file

    base_path = args.base_model or (settings.full_run_base() if cfg.eval.compare_base else None)
    result, out = evaluate_file(cfg, model_path, data, args.output_dir, weights.adapter, base_path, args.loss_log,
                                progress=not args.no_progress, skipped=lambda problem: print(f"skipped {problem}"))
    print(result.summary())
    print(f"wrote {out / 'metrics.json'}, {out / 'predictions.jsonl'}, {out / 'report.html'}")
    return 0


def export(args: argparse.Namespace) -> int:
    from ..export import require_adapter
    from .settings import resolve

    adapter = require_adapter(args.adapter)  # before any model is read
    # The run config names the base when --model is not given, and the image settings the run trained with.
    resolved = resolve(args, ("model", "min_pixels", "max_pixels", "image_size"), say=args.merge or not args.model)
    model_path, d = resolved.require_model(), resolved.cfg.data
    from ..export.command import export_run

    print(export_run(model_path, adapter, args.output, args.merge, args.dtype, args.base_model_name,
                     d.min_pixels, d.max_pixels, d.image_size))
    return 0


def ui(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        from ..ui.launch import INSTALL

        print(f"vlmtune ui: error: {INSTALL}", file=sys.stderr)
        return 2
    from ..ui.launch import run_ui

    return run_ui(args)


def serve(args: argparse.Namespace) -> int:
    from ..serve.command import serve as run_server

    return run_server(args)


def config_validate(args: argparse.Namespace) -> int:
    from ..config.validate import summary, validate_config

    cfg, problems = validate_config(args.config, args.overrides)
    if problems:
        print(f"{args.config}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems))
        return 1
    print(f"{args.config}: ok\n  {summary(cfg)}")
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


def data_check(args: argparse.Namespace) -> int:
    import json

    report = check_report(args)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0 if report.ok else 1


def check_report(args: argparse.Namespace):
    """The :class:`~vlmtune.data.check.CheckReport` ``vlmtune data check ARGS`` prints (the web UI shows it too)."""
    from ..data.check import check_dataset
    from ..data.settings import read_options

    d, renderer = data_renderer(args, need_model=False)
    return check_dataset(args.path, d.format, read_options(d), renderer, shrink=d.on_too_long == "shrink")


def data_renderer(args: argparse.Namespace, need_model: bool):
    """The data settings ``data check`` / ``data show`` follow and the Renderer of their model (None for a check
    without one)."""
    from .settings import resolve

    settings = resolve(args, CHECK_OPTIONS)
    d = settings.cfg.data
    model = settings.require_model() if need_model else settings.model
    if not model:
        return d, None
    from ..data.settings import renderer_for

    return d, renderer_for(model, d)


def data_show(args: argparse.Namespace) -> int:
    from ..data.settings import read_options
    from ..data.show import show

    if args.n < 1:
        raise DataError(f"-n {args.n}: expected at least 1 sample")
    d, renderer = data_renderer(args, need_model=True)
    print(show(args.path, d.format, read_options(d), renderer, args.n, d.on_too_long == "shrink"))
    return 0


def data_convert(args: argparse.Namespace) -> int:
    from ..data.convert import convert
    from ..data.settings import read_options
    from .settings import resolve

    d = resolve(args, READ_OPTIONS).cfg.data
    print(convert(args.path, args.output, d.format, read_options(d)))
    return 0


def data_split(args: argparse.Namespace) -> int:
    from ..data.convert import split
    from ..data.settings import read_options
    from .settings import resolve

    d = resolve(args, READ_OPTIONS).cfg.data
    out = Path(args.output_dir) if args.output_dir else Path(args.path).parent
    print(split(args.path, out, args.val, args.seed, d.format, read_options(d)))
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
