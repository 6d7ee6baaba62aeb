"""Find every problem in a dataset before training: unreadable records, missing or corrupt images, boxes off
the image, and (with a processor) samples longer than the token budget. Training runs the same checks.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import DataError, RecordError
from ..core.sample import Sample
from .formats import ReadOptions, read_dataset
from .formats.write import sample_to_record
from .image_check import MULTI_FRAME, image_problem
from .preference import pair_tokens
from .shrink import CannotShrink

TOO_LONG = "too_long"


@dataclass(frozen=True)
class Problem:
    """Why one record or sample cannot be used, and which record it is (a sample id, see
    :attr:`~vlmtune.core.sample.Sample.id`)."""

    where: str
    problem: str
    field: str | None = None
    kind: str = "invalid"
    """``invalid`` (unreadable, malformed, missing or corrupt image), ``too_long``, or ``warning`` (in
    :attr:`CheckReport.warnings`: the sample is kept)."""

    def __str__(self) -> str:
        return f"{self.where}" + (f" field {self.field!r}" if self.field else "") + f": {self.problem}"

    @classmethod
    def from_error(cls, error: RecordError) -> Problem:
        problem = error.problem + (f" ({error.hint})" if error.hint else "")
        return cls(error.where, problem, error.field)


@dataclass
class CheckReport:
    """What ``vlmtune data check`` prints: counts, problems and token-length statistics."""

    source: str
    format: str
    records: int = 0
    samples: list[Sample] = field(default_factory=list, repr=False)
    """The usable samples, in file order."""
    problems: list[Problem] = field(default_factory=list)
    images: int = 0
    videos: int = 0
    turns: int = 0
    lengths: list[tuple[int, int]] = field(default_factory=list, repr=False)
    """``(text tokens, visual tokens)`` of each usable sample, when a processor was given."""
    max_length: int | None = None
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    """``(sample, earlier sample it repeats)`` for every exact repeat: kept, but worth knowing (a repeated
    sample weighs double, and one in both train and val inflates the score)."""
    shrunk: list[tuple[str, float]] = field(default_factory=list)
    """``(sample, scale)`` of every sample over max_length kept with its images shown smaller (``shrink``):
    ``scale`` is the new over the old longer side of its largest image."""
    warnings: list[Problem] = field(default_factory=list)
    """Usable samples with something worth knowing (``kind`` ``warning``): an image with several frames, of which
    only the first is used."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts_by_reason(self) -> Counter:
        return Counter(_reason(p.problem) for p in self.problems)

    def length_stats(self) -> dict[str, dict[str, float]]:
        if not self.lengths:
            return {}
        columns = {"total": [t + v for t, v in self.lengths], "text": [t for t, _ in self.lengths],
                   "visual": [v for _, v in self.lengths]}
        return {name: _stats(values) for name, values in columns.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "format": self.format, "records": self.records, "usable": len(self.samples),
            "unusable": len(self.problems), "images": self.images, "videos": self.videos, "turns": self.turns,
            "max_length": self.max_length, "tokens": self.length_stats(),
            "problems": [asdict(p) for p in self.problems],
            "duplicates": [{"where": a, "repeats": b} for a, b in self.duplicates],
            "shrunk": [{"where": a, "scale": round(b, 4)} for a, b in self.shrunk],
            "warnings": [asdict(p) for p in self.warnings],
        }

    def summary(self, limit: int = 50) -> str:
        lines = [f"{self.source}: format {self.format}, {self.records} records, {len(self.samples)} usable, "
                 f"{len(self.problems)} unusable; {self.images} images, "
                 f"{f'{self.videos} videos, ' if self.videos else ''}{self.turns} turns"]
        stats = self.length_stats()
        if stats:
            lines.append(f"tokens per sample (max_length {self.max_length}):")
            for name, s in stats.items():
                lines.append(f"  {name:<6} min {s['min']:.0f}  median {s['median']:.0f}  p95 {s['p95']:.0f}  "
                             f"max {s['max']:.0f}")
        if self.shrunk:
            lines.append(self.shrunk_line())
        if self.duplicates:
            where, first = self.duplicates[0]
            lines.append(f"warning: {len(self.duplicates)} samples repeat an earlier one (kept), e.g. {where} repeats "
                         f"{first}")
        if self.warnings:
            reasons = Counter(_reason(w.problem) for w in self.warnings)
            lines.append(f"warnings: {len(self.warnings)} (kept): "
                         + "; ".join(f"{n}x {reason}" for reason, n in reasons.most_common()))
            lines += [f"  {w}" for w in self.warnings[:limit]]
        if self.problems:
            lines.append("problems:")
            lines += [f"  {p}" for p in self.problems[:limit]]
            if len(self.problems) > limit:
                lines.append(f"  ... and {len(self.problems) - limit} more (--json lists all)")
        return "\n".join(lines)

    def shrunk_line(self) -> str:
        """One line on the shrunk samples: how many, and the smallest scale with its sample."""
        where, scale = min(self.shrunk, key=lambda item: item[1])
        return (f"shrank the images of {len(self.shrunk)} samples to fit max_length {self.max_length} (smallest "
                f"scale {scale:.2f}, {where})")


def _reason(problem: str) -> str:
    """The kind of a problem, without its particulars: "unknown role 'bot'; ..." -> "unknown role ..."."""
    return re.sub(r"'[^']*'|\"[^\"]*\"|\S*\d\S*", "...", problem.split(";")[0].split(" (")[0]).strip()[:80]


def _stats(values: list[int]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"min": ordered[0], "median": statistics.median(ordered), "p95": p95, "max": ordered[-1],
            "mean": statistics.fmean(ordered)}


