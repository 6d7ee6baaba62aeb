"""The user's errors, one class per layer under :class:`VlmtuneError`, and how every message names a record.

An error of this family says everything the user needs (the key, the file and record, what to change): the CLI
prints its message on one line, ``vlmtune <command>: error: <message>``, with no traceback, and exits 2. Each keeps
the Python base (``ValueError``, ``RuntimeError``) callers catch it by.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_ID_CHARS = 60


class VlmtuneError(Exception):
    """A user error: bad input, data, config or model choice, told in one line."""


class ConfigError(VlmtuneError, ValueError):
    """The config file or an override is wrong; the message lists every problem with its key."""


class DataError(VlmtuneError, ValueError):
    """A problem with the user's data."""


class RecordError(DataError):
    """A problem with one record: ``train.jsonl:12 field 'messages[1].role': unknown role 'bot'``.

    ``line`` is the line the record starts on (None for a dataset row), ``index`` its position in a JSON array
    or dataset (None for a line of a JSON lines or CSV file), ``record_id`` the record's own ``id``."""

    def __init__(self, path: str | Path, line: int | None, problem: str, field: str | None = None, hint: str = "",
                 index: int | None = None, record_id: str | int | None = None):
        self.path, self.line, self.problem, self.field, self.hint = Path(path), line, problem, field, hint
        self.index, self.record_id = index, record_id
        super().__init__(str(self))

    @property
    def where(self) -> str:
        return record_name(self.path, self.line, self.index, self.record_id)

    def __str__(self) -> str:
        loc = self.where + (f" field {self.field!r}" if self.field else "")
        return f"{loc}: {self.problem}" + (f" ({self.hint})" if self.hint else "")


class SampleError(DataError):
    """A problem found while rendering a sample (its id names the record, see :func:`record_name`)."""

    def __init__(self, sample_id: str, problem: str):
        self.sample_id, self.problem = sample_id, problem
        super().__init__(f"{sample_id}: {problem}")


class ModelError(VlmtuneError, ValueError):
    """The model (checkpoint, family, processor or its settings) cannot serve the run as configured."""


class UnknownFamilyError(ModelError):
    """No registered family handles a model_type."""


class TrainingError(VlmtuneError, RuntimeError):
    """The run cannot go on (e.g. the loss is no longer finite); the message says why and what was kept.
    ``vlmtune train`` reports it as ``vlmtune train: <message>`` with exit status 1: the run had started."""


def user_id(record: Any) -> str | int | None:
    """The record's own ``id`` (a string or an integer), or None where it has none."""
    value = record.get("id") if isinstance(record, dict) else None
    return value if isinstance(value, str | int) and not isinstance(value, bool) and value != "" else None


def record_name(path: str | Path, line: int | None, index: int | None = None, record_id: str | int | None = None
                ) -> str:
    """How every message names one record, unique within its file and findable in it.

    ``train.jsonl:12`` (a JSON lines or CSV line), ``train.json[3] (line 1)`` (element 3, counted from 0, of a JSON
    array, and the line it starts on), ``train.parquet[17]`` (row 17 of a dataset, counted from 0), each followed
    by the record's own id where it has one: ``train.jsonl:12 (id "q-0012")``, ``train.json[3] (line 1, id 7)``.
    """
    base = f"{path}:{line}" if index is None else f"{path}[{index}]"
    extra = [f"line {line}"] if index is not None and line is not None else []
    if record_id is not None:
        short = record_id if not isinstance(record_id, str) or len(record_id) <= _ID_CHARS else \
            record_id[:_ID_CHARS] + "..."
        extra.append(f"id {json.dumps(short, ensure_ascii=False)}")
    return base + (f" ({', '.join(extra)})" if extra else "")
