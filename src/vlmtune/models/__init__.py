"""Model families: the registry of per-family facts, loading, and tiny offline models."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .registry import family_names, get_family
from .spec import COMPONENTS, FamilySpec

if TYPE_CHECKING:
    from .load import load_model, load_processor, resolve_dtype, spec_for

# The loaders import torch and transformers: loaded on first use, so the registry alone stays light.
_LAZY = {"load_model", "load_processor", "resolve_dtype", "spec_for"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(".load", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["COMPONENTS", "FamilySpec", "family_names", "get_family", "load_model", "load_processor", "resolve_dtype",
           "spec_for"]
