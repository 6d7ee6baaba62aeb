"""Data: formats in, one canonical sample out, rendered and masked for a model family."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .formats import get_reader, read_samples, reader_names, register_reader

if TYPE_CHECKING:
    from .collate import Collator, EncodedDataset
    from .labels import IGNORE_INDEX, assistant_labels
    from .render import Renderer

# Names backed by torch load on first use, so reading a config or checking a data file does not import torch.
_LAZY = {"Collator": ".collate", "EncodedDataset": ".collate", "IGNORE_INDEX": ".labels", "Renderer": ".render",
         "assistant_labels": ".labels"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "IGNORE_INDEX", "Collator", "EncodedDataset", "Renderer", "assistant_labels", "get_reader", "read_samples",
    "reader_names", "register_reader",
]
