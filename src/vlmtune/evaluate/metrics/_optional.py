"""Lazy imports of the metric libraries, so ``import vlmtune`` never needs them."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, package: str) -> ModuleType:
    """Import ``module`` (from the pip package ``package``) or explain how to install the ``eval`` extra."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"this metric needs the {package!r} package: pip install 'vlmtune[eval]'") from err
