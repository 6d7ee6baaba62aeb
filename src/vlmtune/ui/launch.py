"""``vlmtune ui``'s options turned into a served page: the models to chat with, loaded once, then the server."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import ConfigError

INSTALL = "the web UI needs gradio: pip install 'vlmtune[ui]'"


def adapter_names(values: list[str]) -> dict[str, str]:
    """``--adapter NAME=PATH`` values as ``{name: path}``; a bare PATH is named after its run folder
    (``runs/a/adapter`` -> ``a``) or itself."""
    adapters: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            folder = Path(value.rstrip("/"))
            name, path = (folder.parent.name if folder.name == "adapter" else folder.name) or value, value
        if not name or not path:
            raise ConfigError(f"--adapter {value!r}: expected NAME=PATH, e.g. tuned=runs/a/adapter")
        if name in adapters:
            raise ConfigError(f"--adapter {value!r}: the name {name!r} is given twice")
        if not Path(path).is_dir():
            raise FileNotFoundError(f"--adapter {name}: adapter folder not found: {path}")
        adapters[name] = path
    return adapters


def load_engine(model: str | None, adapters: dict[str, str], config: str | None):
    """The serving engine for the Chat tab, or None where no model is named (by --model or the config)."""
    if config and not Path(config).is_file():
        raise FileNotFoundError(f"--config: config not found: {config}")
    if not model and config:
        from ..config import load_config

        model = load_config(config).model.path or None
    if not model:
        if adapters:
            raise ConfigError("--adapter needs a base: --model BASE or --config RUN/config.yaml")
        return None
    from ..serve.engine import Engine

    return Engine.load(model, adapters or None, config)


def run_ui(args: argparse.Namespace) -> int:
    """Load the models, then serve the page until Ctrl-C."""
    from .app import serve

    runs = Path(args.runs)
    engine = load_engine(args.model, adapter_names(args.adapter), args.config)
    try:
        serve(runs, args.host, args.port, engine, args.model, args.config)
    except KeyboardInterrupt:
        pass
    return 0
