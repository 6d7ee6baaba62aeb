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
    from ..train import build_model
    from ..train import train as run_training
    from ..train.lora import check_targets, format_table, parameter_table

    if args.dry_run:
        import torch

        from ..models import spec_for
        from ..models.infer import is_inferred, unregistered_warning

        spec = spec_for(cfg.model.path, cfg.model.components)
        method, note = cfg.train.method, ""
        if method.quantized and not torch.cuda.is_available():
            # Same modules, same trainable counts: only the frozen weights' storage differs.
            cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"method": method.unquantized})})
            note = " (no CUDA here: counted without 4-bit quantisation, which changes no trainable count)"
        check_targets(cfg, spec)
        model = build_model(cfg, spec)
        shown = spec.components if is_inferred(spec) or cfg.model.components else None
        print(f"{cfg.model.path} (family {spec.name}), method {method}{note}\n"
              + format_table(parameter_table(model, spec), shown))
        from ..data.show import dry_run_sample

        print(dry_run_sample(cfg, spec))
        if is_inferred(spec):
            print(unregistered_warning(spec))
        return 0
    from ..train.interrupt import TrainingInterrupted

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
    _leave_process_group()
    if not result.metrics:  # a data-parallel worker (RANK > 0): the main process reports the run
        return 0
    # The run has logged the final metrics once already ("final metrics: ..."): where they are is what is left.
    print(f"{result.weights_dir.name}: {result.weights_dir}\nmetrics: {result.run_dir / 'metrics.json'}")
    return 0


def interrupted_message(e, config: str, overrides: list[str]) -> str:
    """What a Ctrl-C left and the command that resumes it (the user's own config and overrides)."""
    import shlex

    command = "vlmtune train " + shlex.join([config, *overrides]) + " --resume"
    if e.checkpoint is not None and e.checkpoint.name == f"checkpoint-{e.step}":
        return f"vlmtune train: interrupted at step {e.step}; checkpoint saved: {e.checkpoint}\nresume with: {command}"
    if e.checkpoint is not None:
        return (f"vlmtune train: interrupted at step {e.step}, in the middle of a step; the newest checkpoint is "
                f"{e.checkpoint}\nresume from it with: {command}")
    if e.saves:
        return (f"vlmtune train: interrupted at step {e.step}, in the middle of a step, before the first checkpoint; "
                "nothing was saved")
    return (f"vlmtune train: interrupted at step {e.step}; nothing was saved (train.save_steps is not set). Set "
            "train.save_steps=N to write a checkpoint every N steps and on Ctrl-C, which --resume continues from")


