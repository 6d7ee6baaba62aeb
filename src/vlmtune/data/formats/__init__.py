"""Dataset readers: each turns one file format into canonical :class:`~vlmtune.core.sample.Sample` objects.

A reader is a small class with a ``name``, a ``detect(path, first_record)`` test and a
``read(path, options)`` generator that yields a Sample or a RecordError per record, so one bad record
never hides the others. Register it with :func:`register_reader` and ``format: auto`` finds it; its name must be
listed in ``vlmtune.core.names.FORMAT_NAMES``, which the config checks ``data.format`` against.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ...core.errors import DataError, RecordError
from ...core.names import FORMAT_NAMES, require_name
from ...core.sample import Sample
from .common import ReadOptions, first_json_records, split_entry


class Reader(Protocol):
    name: str

    def detect(self, path: Path, first_record: Any) -> bool: ...

    def read(self, path: Path, options: ReadOptions) -> Iterator[Sample | RecordError]: ...


_READERS: dict[str, Reader] = {}


def register_reader(reader: Reader) -> Reader:
    require_name(reader.name, FORMAT_NAMES, "data format")
    _READERS[reader.name] = reader
    return reader


def reader_names() -> list[str]:
    return sorted(_READERS)


def _first_records(path: Path) -> tuple[list[Any], RecordError | None]:
    """The first few parsable records of a JSON file (none for other kinds), and the first unparsable one's error."""
    if path.is_file() and path.suffix.lower() in (".json", ".jsonl"):
        return first_json_records(path)
    return [], None


def get_reader(path: str | Path, format: str = "auto") -> Reader:
    """The reader for ``format``, or the one that recognises the file when ``format`` is ``auto``.

    An explicit ``format`` that cannot read the kind of file ``path`` is (a JSON format given a parquet, arrow,
    CSV or dataset folder; the table or hf reader given another kind) is refused, naming the format that reads it.
    """
    path = Path(path)
    if format != "auto":
        try:
            reader = _READERS[format]
        except KeyError:
            raise DataError(f"unknown data format {format!r}; known: auto, {', '.join(reader_names())}") from None
    if not _source_exists(path):
        raise DataError(f"{path}: no such data file")
    if format != "auto":
        detected = detect_reader(path)
        kind = _file_kind(path)
        # A reader that reads another kind of file finds nothing in this one: say what the file is, not that
        # each of its records is broken.
        if detected is not None and detected.name != reader.name and (
                _READS_KIND.get(detected.name) or _READS_KIND.get(reader.name)):
            raise DataError(f"{path}: this is {kind}, not {reader.name} data: set data.format: {detected.name} "
                            "(or auto)")
        return reader
    found = detect_reader(path)
    if found is not None:
        return found
    raise DataError(f"{path}: format not recognised ({_first_record_shape(path)}); pass one of "
                    f"{', '.join(reader_names())} explicitly")


# Readers that recognise a file by its kind (suffix, folder layout), not by its records.
_READS_KIND = {"hf": True, "table": True, "llamafactory": True}


def detect_reader(path: Path) -> Reader | None:
    """The first registered reader (most specific first) that recognises ``path``; None where none does.

    A JSON file is recognised by its first parsable record that some reader recognises, looking at a few: a
    corrupt or comment first line is one unusable record, not a file of unknown format."""
    records, _ = _first_records(_file_part(path))
    for record in records or [None]:
        found = next((reader for reader in _READERS.values() if reader.detect(path, record)), None)
        if found is not None:
            return found
    return None


def _file_kind(path: Path) -> str:
    file = _file_part(path)
    if file.is_dir():
        return "a folder (a Hugging Face save_to_disk dataset)"
    kinds = {".parquet": "parquet", ".arrow": "arrow", ".csv": "CSV", ".tsv": "TSV", ".tab": "TSV",
             ".jsonl": "JSON lines", ".json": "JSON"}
    if file.name == "dataset_info.json" or "#" in str(path) and file != path:
        return "a dataset registry (dataset_info.json)"
    return kinds.get(file.suffix.lower(), f"a {file.suffix or 'suffix-less'} file")


def _first_record_shape(path: Path) -> str:
    """What the first record of ``path`` looks like, for a format nothing recognises."""
    records, error = _first_records(_file_part(path))
    record = records[0] if records else None
    if isinstance(record, dict):
        keys = ", ".join(repr(k) for k in list(record)[:12]) + (", ..." if len(record) > 12 else "")
        return f"the first record has keys {keys}" if record else "the first record is an empty object"
    if record is not None:
        return f"the first record is a JSON {type(record).__name__}, not an object"
    if _file_part(path).suffix.lower() in (".json", ".jsonl"):
        return "no JSON record could be read from it" + (f"; {error}" if error else "")
    return f"{_file_kind(path)}, which no reader takes"


def format_mismatch(path: str | Path, format: str) -> DataError | None:
    """For an explicit ``format`` whose reader found nothing usable in ``path``: the error naming the format the
    file looks like, where another reader recognises it; else None (the records' own problems say why)."""
    if format == "auto":
        return None
    detected = detect_reader(Path(path))
    if detected is None or detected.name == format:
        return None
    return DataError(f"{path} looks like {detected.name}, not {format}: set data.format: auto (or {detected.name})")


def _file_part(path: Path) -> Path:
    return split_entry(path)[0]


def input_files(path: str | Path) -> list[Path]:
    """Every file reading ``path`` reads: the file itself, each file of a dataset folder, or a dataset registry
    and its entry's data files."""
    path = Path(path)
    file = _file_part(path)
    if file.is_dir():
        return sorted(p for p in file.rglob("*") if p.is_file())
    files = [file]
    if _READERS["llamafactory"].detect(path, None):
        from .llamafactory import load_entry

        try:
            registry, entry = load_entry(path)
        except DataError:  # reading it will say why; the registry file itself is still an input
            return files
        data = registry.parent / entry["file_name"]
        files += sorted(p for p in data.iterdir() if p.is_file()) if data.is_dir() else [data]
    return files


def _source_exists(path: Path) -> bool:
    return _file_part(path).exists()


@dataclass
class ReadResult:
    """Every record of a file: the usable samples and, for each unusable record, why."""

    format: str
    samples: list[Sample] = field(default_factory=list)
    problems: list[RecordError] = field(default_factory=list)
    order: dict[str, int] = field(default_factory=dict, repr=False)
    """Each record's name (a sample's id, an error's ``where``) -> its position in the file(s), to list problems
    found at different stages in file order."""


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
        result.order.setdefault(item.where if isinstance(item, RecordError) else item.id, len(result.order))
    if result.problems and not result.samples:
        mismatch = format_mismatch(path, format)
        if mismatch is not None:
            raise mismatch
    return result


def read_samples(path: str | Path, format: str = "auto", options: ReadOptions | None = None) -> list[Sample]:
    """Read every sample of a data source; the first bad record raises a RecordError naming it."""
    samples = []
    for item in read_records(path, format, options):
        if isinstance(item, RecordError):
            if not samples:
                raise format_mismatch(path, format) or item
            raise item
        samples.append(item)
    return samples


# Registration order is detection order: the most specific formats first (preference pairs before the
# conversations they hold).
from . import gui_events, hf, preference  # noqa: E402,F401,I001
from . import llamafactory, llava, messages, qwen_tags, sharegpt, table  # noqa: E402,F401

__all__ = ["ReadOptions", "ReadResult", "Reader", "detect_reader", "format_mismatch", "get_reader", "input_files",
           "read_dataset", "read_records", "read_samples", "reader_names", "register_reader"]
