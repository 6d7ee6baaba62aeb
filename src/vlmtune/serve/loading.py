"""What is served under each name: the base, each adapter, and the settings each follows, resolved exactly as
``vlmtune predict`` resolves them (a run's ``config.yaml``, then overrides, then the command's options)."""

from __future__ import annotations

import argparse
import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError

log = logging.getLogger("vlmtune")

# The options `vlmtune predict` maps onto the run config; the server takes the same ones.
OPTIONS = ("model", "system", "min_pixels", "max_pixels", "image_size", "max_new_tokens")


@dataclass
class ServedModel:
    """One name the server answers to: the base (``adapter`` None) or one adapter (PEFT's adapter name)."""

    name: str
    adapter: str | None
    renderer: Any
    system: str | None
    """``data.system``: added to a conversation that has no system message."""
    max_new_tokens: int
    """``eval.max_new_tokens``: the answer length when a request sets none."""
    path: str | None = None
    """The adapter folder (None for the base)."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Held while the renderer encodes: a processor's tokenizer is not safe to call from several threads."""


def adapter_name(path: str | Path) -> str:
    """The name a bare ``--adapter PATH`` is served under: its folder's name, or its run's for ``RUN/adapter``."""
    path = Path(path).resolve()
    return path.parent.name if path.name == "adapter" and (path.parent / "config.yaml").is_file() else path.name


def parse_adapters(items: list[str]) -> dict[str, str]:
    """``--adapter [NAME=]PATH`` options as ``{name: path}``; a repeated name is an error."""
    adapters: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not re.fullmatch(r"[\w.:-]+", name):  # a path that holds '=' is taken whole
            name, path = adapter_name(item), item
        if not path:
            raise ConfigError(f"--adapter {item!r}: expected NAME=PATH or PATH")
        if name in adapters:
            raise ConfigError(f"--adapter {item!r}: the name {name!r} is given twice; name them with NAME=PATH")
        adapters[name] = path
    return adapters


@dataclass(frozen=True)
class Plan:
    """What would be served, before anything is loaded: the base and each adapter with the settings each follows."""

    model_path: str
    base_name: str
    adapters: dict[str, str]
    settings: dict[str, Any]
    """Served name -> :class:`vlmtune.cli.settings.Settings`, the base's first."""


def plan_served(model: str | None, adapters: dict[str, str], config: str | Path | None, overrides: list[str],
                options: dict[str, Any]) -> Plan:
    """The :class:`Plan` for ``model`` (a hub id, checkpoint folder or run folder) and ``adapters``; the base
    follows ``config`` or, without it, the run config of the first adapter (or of the model), as ``predict`` does."""
    model, adapters = _unpack_run(model, adapters)
    for name, path in adapters.items():
        if not Path(path).is_dir():
            raise FileNotFoundError(f"adapter {name!r}: folder not found: {path}")
    first = next(iter(adapters.values()), None)
    base = _settings(model, first, config, overrides, options, say=True)
    model_path = base.require_model()
    base_name = _base_name(model_path)
    if base_name in adapters:
        raise ConfigError(f"--adapter {base_name}=...: {base_name!r} is the base model's name; pick another")
    settings = {base_name: base}
    for name, path in adapters.items():
        settings[name] = _settings(model, path, config, overrides, options, say=False)
        trained_on = settings[name].model
        if trained_on and trained_on != model_path and Path(trained_on).resolve() != Path(model_path).resolve():
            log.warning("adapter %s: its run trained from %s; served on %s", name, trained_on, model_path)
    return Plan(model_path, base_name, adapters, settings)


def load_served(plan: Plan) -> tuple[Any, dict[str, ServedModel]]:
    """The loaded model (a PEFT model when there are adapters) and the served names, the base's first."""
    from ..models.load import load_for_inference

    renderers: dict[tuple, Any] = {}
    # PEFT names the adapter PeftModel.from_pretrained loads "default"; the others get their own.
    peft_names = {name: "default" if i == 0 else f"adapter_{i}" for i, name in enumerate(plan.adapters)}
    served = {name: _served(name, peft_names.get(name), plan.adapters.get(name), settings, plan.model_path, renderers)
              for name, settings in plan.settings.items()}
    first = next(iter(plan.adapters.values()), None)
    loaded = load_for_inference(plan.model_path, plan.settings[plan.base_name].cfg.model.dtype, first)
    for name, path in list(plan.adapters.items())[1:]:
        loaded.load_adapter(path, adapter_name=peft_names[name])
    return loaded, served


def _unpack_run(model: str | None, adapters: dict[str, str]) -> tuple[str | None, dict[str, str]]:
    """A `vlmtune train` run folder given as the model: its adapter (served under the run's name) on the run's base,
    or a full fine-tune's ``RUN/model``."""
    run = Path(model) if model else None
    if run is None or not (run / "config.yaml").is_file():
        return model, adapters
    if (run / "adapter").is_dir():
        name = run.resolve().name
        if name in adapters:
            raise ConfigError(f"--adapter {name}=...: {name!r} is the name of the run given as the model")
        return None, {name: str(run / "adapter"), **adapters}
    if (run / "model").is_dir():
        return str(run / "model"), adapters
    raise FileNotFoundError(f"{run}: a run folder without adapter/ or model/ (has training finished?)")


def _settings(model: str | None, adapter: str | None, config: str | Path | None, overrides: list[str],
              options: dict[str, Any], say: bool):
    from ..cli.settings import resolve

    args = argparse.Namespace(model=model, adapter=adapter, config=str(config) if config else None,
                              overrides=overrides, **{k: options.get(k) for k in OPTIONS if k != "model"})
    return resolve(args, OPTIONS, say=say)


def _served(name: str, adapter: str | None, path: str | None, settings, model_path: str,
            renderers: dict[tuple, Any]) -> ServedModel:
    from ..data.settings import renderer_for

    d = settings.cfg.data
    key = (d.min_pixels, d.max_pixels, d.max_length, tuple(d.image_size) if d.image_size else None)
    if key not in renderers:
        renderers[key] = (renderer_for(model_path, d), threading.Lock())
    renderer, lock = renderers[key]
    return ServedModel(name, adapter, renderer, d.system, settings.cfg.eval.max_new_tokens, path, lock)


def _base_name(model_path: str) -> str:
    path = Path(model_path)
    if not path.is_dir():
        return model_path  # a hub id, as clients name it
    path = path.resolve()
    # A full fine-tune's RUN/model is named after its run.
    return path.parent.name if path.name == "model" and (path.parent / "config.yaml").is_file() else path.name


__all__ = ["OPTIONS", "Plan", "ServedModel", "adapter_name", "load_served", "parse_adapters", "plan_served"]
