"""``data.train`` as sources: a file, a glob, a list of shards, or several sources mixed by weight.

The mixing rule: over an epoch of N samples (N: the usable samples of all sources together), source i gives
round(N x w_i / sum(w)) of them (largest remainders, so the counts add up to N). A source with fewer samples is
repeated whole as often as it fits and the rest drawn without repeats; one with more gives a draw without repeats.
The draw is seeded with train.seed, so the same config gives the same samples; a resumed run sees them again.
"""

from __future__ import annotations

import glob
import random
from dataclasses import dataclass

from ..config.schema import DataConfig
from ..config.sources import DataSource
from ..core.errors import DataError
from .check import CheckReport


@dataclass(frozen=True)
class Source:
    """One source of ``data.train``: its files (shards read in order), weight and format."""

    name: str
    """The source as the config writes it (a path, glob or list)."""
    files: tuple[str, ...]
    weight: float
    format: str


def train_sources(data: DataConfig) -> list[Source]:
    """The sources of ``data.train``, each glob expanded (sorted); a glob that matches nothing is refused."""
    entries = data.train if isinstance(data.train, list) else [data.train]
    if all(isinstance(entry, str) for entry in entries):  # one dataset, in shards
        entries = [DataSource(path=list(entries))]
    sources = []
    for entry in entries:
        paths = entry.path if isinstance(entry.path, list) else [entry.path]
        files = tuple(file for pattern in paths for file in _expand(pattern))
        name = paths[0] if len(paths) == 1 else f"[{', '.join(paths)}]"
        sources.append(Source(name, files, entry.weight, entry.format or data.format))
    return sources


def is_mixture(data: DataConfig) -> bool:
    """Whether ``data.train`` is more than one plain file (a glob, a list of shards or of sources)."""
    return isinstance(data.train, list) or _has_magic(data.train)


def _has_magic(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _expand(pattern: str) -> list[str]:
    if not _has_magic(pattern):
        return [pattern]
    found = sorted(glob.glob(pattern, recursive=True))
    if not found:
        raise DataError(f"data.train: no file matches {pattern!r}")
    return found


def mixed_counts(sizes: list[int], weights: list[float]) -> list[int]:
    """Samples each source gives to an epoch of ``sum(sizes)`` samples (see the module's rule)."""
    total, whole = sum(sizes), sum(weights)
    exact = [total * w / whole for w in weights]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[:total - sum(counts)]:
        counts[i] += 1
    return counts


def picked(size: int, count: int, rng: random.Random) -> list[int]:
    """``count`` indices of ``range(size)``: every index ``count // size`` times, the rest drawn without repeats."""
    return [i for _ in range(count // size) for i in range(size)] + sorted(rng.sample(range(size), count % size))


def merged(reports: list[CheckReport], source: str) -> CheckReport:
    """One report of several files' reports (the shards of one source), in file order."""
    report = CheckReport(source=source, format=",".join(dict.fromkeys(r.format for r in reports)),
                         max_length=reports[0].max_length)
    for part in reports:
        report.records += part.records
        report.images += part.images
        report.turns += part.turns
        for name in ("samples", "problems", "lengths", "duplicates", "shrunk", "warnings"):
            getattr(report, name).extend(getattr(part, name))
    return report


def mixed(reports: list[CheckReport], weights: list[float], seed: int) -> CheckReport:
    """The samples of one epoch of the sources whose checked reports are ``reports`` (see the module's rule),
    source by source; problems, counts and warnings of all of them."""
    report = merged(reports, " + ".join(r.source for r in reports))
    report.samples, report.lengths = [], []
    rng = random.Random(seed)
    for part, count in zip(reports, mixed_counts([len(r.samples) for r in reports], weights), strict=True):
        for i in picked(len(part.samples), count, rng) if part.samples else []:
            report.samples.append(part.samples[i])
            if part.lengths:
                report.lengths.append(part.lengths[i])
    return report
