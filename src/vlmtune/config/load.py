"""Load a Config from YAML plus ``key=value`` overrides, with errors that name the key."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..core.errors import ConfigError
from .schema import Config


def load_config(path: str | Path | None, overrides: list[str] = (), base: dict | None = None) -> Config:
    """Read ``path`` (YAML), apply dotted overrides such as ``train.lr=1e-4`` and validate."""
    raw = read_raw(path, overrides, base)
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_describe(e, str(path) if path else "<overrides>")) from None


def read_raw(path: str | Path | None, overrides: list[str] = (), base: dict | None = None) -> dict[str, Any]:
    """The YAML mapping of ``path`` (over ``base``) with the dotted overrides applied, not yet validated."""
    raw: dict[str, Any] = dict(base or {})
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of sections (model:, data:, train: ...)")
        raw.update(loaded)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        _set_dotted(raw, key.strip(), yaml.safe_load(value))
    return raw


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a section")
    node[leaf] = value


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"{source}: {error.error_count()} problem(s) in the config"]
    return "\n".join(lines + [f"  {line}" for line in describe_errors(error)])


def describe_errors(error: ValidationError) -> list[str]:
    """One line per problem of a failed validation, each naming its dotted key."""
    lines = []
    for err in error.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key{_did_you_mean(err['loc'])}")
        elif err["type"] == "missing":
            lines.append(f"{key}: required key is missing")
        else:
            lines.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
    return lines


def _did_you_mean(loc: tuple) -> str:
    model: type[BaseModel] = Config
    for part in loc[:-1]:
        annotation = model.model_fields.get(str(part))
        if annotation is None or not isinstance(annotation.annotation, type):
            return ""
        model = annotation.annotation
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(model.model_fields)}"


def dump_config(config: Config, path: str | Path) -> None:
    """Write the resolved config (every default filled in) next to a run's outputs."""
    Path(path).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
