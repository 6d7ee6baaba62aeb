"""``vlmtune config validate``: every problem of a config at once, without importing torch."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from .load import describe_errors, read_raw
from .rules import format_problems, path_problems, run_problems
from .schema import Config


def validate_config(path: str | Path, overrides: list[str] = ()) -> tuple[Config | None, list[str]]:
    """``(config, problems)``: the validated config (None when the schema refuses it) and one line per problem:
    the schema's, the cross-key rules training applies, and data or model paths that do not exist.

    A file that cannot be read as a YAML mapping, or a malformed override, raises ConfigError."""
    raw = read_raw(path, overrides)
    problems: list[str] = []
    try:
        cfg: Config | None = Config.model_validate(raw)
    except ValidationError as e:
        cfg = None
        problems += describe_errors(e)
    if cfg is not None:
        problems += run_problems(cfg)
    else:  # the rules need a valid config; the format alone can still be checked
        data = raw.get("data")
        problems += format_problems(data.get("format")) if isinstance(data, dict) else []
    return cfg, problems + path_problems(raw)


def summary(cfg: Config) -> str:
    """One line: what the config trains, on what, and where it writes."""
    d, t = cfg.data, cfg.train
    return (f"model {cfg.model.path}, method {t.method}, data.train {d.train}"
            + (f", data.val {d.val} (eval {cfg.eval.task}: {', '.join(cfg.eval.metric_names())})" if d.val else "")
            + f", output {t.output_dir}")
