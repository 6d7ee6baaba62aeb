"""The settings a command follows: a run's config (``--config``, or the ``config.yaml`` of the run whose weights
it is given), then dotted ``key=value`` overrides, then the command's own options. Every default is the schema's,
so ``vlmtune eval`` after a run reads, renders and generates exactly as the run's own evaluation did."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..config import Config, load_config
from ..core.errors import ConfigError, DataError

# Command option (argparse dest) -> the config key it sets. A command maps the options it has.
OPTION_KEYS = {
    "model": "model.path",
    "format": "data.format",
    "column": "data.columns",
    "prompt": "data.prompt",
    "system": "data.system",
    "media_root": "data.media_root",
    "allow_outside_root": "data.allow_outside_root",
    "min_pixels": "data.min_pixels",
    "max_pixels": "data.max_pixels",
    "image_size": "data.image_size",
    "max_length": "data.max_length",
    "on_too_long": "data.on_too_long",
    "task": "eval.task",
    "metric": "eval.metrics",
    "compare_base": "eval.compare_base",
    "max_new_tokens": "eval.max_new_tokens",
    "batch_size": "eval.batch_size",
    "max_samples": "eval.max_samples",
}


@dataclass(frozen=True)
class Settings:
    cfg: Config
    """The run config with overrides and options applied; without a config file, the schema's defaults."""
    source: Path | None
    """The config file followed, or None."""
    model: str | None
    """The model: ``--model``, else the config's ``model.path``; None when neither says."""
    run_model: str | None = None
    """The config's own ``model.path`` (the base a run trained from), whatever ``--model`` says."""

    def full_run_base(self) -> str | None:
        """For the weights of a full fine-tune (``--model RUN/model``), the checkpoint the run started from: its
        evaluation compares against that base."""
        separate = self.source is not None and self.cfg.train.method.separate_base
        return self.run_model if separate and self.run_model and self.run_model != self.model else None

    def require_model(self) -> str:
        if not self.model:
            raise ConfigError("--model is required without a run config (--config RUN/config.yaml, or --adapter "
                              "RUN/adapter of a `vlmtune train` run)")
        return self.model


def resolve(args: argparse.Namespace, options: tuple[str, ...], say: bool = True) -> Settings:
    """The settings for a command whose ``args`` hold the ``options`` named (keys of :data:`OPTION_KEYS`),
    ``config`` and ``overrides``. With ``say``, one line on stderr names the config followed."""
    source, found_by = find_config(args)
    overrides = list(getattr(args, "overrides", None) or [])
    if source is not None:
        cfg = load_config(source, overrides)
    else:
        # No run: only model.path and data.train are required by the schema, and no command here reads data.train.
        cfg = load_config(None, overrides, base={"model": {"path": ""}, "data": {"train": ""}})
    run_model = cfg.model.path or None
    cfg = _apply(cfg, {OPTION_KEYS[name]: (name, value) for name in options
                       if (value := _option_value(args, name)) is not None})
    if say and source is not None:
        print(f"following the run config {source} ({found_by}); command options and overrides win",
              file=sys.stderr)
    return Settings(cfg=cfg, source=source, model=cfg.model.path or None, run_model=run_model)


def find_config(args: argparse.Namespace) -> tuple[Path | None, str]:
    """``(config file, how it was found)``: ``--config`` (a file, or a run folder for its config.yaml), else the
    ``config.yaml`` of the `vlmtune train` run that holds ``--adapter`` or ``--model`` (RUN/adapter, RUN/model,
    RUN/checkpoints/checkpoint-N)."""
    if getattr(args, "config", None):
        config = Path(args.config)
        # A run folder stands for its config.yaml.
        return (config / "config.yaml" if config.is_dir() else config), "--config"
    for option in ("adapter", "model"):
        weights = getattr(args, option, None)
        if not weights:
            continue
        weights = Path(weights)
        run = weights.parent if weights.name in ("adapter", "model") else \
            weights.parent.parent if weights.parent.name == "checkpoints" else None
        if run is not None and (run / "config.yaml").is_file():
            return run / "config.yaml", f"found next to --{option}"
    return None, ""


def _option_value(args: argparse.Namespace, name: str) -> Any:
    value = getattr(args, name, None)
    if name == "column" and value:
        columns = {}
        for item in value:
            key, sep, column = item.partition("=")
            if not sep or not key or not column:
                raise DataError(f"--column {item!r}: expected FIELD=COLUMN, e.g. --column image=image_path")
            columns[key] = column
        return columns
    return (value or None) if isinstance(value, list) else value


def _apply(cfg: Config, values: dict[str, tuple[str, Any]]) -> Config:
    """``cfg`` with each key set to its option's value, every section validated again. Sections are validated
    one by one: a run's ``train.best_by`` need not be a metric that an evaluation asks for."""
    sections: dict[str, dict[str, Any]] = {}
    options: dict[tuple[str, str], str] = {}
    for key, (option, value) in values.items():
        section, leaf = key.split(".")
        current = getattr(getattr(cfg, section), leaf)
        if leaf == "columns":  # the config's columns, with the ones the command names replaced
            value = {**current, **value}
        sections.setdefault(section, {})[leaf] = value
        options[section, leaf] = option
    updates = {}
    for section, fields in sections.items():
        current = getattr(cfg, section)
        try:
            updates[section] = type(current).model_validate({**current.model_dump(), **fields})
        except ValidationError as e:
            err = e.errors()[0]
            option = options.get((section, str(err["loc"][0])) if err["loc"] else ("", "")) or \
                next(o for (s, _), o in options.items() if s == section)
            raise ConfigError(f"--{option.replace('_', '-')}: {err['msg']} (got {err.get('input')!r})") from None
    return cfg.model_copy(update=updates)
