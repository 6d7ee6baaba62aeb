"""``data.train`` as several sources: each a file, a glob or a list of shards, with the share of samples it gives."""

from __future__ import annotations

from pydantic import Field

from .section import Section


class DataSource(Section):
    """One source of a mixture in ``data.train``: ``{path: a.jsonl, weight: 0.7, format: messages}``."""

    path: str | list[str]
    """A data file, a glob (``shards/*.jsonl``) or a list of them: the shards of one source, read in order."""
    weight: float = Field(default=1.0, gt=0)
    """This source's share of the samples, relative to the other sources' weights (0.7 and 0.3: 70% and 30%)."""
    format: str | None = None
    """Its data format; None: data.format."""
