"""Which weights ``vlmtune eval`` and ``vlmtune predict`` load: ``--model`` / ``--adapter`` where given, else the
weights of the run whose ``config.yaml`` is followed (``RUN/adapter`` on the run's base, or a full fine-tune's
``RUN/model``), so that following a run scores what the run trained, not the model it started from."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

from .settings import Settings


@dataclass(frozen=True)
class Weights:
    """The weights a command loads."""

    settings: Settings
    """The command's settings; ``settings.model`` is the checkpoint to load (a full fine-tune's ``RUN/model``)."""
    adapter: str | None
    """The adapter folder loaded on top, or None."""
    why: str
    """Where they come from, for the line the command prints."""

    @property
    def model(self) -> str:
        return self.settings.require_model()

    def describe(self) -> str:
        """One line naming the weights loaded and where they come from."""
        on = f"adapter {self.adapter} on {self.model}" if self.adapter else self.model
        return f"weights: {on} ({self.why})"


def weights_for(settings: Settings, args: argparse.Namespace, say: bool = True) -> Weights:
    """The weights for ``settings`` resolved from ``args`` (``model``, ``adapter``). With ``say``, one line on
    stderr names them when a run config is followed (without one, the command line names them already)."""
    weights = _choose(settings, args)
    if say and settings.source is not None:
        print(weights.describe(), file=sys.stderr)
    return weights


def _choose(settings: Settings, args: argparse.Namespace) -> Weights:
    adapter = getattr(args, "adapter", None)
    if adapter:
        return Weights(settings, adapter, "--adapter")
    if getattr(args, "model", None):
        return Weights(settings, None, "--model, no adapter")
    run = settings.source.parent if settings.source is not None else None
    method = settings.cfg.train.method
    saved = method.weights_dir(run) if run is not None else None
    if saved is None or not saved.is_dir():
        settings.require_model()
        missing = f"; {saved} not found" if saved is not None and _is_run(run) else ""
        return Weights(settings, None, f"the config's model.path, no adapter{missing}")
    why = f"the weights of the run {run}"
    if method.trains_adapter:
        settings.require_model()
        return Weights(settings, str(saved), why)
    # A full fine-tune: RUN/model loads alone, and the config's model.path is the base it is compared with.
    return Weights(dataclasses.replace(settings, model=str(saved)), None, why)


def _is_run(folder: Path) -> bool:
    """Whether ``folder`` looks like a `vlmtune train` run that has not saved its weights (yet)."""
    return (folder / "train.log").is_file() or (folder / "checkpoints").is_dir()
