"""Dataset readers: each turns one file format into canonical :class:`~vlmtune.data.sample.Sample` objects.

A reader is a small class with a ``name``, a ``detect(path, first_record)`` test and a
``read(path, options)`` generator that yields a Sample or a RecordError per record, so one bad record
never hides the others. Register it with :func:`register_reader` and ``format: auto`` finds it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import DataError, RecordError
from ..sample import Sample
from .common import ReadOptions, first_json_record


class Reader(Protocol):
    name: str

    def detect(self, path: Path, first_record: Any) -> bool: ...

    def read(self, path: Path, options: ReadOptions) -> Iterator[Sample | RecordError]: ...


_READERS: dict[str, Reader] = {}


def register_reader(reader: Reader) -> Reader:
    _READERS[reader.name] = reader
    return reader


def reader_names() -> list[str]:
    return sorted(_READERS)


def _first_record(path: Path) -> Any:
    return first_json_record(path) if path.is_file() and path.suffix.lower() in (".json", ".jsonl") else None


def get_reader(path: str | Path, format: str = "auto") -> Reader:
    """The reader for ``format``, or the one that recognises the file when ``format`` is ``auto``."""
    path = Path(path)
    if format != "auto":
        try:
            reader = _READERS[format]
        except KeyError:
            raise DataError(f"unknown data format {format!r}; known: auto, {', '.join(reader_names())}") from None
    if not _source_exists(path):
        raise DataError(f"{path}: no such data file")
    if format != "auto":
        return reader
    record = _first_record(_file_part(path))
    for reader in _READERS.values():
        if reader.detect(path, record):
            return reader
    raise DataError(f"{path}: format not recognised; pass one of {', '.join(reader_names())} explicitly")


def _file_part(path: Path) -> Path:
    """``dataset_info.json#entry`` names an entry of a dataset registry file; the file is the part before #."""
    text = str(path)
    if "#" in text and not path.exists():
        return Path(text.split("#", 1)[0])
    return path


def _source_exists(path: Path) -> bool:
    return _file_part(path).exists()


@dataclass
class ReadResult:
    """Every record of a file: the usable samples and, for each unusable record, why."""

    format: str
    samples: list[Sample] = field(default_factory=list)
    problems: list[RecordError] = field(default_factory=list)


def read_records(path: str | Path, format: str = "auto",
                 options: ReadOptions | None = None) -> Iterator[Sample | RecordError]:
    reader = get_reader(path, format)
    return reader.read(Path(path), options or ReadOptions())


def read_dataset(path: str | Path, format: str = "auto", options: ReadOptions | None = None) -> ReadResult:
    """Read a whole data source, keeping the good samples and a line-numbered reason for each bad record."""
    reader = get_reader(path, format)
    result = ReadResult(format=reader.name)
    for item in reader.read(Path(path), options or ReadOptions()):
        (result.problems if isinstance(item, RecordError) else result.samples).append(item)
    return result


def read_samples(path: str | Path, format: str = "auto", options: ReadOptions | None = None) -> list[Sample]:
    """Read every sample of a data source; the first bad record raises a RecordError naming it."""
    samples = []
    for item in read_records(path, format, options):
        if isinstance(item, RecordError):
            raise item
        samples.append(item)
    return samples


# Registration order is detection order: the most specific formats first.
from . import gui_events, hf, llava, messages, qwen_tags, registry, sharegpt, table  # noqa: E402,F401

__all__ = ["ReadOptions", "ReadResult", "Reader", "get_reader", "read_dataset", "read_records", "read_samples",
           "reader_names", "register_reader"]
