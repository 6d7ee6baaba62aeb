"""What every reader shares: reading JSON records with line numbers, resolving image paths safely,
and splitting ``<image>`` placeholders into image parts."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ...core.errors import RecordError, record_name, user_id
from ...core.sample import ROLES, ImagePart, Message, Part, Sample, TextPart, VideoPart
from .data_uri import data_uri_image, is_data_uri
from .placeholders import IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, split_placeholders


@dataclass(frozen=True)
class ReadOptions:
    """How to read a file beyond its format: column names, fixed prompt, where images live."""

    columns: Mapping[str, str] = field(default_factory=dict)
    """Canonical field (image, prompt, answer, system, ...) -> the file's column name."""
    prompt: str | None = None
    """Fixed user prompt for tables whose rows have no prompt column (e.g. image,caption)."""
    system: str | None = None
    """System prompt added to every sample that has none."""
    media_root: Path | None = None
    """Folder image paths are relative to; default: the data file's folder."""
    allow_outside_root: bool = False
    """Accept image paths that resolve outside the media root (absolute paths, ``..``)."""


@dataclass(frozen=True)
class Where:
    """One record of one file: builds errors that name it, and resolves its image paths."""

    path: Path
    line: int | None
    root: Path
    allow_outside_root: bool = False
    index: int | None = None
    """Position in a JSON array or dataset, counted from 0; None for a line of a JSON lines or CSV file."""
    record_id: str | int | None = None
    """The record's own ``id``, where it has one."""

    @property
    def id(self) -> str:
        return record_name(self.path, self.line, self.index, self.record_id)

    def error(self, problem: str, field: str | None = None, hint: str = "") -> RecordError:
        return RecordError(self.path, self.line, problem, field=field, hint=hint, index=self.index,
                           record_id=self.record_id)

    def image(self, ref: Any, field: str) -> ImagePart:
        """The image a record refers to, resolved against the media root and checked to exist; a ``data:`` URI is
        decoded to a file of its own (:func:`.data_uri.data_uri_image`)."""
        if isinstance(ref, str) and is_data_uri(ref):
            return data_uri_image(ref, self, field)
        return ImagePart(self.media_file(ref, field, "image"))

    def video(self, ref: Any, field: str) -> VideoPart:
        """The video file a record refers to, resolved and checked as :meth:`image` does."""
        return VideoPart(self.media_file(ref, field, "video"))

    def media_file(self, ref: Any, field: str, kind: str) -> Path:
        """The local file of an image or video reference, resolved against the media root and checked to exist."""
        if not isinstance(ref, str) or not ref.strip():
            raise self.error(f"{kind} reference must be a non-empty file path, got {json.dumps(ref)[:60]}", field)
        if "://" in ref or ref.startswith("data:"):
            raise self.error(f"remote {kind} {ref[:80]!r} is not fetched; download it and give a local path", field)
        path = (self.root / ref).resolve()
        if not self.allow_outside_root and not path.is_relative_to(self.root):
            raise self.error(f"{kind} path {ref!r} points outside the data root {self.root}", field,
                             hint="pass --allow-outside-root (data.allow_outside_root: true) if that is intended")
        if not path.is_file():
            raise self.error(f"{kind} file not found {ref!r}", field,
                             hint=f"resolved against {self.root}; set data.media_root if paths are relative to another "
                             "folder")
        return path


def media_root(path: Path, options: ReadOptions) -> Path:
    root = options.media_root if options.media_root is not None else path.parent
    return Path(root).resolve()


class JsonRecord(NamedTuple):
    """One record of a JSON lines or JSON array file, and where it is."""

    line: int
    """The line the record starts on."""
    index: int | None
    """Its position in a JSON array, counted from 0; None in a JSON lines file."""
    record: Any
    """The parsed record, or the RecordError saying why it could not be parsed."""


def json_records(path: Path) -> Iterator[JsonRecord]:
    """Each record of a JSONL file or a JSON array file.

    A record that cannot be parsed comes as a RecordError in place of the record; the records after it still come
    (in a JSONL file) so one bad line does not hide the rest. Blank lines are skipped.
    """
    with open(path, "rb") as f:
        head = f.read(4096).lstrip()
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:].lstrip()
    if head.startswith(b"["):
        yield from _array_records(path)
        return
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError as e:
                yield JsonRecord(line_no, None, RecordError(path, line_no, f"not UTF-8 text (byte {raw[e.start]:#04x} "
                                                                           f"at column {e.start + 1})"))
                continue
            try:
                yield JsonRecord(line_no, None, json.loads(text))
            except json.JSONDecodeError as e:
                comment = " (JSON lines have no comment lines)" if text.lstrip().startswith(("#", "//")) else ""
                yield JsonRecord(line_no, None, RecordError(path, line_no, f"not valid JSON: {_json_problem(e)} at "
                                                                           f"column {e.colno}{comment}"))


def _json_problem(error: json.JSONDecodeError) -> str:
    # json's messages for a place end in "at" ("Invalid control character at"): the column follows once.
    return error.msg.removesuffix(" at")