def _leave_process_group() -> None:
    """End a data-parallel run together: every process waits for the others (the main one may still be writing
    files) and closes the process group, instead of one exiting while its communication threads still run."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


PREDICT_OPTIONS = ("model", "system", "min_pixels", "max_pixels", "image_size", "max_new_tokens")
EVAL_OPTIONS = ("model", "format", "task", "metric", "compare_base", "max_new_tokens", "batch_size", "max_samples",
                "min_pixels", "max_pixels", "image_size")
READ_OPTIONS = ("format", "column", "prompt", "system", "media_root", "allow_outside_root")
CHECK_OPTIONS = (*READ_OPTIONS, "model", "max_length", "on_too_long", "min_pixels", "max_pixels", "image_size")


def predict(args: argparse.Namespace) -> int:
    from .settings import resolve

    settings = resolve(args, PREDICT_OPTIONS)
    model_path, d = settings.require_model(), settings.cfg.data
    question = args.prompt or d.prompt
    if not question:
        raise ConfigError("--prompt is required (the run config has no data.prompt)")
    for image in args.image:
        if not Path(image).is_file():
            raise FileNotFoundError(f"image not found: {image}")
    from ..core.sample import ImagePart, Message, Sample, TextPart
    from ..data.settings import renderer_for
    from ..evaluate import generate

    parts = [ImagePart(Path(p).resolve()) for p in args.image] + [TextPart(question)]
    # The system prompt as the data readers add it: first, to a conversation that has none.
    system = (Message("system", (TextPart(d.system),)),) if d.system else ()
    prompt = Sample(messages=(*system, Message("user", tuple(parts))), id="<prompt>")
    renderer = renderer_for(model_path, d)
    renderer.encode_prompt(prompt)  # an image the processor cannot take is refused before the weights load
    model = load_for_inference(model_path, settings.cfg.model.dtype, args.adapter)
    print(generate(model, renderer, [prompt], settings.cfg.eval.max_new_tokens, progress=False)[0])
    return 0


def load_for_inference(model_path: str, dtype: str, adapter: str | None = None):
    """The model (with ``adapter``) as a run holds it: ``model.dtype`` resolved as training resolves it, on the
    GPU where there is one."""
    from ..models import load_model, resolve_dtype
    from ..models.load import inference_device_map

    model = load_model(model_path, resolve_dtype(dtype), device_map=inference_device_map())
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    return model


def evaluate(args: argparse.Namespace) -> int:
    from .settings import resolve

    settings = resolve(args, EVAL_OPTIONS)
    cfg, model_path = settings.cfg, settings.require_model()
    d, e = cfg.data, cfg.eval
    data = args.data or (d.val if settings.source else None)
    if not data:
        raise ConfigError("--data is required (no run config with a data.val)")
    from ..data.check import check_dataset
    from ..data.settings import read_options, renderer_for
    from ..evaluate import compare

    renderer = renderer_for(model_path, d)
    report = check_dataset(data, d.format, read_options(d), renderer, shrink=d.on_too_long == "shrink")
    for problem in report.problems:
        print(f"skipped {problem}")
    samples = report.samples[:e.max_samples] if e.max_samples else report.samples
    if not samples:
        raise DataError(f"{data}: no usable sample to evaluate")
    model = load_for_inference(model_path, cfg.model.dtype, args.adapter)
    base_path = args.base_model or (settings.full_run_base() if e.compare_base else None)
    base = load_for_inference(base_path, cfg.model.dtype) if base_path else None
    result = compare(model, renderer, samples, e.metric_names(), base, e.compare_base or base is not None,
                     e.max_new_tokens, e.batch_size, not args.no_progress)
    out = result.write(args.output_dir, Path(args.loss_log) if args.loss_log else None, task=e.task,
                       model=model_path, adapter=args.adapter)
    print(result.summary())
    print(f"wrote {out / 'metrics.json'}, {out / 'predictions.jsonl'}, {out / 'report.html'}")
    return 0


def export(args: argparse.Namespace) -> int:
    import logging

    from ..export import SETTINGS_FILE, require_adapter
    from .settings import resolve

    adapter = require_adapter(args.adapter)  # before any model is read
    # The run config names the base when --model is not given, and the image settings the run trained with.
    resolved = resolve(args, ("model", "min_pixels", "max_pixels", "image_size"), say=args.merge or not args.model)
    model_path, d = resolved.require_model(), resolved.cfg.data
    from ..export import export_adapter, export_merged
    from ..models import spec_for

    log = logging.getLogger("vlmtune")
    if args.dtype and not args.merge:
        log.warning("export: --dtype applies to --merge only; ignored")
    if args.base_model_name and args.merge:
        log.warning("export: --base-model-name applies to the adapter export only; ignored with --merge")
    settings = {"min_pixels": d.min_pixels, "max_pixels": d.max_pixels, "image_size": d.image_size}
    if args.merge:
        # The merged folder's processor shows images as the run trained on them.
        out = export_merged(model_path, adapter, args.output, args.dtype, **settings)
        print(f"merged model written to {out} (loads with AutoModelForImageTextToText.from_pretrained)")
        return 0
    # A run directory written by `vlmtune train` holds the adapter next to config.yaml and metrics.json.
    run_dir = adapter.parent if (adapter.parent / "config.yaml").is_file() else None
    model = Path(model_path)
    base = args.base_model_name or (str(model.resolve()) if model.is_dir() else model_path)
    out = export_adapter(adapter, args.output, run_dir, base_model=base, spec=spec_for(model_path, check_split=False),
                         **settings)
    written = "README.md" + (f", {SETTINGS_FILE}" if (out / SETTINGS_FILE).is_file() else "")
    print(f"adapter written to {out} (adapter_config.json, adapter_model.safetensors, {written})")
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
