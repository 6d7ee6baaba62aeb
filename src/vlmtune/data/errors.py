"""Errors that name the file, the record and the field."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A problem with the user's data."""


class RecordError(DataError):
    """A problem with one record: ``train.jsonl:12 field 'messages[1].role': unknown role 'bot'``."""

    def __init__(self, path: str | Path, line: int, problem: str, field: str | None = None, hint: str = ""):
        self.path, self.line, self.problem, self.field, self.hint = Path(path), line, problem, field, hint
        super().__init__(str(self))

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def __str__(self) -> str:
        loc = self.where + (f" field {self.field!r}" if self.field else "")
        return f"{loc}: {self.problem}" + (f" ({self.hint})" if self.hint else "")


class SampleError(DataError):
    """A problem found while rendering a sample (its id is ``file:line``)."""

    def __init__(self, sample_id: str, problem: str):
        self.sample_id, self.problem = sample_id, problem
        super().__init__(f"{sample_id}: {problem}")
