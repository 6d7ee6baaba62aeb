"""``vlmtune ui``'s options turned into a served page: the models to chat with, loaded once, then the server."""

from __future__ import annotations

import argparse
from pathlib import Path

INSTALL = "the web UI needs gradio: pip install 'vlmtune[ui]'"


def load_engine(model: str | None, adapters: list[str], config: str | None, overrides: list[str]):
    """The serving engine for the Chat tab (``--adapter [NAME=]PATH`` read as ``vlmtune serve`` reads it), or None
    where no model, adapter or config is given."""
    if not (model or adapters or config):
        return None
    from ..serve.engine import Engine
    from ..serve.loading import parse_adapters

    return Engine.from_settings(model, parse_adapters(adapters), config, overrides)


def run_ui(args: argparse.Namespace) -> int:
    """Load the models, then serve the page until Ctrl-C."""
    engine = load_engine(args.model, args.adapter, args.config, args.overrides)  # bad options fail before the page
    from .app import serve

    model, config = args.model, args.config
    if model and (Path(model) / "config.yaml").is_file():  # a run folder: its config names the base for the Data tab
        model, config = None, config or str(Path(model) / "config.yaml")
    try:
        serve(Path(args.runs), args.host, args.port, engine, model, config, args.config)
    except KeyboardInterrupt:
        pass
    finally:
        if engine is not None:
            engine.close()
    return 0
