"""Dataset readers: each turns one file format into canonical :class:`~vlmtune.data.sample.Sample` objects.

A reader is a small class with a ``name``, a ``detect(path, first_record)`` test and a ``read(path)``
generator; register it with :func:`register_reader` and ``--format auto`` finds it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from ..errors import DataError
from ..sample import Sample


class Reader(Protocol):
    name: str

    def detect(self, path: Path, first_record: Any) -> bool: ...

    def read(self, path: Path) -> Iterator[Sample]: ...


_READERS: dict[str, Reader] = {}


def register_reader(reader: Reader) -> Reader:
    _READERS[reader.name] = reader
    return reader


def reader_names() -> list[str]:
    return sorted(_READERS)


def first_record(path: Path) -> Any:
    """The first JSON record of a JSONL file or JSON array (None when it is neither)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    return None
    return None


def get_reader(path: str | Path, format: str = "auto") -> Reader:
    """The reader for ``format``, or the one that recognises the file when ``format`` is ``auto``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    if format != "auto":
        try:
            return _READERS[format]
        except KeyError:
            raise DataError(f"unknown data format {format!r}; known: auto, {', '.join(reader_names())}") from None
    record = first_record(path)
    for reader in _READERS.values():
        if reader.detect(path, record):
            return reader
    raise DataError(f"{path}: format not recognised; pass one of {', '.join(reader_names())} explicitly")


def read_samples(path: str | Path, format: str = "auto") -> list[Sample]:
    """Read every sample of a data file; the first bad record raises a RecordError naming it."""
    return list(get_reader(path, format).read(Path(path)))


from . import messages  # noqa: E402,F401  (registers the built-in readers)

__all__ = ["Reader", "get_reader", "read_samples", "reader_names", "register_reader"]