def _array_records(path: Path) -> Iterator[JsonRecord]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        yield JsonRecord(line, None, RecordError(path, line, f"not UTF-8 text (byte {raw[e.start]:#04x}); the JSON "
                                                 "array cannot be read past it"))
        return
    decoder = json.JSONDecoder()
    pos, line, n = text.index("[") + 1, 1, len(text)
    line += text.count("\n", 0, pos)
    ws = re.compile(r"[\s,]*")
    index = 0
    while True:
        skip = ws.match(text, pos).end()
        line += text.count("\n", pos, skip)
        pos = skip
        if pos >= n:
            yield JsonRecord(line, index, RecordError(path, line, "JSON array is not closed with ']' (file "
                                                      "truncated?)", index=index))
            return
        if text[pos] == "]":
            return
        try:
            record, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            problem = f"not valid JSON: {_json_problem(e)} at line {e.lineno} column {e.colno}"
            yield JsonRecord(line, index, RecordError(path, line, f"{problem}; the array cannot be read past it",
                                                      index=index))
            return
        yield JsonRecord(line, index, record)
        line += text.count("\n", pos, end)
        pos, index = end, index + 1


def record_where(path: Path, item: JsonRecord, root: Path, options: ReadOptions) -> Where:
    """The :class:`Where` of one record of ``path``, named with its own ``id`` where it has one."""
    return Where(path, item.line, root, options.allow_outside_root, item.index, user_id(item.record))


def parse_each(path: Path, options: ReadOptions, parse: Callable[[Any, Where], Sample],
               root: Path | None = None) -> Iterator[Sample | RecordError]:
    """``parse(record, where)`` for each JSON record of ``path``; a record's RecordError is yielded, not raised."""
    root = root or media_root(path, options)
    for item in json_records(path):
        try:
            if isinstance(item.record, RecordError):
                raise item.record
            yield parse(item.record, record_where(path, item, root, options))
        except RecordError as e:
            yield e


def first_json_records(path: Path, n: int = 5, scan: int = 100) -> tuple[list[Any], RecordError | None]:
    """Up to ``n`` parsable records from the first ``scan`` records of a JSONL or JSON-array file, for format
    detection (a corrupt or comment first line does not decide the format), and the first unparsable one's error."""
    found: list[Any] = []
    error = None
    try:
        for k, item in enumerate(json_records(path)):
            if isinstance(item.record, RecordError):
                error = error or item.record
            else:
                found.append(item.record)
            if len(found) >= n or k + 1 >= scan:
                break
    except (OSError, ValueError):
        pass
    return found, error


def build_conversation(turns: list[tuple[str, str, str]], images: list[ImagePart], where: Where,
                       meta: dict | None = None, system: str | None = None,
                       placeholder: str = IMAGE_PLACEHOLDER, videos: list[VideoPart] | None = None) -> Sample:
    """A Sample from ``(role, text, field)`` turns whose text carries ``<image>`` placeholders.

    Every image must be claimed by exactly one placeholder, in order; roles must be canonical already. So must
    every one of ``videos`` by a ``<video>`` placeholder (None: the format has no videos, and ``<video>`` is refused).
    """
    used, used_videos = [0], [0]
    messages = []
    if system and not any(role == "system" for role, _, _ in turns):
        messages.append(Message("system", (TextPart(system),)))
    for role, text, at in turns:
        if role not in ROLES:
            raise where.error(f"unknown role {role!r}", at)
        if not isinstance(text, str):
            raise where.error(f"turn text must be a string, got {type(text).__name__}", at)
        if role == "assistant":
            if placeholder in text or (videos and VIDEO_PLACEHOLDER in text):
                raise where.error(f"assistant turns cannot contain images or videos ({placeholder} found)", at)
            parts: list[Part] = [TextPart(text)]
        else:
            parts = split_placeholders(text, images, used, where, at, placeholder, videos, used_videos)
        messages.append(Message(role, tuple(parts)))
    if used[0] != len(images):
        raise where.error(f"{len(images)} images but {used[0]} {placeholder} placeholders; each image needs "
                          "exactly one placeholder in a user turn", "images")
    if videos is not None and used_videos[0] != len(videos):
        raise where.error(f"{len(videos)} videos but {used_videos[0]} {VIDEO_PLACEHOLDER} placeholders; each video "
                          "needs exactly one placeholder in a user turn", "videos")
    return finish(messages, where, meta)


def finish(messages: list[Message], where: Where, meta: dict | None = None) -> Sample:
    """Checks every reader applies to the conversation it built: answers present and non-empty."""
    if not any(m.role == "assistant" for m in messages):
        raise where.error("no assistant turn: nothing to train on", "messages")
    for i, m in enumerate(messages):
        if m.role == "assistant" and not m.has_answer:
            raise where.error("empty assistant answer", f"messages[{i}]")
    return Sample(messages=tuple(messages), id=where.id, meta=dict(meta or {}))


def split_entry(path: Path) -> tuple[Path, str | None]:
    """``dataset_info.json#name`` names an entry of a dataset registry file: the file and the entry's name (None for
    a plain path, or a file whose own name holds ``#``)."""
    text = str(path)
    if "#" in text and not path.exists():
        file, entry = text.split("#", 1)
        return Path(file), entry
    return path, None
