"""``vlmtune serve``: resolve what is served, pick the backend, then run vlmtune's server or exec ``vllm serve``."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from .backend import VllmPlan, choose, vllm_command
from .loading import OPTIONS, Plan, parse_adapters, plan_served

INSTALL_HINT = "pip install 'vlmtune[serve]'"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``vlmtune serve`` (besides ``--config`` and the overrides, which all run commands share)."""
    p.add_argument("--model", help="base model: hub id, checkpoint folder (a merged export), or a `vlmtune train` run "
                   "folder (default: the run config's model.path)")
    p.add_argument("--adapter", action="append", default=[], metavar="[NAME=]PATH",
                   help="LoRA adapter served under NAME (repeat for several; a bare PATH is named after its folder, "
                   "RUN/adapter after its run); the base is served under its own name too")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="default 8000")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: env VLMTUNE_API_KEY, else none)")
    p.add_argument("--allow-local-files", metavar="DIR",
                   help="let requests name image files (file:// URLs or paths) under DIR; others are refused")
    p.add_argument("--max-batch-size", type=int, default=8,
                   help="most concurrent requests generated together in one batch (default 8)")
    p.add_argument("--backend", choices=["auto", "transformers", "vllm"], default="auto",
                   help="auto: vllm serve where vLLM is installed and can serve the model as the run trained it, "
                   "else vlmtune's transformers server")
    p.add_argument("--system", help="system prompt for conversations without one (default: the run's data.system)")
    p.add_argument("--max-new-tokens", type=int, help="answer length when a request sets no max_tokens "
                   "(default: eval.max_new_tokens)")
    p.add_argument("--min-pixels", type=int)
    p.add_argument("--max-pixels", type=int)


def serve(args: argparse.Namespace) -> int:
    """Run the server until interrupted (or replace this process with ``vllm serve``)."""
    from ..core.errors import ConfigError

    if args.max_batch_size < 1:
        raise ConfigError(f"--max-batch-size: expected at least 1, got {args.max_batch_size}")
    if args.allow_local_files and not Path(args.allow_local_files).is_dir():
        raise FileNotFoundError(f"--allow-local-files: folder not found: {args.allow_local_files}")
    options = {k: getattr(args, k, None) for k in OPTIONS if k != "model"}
    plan = plan_served(args.model, parse_adapters(args.adapter), args.config, list(args.overrides or []), options)
    api_key = args.api_key or os.environ.get("VLMTUNE_API_KEY") or None
    choice = choose(args.backend, vllm_plan(plan))
    print(choice.line(), flush=True)
    if not api_key and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host} without --api-key: whoever reaches the port can use the model",
              file=sys.stderr, flush=True)
    if choice.backend == "vllm":
        argv = vllm_command(vllm_plan(plan), args.host, args.port, api_key, args.allow_local_files,
                            args.max_batch_size)
        shown = [("***" if api_key and a == api_key else a) for a in argv]
        print(f"running: {shlex.join(shown)}", flush=True)
        os.execv(argv[0], argv)
    try:
        import uvicorn

        from .app import create_app
    except ImportError as e:
        print(f"vlmtune serve: error: the server needs FastAPI and uvicorn ({e}): {INSTALL_HINT}", file=sys.stderr)
        return 2
    from .engine import Engine

    engine = Engine.from_plan(plan, args.max_batch_size)
    app = create_app(engine, api_key, args.allow_local_files)
    print(f"serving {', '.join(engine.model_names())} at http://{args.host}:{args.port}/v1"
          + (" (API key required)" if api_key else ""), flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    finally:
        engine.close()
    return 0


def vllm_plan(plan: Plan) -> VllmPlan:
    """What ``vllm serve`` would be given for ``plan``, and the run settings it would not reproduce."""
    from transformers import AutoConfig

    from ..export import check_vllm_compatible
    from ..models import spec_for

    base = plan.settings[plan.base_name].cfg
    spec = spec_for(plan.model_path, check_split=False)
    problems = {name: found for name, path in plan.adapters.items() if (found := check_vllm_compatible(path, spec))}
    found: dict[str, list[str]] = {}
    for name, settings in plan.settings.items():
        d = settings.cfg.data
        kinds = [f"data.system {d.system!r} (added to conversations without a system prompt)" if d.system else "",
                 f"data.image_size (images stretched to {d.image_size[0]}x{d.image_size[1]})" if d.image_size else "",
                 "pixel limits other than the base's"
                 if (d.min_pixels, d.max_pixels) != (base.data.min_pixels, base.data.max_pixels) else ""]
        for kind in filter(None, kinds):
            found.setdefault(kind, []).append(name)
    differences = [f"{what} of {', '.join(names)}" for what, names in found.items()]
    pixels = {k: v for k, v in (("min_pixels", base.data.min_pixels), ("max_pixels", base.data.max_pixels)) if v}
    architectures = tuple(AutoConfig.from_pretrained(plan.model_path).architectures or ())
    return VllmPlan(plan.model_path, plan.base_name, dict(plan.adapters), architectures, base.model.dtype, pixels,
                    problems, differences)
