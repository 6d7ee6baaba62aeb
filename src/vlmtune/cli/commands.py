"""What each subcommand does; heavy imports happen inside, so ``vlmtune --help`` is instant."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import ConfigError
from ..data.errors import DataError
from ..models.registry import UnknownFamilyError

# Errors caused by the user's input: printed as one clear message, no traceback.
USER_ERRORS = (ConfigError, DataError, UnknownFamilyError, FileNotFoundError)


def train(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..train import build_model
    from ..train import train as run_training
    from ..train.lora import format_table, parameter_table

    cfg = load_config(args.config, args.overrides)
    if args.dry_run:
        spec, _, model = build_model(cfg)
        print(f"{cfg.model.path} (family {spec.name}), method {cfg.train.method}\n"
              + format_table(parameter_table(model, spec)))
        return 0
    result = run_training(cfg)
    print(f"adapter: {result.weights_dir}\nmetrics: {result.run_dir / 'metrics.json'}")
    for key, value in result.metrics.items():
        print(f"  {key}: {value}")
    return 0


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
    renderer = Renderer(load_processor(args.model, spec), spec)
    print(generate(model, renderer, [prompt], args.max_new_tokens, progress=False)[0])
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