_LOWER_VIDEO = "data.video_max_pixels or data.video_fps"


def check_samples(samples: list[Sample], renderer: Any = None, shrink: bool = False,
                  warnings: list[Problem] | None = None
                  ) -> tuple[list[Sample], list[Problem], list[tuple[int, int]], list[tuple[str, float]]]:
    """Usable samples, the problems of the others, token lengths (with a renderer) and the shrunk samples.

    ``shrink``: a sample over the renderer's max_length is kept with its images shown smaller where that makes
    it fit (:meth:`Renderer.shrink_to_fit`), and is a TOO_LONG problem only where nothing does. ``warnings``:
    where given, gets a ``warning`` Problem for each usable sample's image with several frames.
    """
    sizes: dict[Path, tuple[int, int] | str] = {}
    frames: dict[Path, int] = {}
    good, problems, lengths, shrunk = [], [], [], []
    for sample in samples:
        problem = image_problem(sample, sizes, frames)
        if problem:
            problems.append(Problem(sample.id, *problem))
            continue
        if renderer is not None:
            try:
                text, visual = pair_tokens(renderer, sample, [sizes[p] for p in sample.images])
            except DataError as e:
                problems.append(Problem(sample.id, getattr(e, "problem", str(e))))
                continue
            if renderer.max_length is not None and text + visual > renderer.max_length:
                too_long = f"{text + visual} tokens ({visual} visual) exceed max_length={renderer.max_length}"
                if not shrink:
                    problems.append(Problem(sample.id, (
                        f"{too_long}; it is never cut (that would split image tokens or drop the answer). Raise "
                        f"data.max_length or lower {_LOWER_VIDEO if sample.video_parts else 'data.max_pixels'}"),
                        kind=TOO_LONG))
                    continue
                try:
                    smaller, (text, visual) = renderer.shrink_to_fit(sample, [sizes[p] for p in sample.images])
                except CannotShrink as e:
                    problems.append(Problem(sample.id, (
                        f"{too_long}; shrinking its images is not enough: {e.problem}. Raise data.max_length"),
                        kind=TOO_LONG))
                    continue
                except DataError as e:
                    problems.append(Problem(sample.id, getattr(e, "problem", str(e))))
                    continue
                shrunk.append((sample.id, _scale(sample, smaller, sizes, renderer)))
                sample = smaller
            lengths.append((text, visual))
        good.append(sample)
        if warnings is not None:
            warnings += [Problem(sample.id, MULTI_FRAME.format(path.name, frames[path]), kind="warning")
                         for path in dict.fromkeys(sample.images) if frames.get(path, 1) > 1]
    return good, problems, lengths, shrunk


def _scale(before: Sample, after: Sample, sizes: dict, renderer: Any) -> float:
    """The new over the old longer side of the largest image of a shrunk sample (of a video: frames)."""
    if before.video_parts:
        return after.video_parts[0].max_frames / max(len(p.indices) for p in renderer.frame_plans(before))
    old = [p.size or renderer.image_size or sizes[p.path] for p in before.image_parts]
    largest = max(range(len(old)), key=lambda i: max(old[i]))
    return max(after.image_parts[largest].size) / max(old[largest])


def check_dataset(path: str | Path, format: str = "auto", options: ReadOptions | None = None,
                  renderer: Any = None, shrink: bool = False) -> CheckReport:
    """Read and check every record of a data source (see :class:`CheckReport`).

    ``shrink``: samples over max_length are kept with their images shown smaller where that fits
    (``data.on_too_long: shrink``; see :func:`check_samples`)."""
    if renderer is not None and options is not None:
        refuse_control_tokens(options, renderer)
    result = read_dataset(path, format, options)
    report = CheckReport(source=str(path), format=result.format,
                         max_length=renderer.max_length if renderer is not None else None)
    report.records = len(result.samples) + len(result.problems)
    report.problems = [Problem.from_error(e) for e in result.problems]
    good, problems, report.lengths, report.shrunk = check_samples(result.samples, renderer, shrink,
                                                                  report.warnings)
    report.samples = good
    report.problems += problems
    report.problems.sort(key=lambda p: result.order.get(p.where, len(result.order)))
    first: dict[str, str] = {}
    for sample in good:
        key = content_key(sample)
        if key in first:
            report.duplicates.append((sample.id, first[key]))
        first.setdefault(key, sample.id)
    report.images = sum(len(s.images) for s in good)
    report.videos = sum(len(s.video_parts) for s in good)
    report.turns = sum(len(s.messages) for s in good)
    return report


def refuse_control_tokens(options: ReadOptions, renderer: Any) -> None:
    """Raise :class:`DataError` where the prompt or system prompt the reader adds to records (``data.prompt``,
    ``data.system``) holds a control token of the renderer's model: every sample would carry it."""
    for key, text, role in (("data.prompt", options.prompt, "user"), ("data.system", options.system, "system")):
        problem = renderer.control_token_problem(text, role=role)
        if problem:
            raise DataError(f"{key} {problem}")


def content_key(sample: Sample) -> str:
    """The sample's content (messages with absolute image paths, and the sizes images are shown at where set) as
    a canonical string."""
    messages = sample_to_record(Sample(sample.messages, ""), "/")["messages"]
    shown = [p.size and list(p.size) for p in sample.image_parts]
    frames = [p.max_frames for p in sample.video_parts]
    # Sizes only where some image has one: the keys of other samples (and disk caches under them) stay as they were.
    if any(frames):  # a shrunk video's frame limit, likewise
        return json.dumps({"messages": messages, "shown": shown, "frames": frames}, sort_keys=True)
    return json.dumps({"messages": messages, "shown": shown} if any(shown) else messages, sort_keys=True)
