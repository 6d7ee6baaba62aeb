"""``data.streaming``: the training samples as a stream that is never held whole in memory.

Records are read from the sources' files in order, checked with the same rules as ``vlmtune data check``
(:func:`~.check.check_samples`) and rendered as training reaches them. Several sources are mixed draw by draw: draw
k takes its record from source i with probability w_i / sum(w), decided by ``(seed, k)`` alone, so a stream
restarted at a :class:`Position` goes on exactly as it would have. A source that runs out starts again (its next
pass). With DataLoader workers, worker w of n reads the shards w, w+n, ... of each source (the records w, w+n, ...
of a source with fewer shards than workers), so no record is read twice.
"""

from __future__ import annotations

import json
import random
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..core.errors import DataError, RecordError
from ..core.sample import Sample
from .check import TOO_LONG, Problem, check_samples
from .collate import SAMPLE_ID
from .formats import ReadOptions, read_records
from .mix import Source


class Position(NamedTuple):
    """Where a stream is: draws made, and per source the records read in its current pass and passes done."""

    draws: int
    offsets: tuple[int, ...]
    passes: tuple[int, ...]

    @classmethod
    def start(cls, sources: int) -> Position:
        return cls(0, (0,) * sources, (0,) * sources)

    def to_dict(self) -> dict[str, Any]:
        return {"draws": self.draws, "offsets": list(self.offsets), "passes": list(self.passes)}

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> Position:
        return cls(saved["draws"], tuple(saved["offsets"]), tuple(saved["passes"]))


@dataclass(frozen=True)
class StreamRules:
    """What a stream reads and how it judges a record: the sources, the readers' options, the Renderer (token
    lengths and rendering), ``data.on_too_long == shrink``, the draws' seed."""

    sources: list[Source]
    options: ReadOptions
    renderer: Any
    shrink: bool
    seed: int


def drawn_source(seed: int, draw: int, weights: list[float]) -> int:
    """The source draw ``draw`` reads from: weighted, and the same for the same ``(seed, draw)``."""
    if len(weights) == 1:
        return 0
    point = random.Random(f"{seed}:{draw}").random() * sum(weights)
    for i, weight in enumerate(weights):
        point -= weight
        if point < 0:
            return i
    return len(weights) - 1


def _records(source: Source, options: ReadOptions, skip: int, worker: int, workers: int
             ) -> Iterator[Sample | RecordError]:
    """One pass over the records of ``source`` this worker reads, after its first ``skip``."""
    files = source.files[worker::workers] if len(source.files) >= workers else source.files
    share = workers if len(source.files) < workers else 1
    seen = 0
    for file in files:
        for index, item in enumerate(read_records(file, source.format, options)):
            if share > 1 and index % share != worker:
                continue
            if seen >= skip:
                yield item
            seen += 1


def checked_stream(rules: StreamRules, start: Position, worker: int = 0, workers: int = 1
                   ) -> Iterator[tuple[Position, Sample | Problem, tuple[int, int] | None]]:
    """Every draw of the stream from ``start``, without end: the position after it, and the checked sample with
    its (text, visual) tokens, or the Problem of its record."""
    weights = [s.weight for s in rules.sources]
    offsets, passes = list(start.offsets), list(start.passes)
    readers = [_records(s, rules.options, offsets[i], worker, workers) for i, s in enumerate(rules.sources)]
    draw = start.draws
    while True:
        i = drawn_source(rules.seed, draw, weights)
        item = next(readers[i], None)
        if item is None:  # the source ran out: its next pass
            if offsets[i] == 0:
                raise DataError(f"data.train: source {rules.sources[i].name} has no record to stream")
            offsets[i], passes[i] = 0, passes[i] + 1
            readers[i] = _records(rules.sources[i], rules.options, 0, worker, workers)
            continue
        draw, offsets[i] = draw + 1, offsets[i] + 1
        position = Position(draw, tuple(offsets), tuple(passes))
        if isinstance(item, RecordError):
            yield position, Problem.from_error(item), None
            continue
        good, problems, lengths, _ = check_samples([item], rules.renderer, rules.shrink)
        yield position, (good[0] if good else problems[0]), (lengths[0] if lengths else None)


class SampleStream(IterableDataset):
    """The training samples of a stream, rendered on demand, after the ``consumed`` samples a run already trained on.

    It starts at ``start`` where given (the position stored after them); without it, each reader skips its share of
    them by reading and checking (not rendering) its records again: with DataLoader workers, worker w of n gave the
    batches w, w+n, ... of ``batch_size`` samples. A dropped record goes to ``on_problem`` (which may raise to stop
    the run). In the training process (no workers) the stream keeps the :class:`Position` after each of its last
    ``window`` samples, so a checkpoint can store where the consumed samples end (:meth:`position_after`)."""

    def __init__(self, rules: StreamRules, on_problem: Callable[[Problem], None], encoder: Any = None,
                 start: Position | None = None, consumed: int = 0, batch_size: int = 1, window: int = 4096):
        self.rules, self.on_problem = rules, on_problem
        self.encoder = encoder or rules.renderer
        self.start, self.consumed, self.batch_size = start, consumed, batch_size
        self.history: deque[tuple[int, Position]] = deque(maxlen=window)
        if start is not None or not consumed:
            self.history.append((consumed, start or Position.start(len(rules.sources))))

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        skip = 0
        if self.start is None and self.consumed:
            skip = len(range(worker, self.consumed // self.batch_size, workers)) * self.batch_size
        count = self.consumed if self.start is not None else 0
        start = self.start or Position.start(len(self.rules.sources))
        for position, item, _ in checked_stream(self.rules, start, worker, workers):
            if isinstance(item, Problem):
                if skip == 0:
                    self.on_problem(item)
                continue
            count += 1
            if skip:
                skip -= 1
                continue
            features = self.encoder.encode(item)
            self.history.append((count, position))
            yield {**features, SAMPLE_ID: item.id}

    def position_after(self, samples: int) -> Position | None:
        """The position after the first ``samples`` samples of the stream, if still remembered."""
        return next((position for count, position in reversed(self.history) if count == samples), None)


class DroppedLog:
    """``data.on_bad_record`` / ``on_too_long`` applied to a stream's records: ``fail`` stops the run naming the
    record; ``drop`` appends it to ``path`` (JSON lines, one per dropped record: ``where``, ``field``, ``problem``,
    ``kind`` as in :class:`Problem`, and ``message``, the line ``data check`` prints), read back by
    :func:`dropped`."""

    def __init__(self, path: Path, on_bad_record: str, on_too_long: str):
        self.path, self.on_bad_record, self.on_too_long = path, on_bad_record, on_too_long

    def __call__(self, problem: Problem) -> None:
        key, what = ("on_too_long", "over max_length") if problem.kind == TOO_LONG else ("on_bad_record", "unusable")
        if getattr(self, key) == "fail":
            raise DataError(f"data.train: a streamed record is {what} (data.{key}=fail): {problem}")
        with open(self.path, "a") as f:
            f.write(json.dumps({"where": problem.where, "field": problem.field, "problem": problem.problem,
                                "kind": problem.kind, "message": str(problem)}) + "\n")


def dropped(path: Path) -> list[dict[str, str]]:
    """The records a stream dropped (each once, though a resumed run may read one again)."""
    if not path.is_file():
        return []
    seen: dict[str, dict[str, str]] = {}
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        seen.setdefault(entry["where"], entry)
    return list(seen.values())
