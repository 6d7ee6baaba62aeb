"""CSV / TSV tables: one row per sample, an image column, an optional prompt column and an answer column.

::

    image_path,question,answer
    imgs/cat.jpg,What animal is this?,A cat.

Columns are found by common names (see :data:`DEFAULT_COLUMNS`) or named with ``ReadOptions.columns``
(``{"image": "image_path", "answer": "caption"}``). A fixed ``ReadOptions.prompt`` is every row's prompt
(``image_path,caption`` + "Describe the image.") unless ``columns`` names a prompt column, whose empty cells it
then fills; with neither, the user turn is the image alone. The image comes first in the user turn, then the
prompt. ``.csv`` is comma separated, ``.tsv`` / ``.tab`` tab separated; UTF-8 with or without a BOM.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ...core.errors import DataError, RecordError, user_id
from ...core.sample import ImagePart, Message, Part, Sample, TextPart
from . import register_reader
from .common import ReadOptions, Where, finish, media_root

_DELIMITERS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}

DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "image": ("image", "images", "image_path", "image_file", "img", "file", "filename", "file_name"),
    "prompt": ("prompt", "question", "query", "instruction"),
    "answer": ("answer", "caption", "label", "response", "text", "ground_truth"),
    "system": ("system", "system_prompt"),
}
"""Canonical column key -> header names (case-insensitive) recognised when ``columns`` does not name it;
the canonical name itself wins over the others."""

REQUIRED = ("image", "answer")


def resolve_columns(path: Path, names: Sequence[str], options: ReadOptions,
                    preferred: Mapping[str, Sequence[str]] | None = None) -> dict[str, str | None]:
    """Canonical key (image, prompt, answer, system) -> the source's column holding it, or None when absent.

    ``options.columns`` wins; otherwise common names are looked up. ``preferred`` lists, per key, columns
    the source's own types point at (a Hugging Face ``Image`` feature), tried before names. Raises one
    DataError naming every column that is missing or ambiguous, the columns there are, and the key to set.
    """
    unknown = sorted(set(options.columns) - set(DEFAULT_COLUMNS))
    if unknown:
        raise DataError(f"{path}: unknown columns key(s) {', '.join(unknown)}; "
                        f"the keys are {', '.join(DEFAULT_COLUMNS)}")
    listing = ", ".join(names) or "(none)"
    problems, found = [], {}
    for key, column in options.columns.items():
        if column not in names:
            problems.append(f"columns.{key} names {column!r}, which is not a column")
        found[key] = column
    taken = set(options.columns.values())
    for key, aliases in DEFAULT_COLUMNS.items():
        if key in options.columns or (key == "prompt" and options.prompt is not None):
            continue
        candidates = [c for c in (preferred or {}).get(key, ()) if c not in taken]
        if len(candidates) != 1:
            lowered = {n.strip().lower(): n for n in names if n not in taken}
            exact = lowered.get(key)
            candidates = [exact] if exact else [n for low, n in lowered.items() if low in aliases]
        if len(candidates) == 1:
            found[key] = candidates[0]
            taken.add(candidates[0])
        elif candidates:
            problems.append(f"several columns could hold the {key} ({', '.join(candidates)}): "
                            f"set columns.{key} to one of them")
        elif key in REQUIRED:
            problems.append(f"no {key} column found: set columns.{key} to the column that holds it")
    if problems:
        raise DataError(f"{path}: " + "; ".join(problems) + f". Columns: {listing}")
    return {key: found.get(key) for key in DEFAULT_COLUMNS}


def build_sample(images: list[ImagePart], prompt: str | None, answer: str, system: str | None, where: Where,
                 answer_field: str, meta: dict | None = None) -> Sample:
    """The one-turn conversation of a table row: [system], user (images, then prompt), assistant."""
    if not answer.strip():
        raise where.error("empty answer", answer_field)
    messages = [Message("system", (TextPart(system),))] if system else []
    user: list[Part] = [*images]
    if prompt:
        user.append(TextPart(prompt))
    messages += [Message("user", tuple(user)), Message("assistant", (TextPart(answer),))]
    return finish(messages, where, meta)


class TableReader:
    name = "table"

    def detect(self, path: Path, first_record: Any) -> bool:
        return path.is_file() and path.suffix.lower() in _DELIMITERS

    def read(self, path: Path, options: ReadOptions) -> Iterator[Sample | RecordError]:
        root = media_root(path, options)
        lines = _Lines(path)
        # The csv module takes text; decoding line by line keeps one bad byte from hiding the other rows.
        rows = csv.reader(lines, delimiter=_DELIMITERS.get(path.suffix.lower(), ","))
        try:
            header = next(rows, None)
        except csv.Error as e:
            raise DataError(f"{path}: cannot parse the header: {e}") from None
        if header is None:
            raise DataError(f"{path}: empty table, expected a header row")
        if lines.bad:
            raise DataError(f"{path}: the header is not UTF-8 text ({next(iter(lines.bad.values()))})")
        header = [h.strip() for h in header]
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise DataError(f"{path}: duplicate column name(s) {', '.join(dupes)} in the header")
        columns = resolve_columns(path, header, options)
        end = rows.line_num
        while True:
            start = end + 1
            try:
                row = next(rows)
            except StopIteration:
                return
            except csv.Error as e:  # e.g. a field past csv's size limit; the reader resumes at the next line
                end = rows.line_num
                yield RecordError(path, start, f"cannot parse the row: {e}")
                continue
            end = rows.line_num
            if not row:
                continue
            own_id = user_id(dict(zip(header, row, strict=True))) if len(row) == len(header) else None
            where = Where(path, start, root, options.allow_outside_root, record_id=own_id)
            bad = [(n, why) for n, why in lines.bad.items() if start <= n <= end]
            try:
                if bad:
                    raise where.error(f"not UTF-8 text ({bad[0][1]} on line {bad[0][0]})")
                yield _parse_row(header, row, columns, options, where)
            except RecordError as e:
                yield e


def _parse_row(header: list[str], fields: list[str], columns: dict[str, str | None], options: ReadOptions,
               where: Where) -> Sample:
    if len(fields) != len(header):
        raise where.error(f"{len(fields)} fields but the header has {len(header)}",
                          hint="a delimiter inside an unquoted field, or a missing quote?")
    row = dict(zip(header, fields, strict=True))
    image, prompt_col, answer, system_col = (columns[k] for k in ("image", "prompt", "answer", "system"))
    prompt = row[prompt_col] if prompt_col else None
    system = (row[system_col] if system_col else None) or options.system
    meta = {k: v for k, v in row.items() if k not in columns.values()}
    return build_sample([where.image(row[image].strip(), image)], prompt or options.prompt, row[answer], system,
                        where, answer, meta)


class _Lines:
    """A binary file's lines decoded one by one; ``bad`` maps the line numbers that are not UTF-8 to why."""

    def __init__(self, path: Path):
        self.path, self.bad = path, {}

    def __iter__(self) -> Iterator[str]:
        with open(self.path, "rb") as f:
            for n, raw in enumerate(f, start=1):
                if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    self.bad[n] = f"byte {raw[e.start]:#04x} at column {e.start + 1}"
                    # surrogateescape keeps the row's fields aligned so the rows after it still parse
                    yield raw.decode("utf-8", errors="surrogateescape")


register_reader(TableReader())
