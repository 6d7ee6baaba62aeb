"""What a run starts from, before any weights load: the family spec, the processor, the Renderer and the checked
data, with the rules that drop a record or stop the run. ``vlmtune train``, ``bench`` and ``estimate`` share
:func:`prepare`; its Renderer comes from :func:`vlmtune.data.settings.renderer_for`, as the data, evaluation and
prediction commands build theirs."""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass
from typing import Any

from ..config import Config
from ..config.schema import DataConfig
from ..core.errors import DataError
from ..core.sample import Sample
from ..data import Renderer
from ..data.check import TOO_LONG, CheckReport, check_dataset
from ..data.mix import is_mixture, merged, mixed, mixed_counts, train_sources
from ..data.settings import read_options, renderer_for
from ..evaluate.run import check_references
from ..models import FamilySpec, spec_for
from .packing import check_packing

log = logging.getLogger("vlmtune")


@dataclass
class Prepared:
    """The family spec, processor and Renderer of ``cfg.model.path``, and the checked data of the splits asked
    for (None where not asked for or not configured)."""

    spec: FamilySpec
    processor: Any
    renderer: Renderer
    train: CheckReport | None = None
    val: CheckReport | None = None

    @property
    def train_samples(self) -> list[Sample]:
        return self.train.samples if self.train else []

    @property
    def val_samples(self) -> list[Sample]:
        return self.val.samples if self.val else []


def prepare(cfg: Config, splits: tuple[str, ...] = ("train", "val")) -> Prepared:
    """Spec -> processor -> Renderer -> checked data of ``splits`` (``data.train``, and ``data.val`` where set).

    Every record is checked in seconds, before any weights are loaded: unusable and over-long records are dropped
    or stop the run (:func:`checked_report`), and a held-out reference that a metric the run scores cannot read
    stops it too.
    """
    spec = spec_for(cfg.model.path, cfg.model.components)
    check_packing(cfg, spec)
    renderer = renderer_for(cfg.model.path, cfg.data, spec)
    train = train_report(cfg, renderer) if "train" in splits else None
    val = checked_report(cfg.data.val, cfg.data, renderer, "data.val") if "val" in splits and cfg.data.val \
        else None
    prepared = Prepared(spec, renderer.processor, renderer, train, val)
    if prepared.val_samples and (cfg.eval.at_end or cfg.train.best_by != "loss"):
        check_references(renderer, prepared.val_samples[:cfg.eval.max_samples], cfg.eval.metric_names())
    return prepared


def checked_samples(path: str, data: DataConfig, renderer: Renderer, key: str) -> list[Sample]:
    """The usable samples of a data file, after the checks of ``vlmtune data check``.

    Unusable records and over-long samples are dropped with a count (or stop the run, per
    ``data.on_bad_record`` / ``data.on_too_long``); a file with no usable sample stops it, naming why.
    """
    return checked_report(path, data, renderer, key).samples


def train_report(cfg: Config, renderer: Renderer) -> CheckReport:
    """The checked samples of ``data.train``: one file as :func:`checked_report` gives them; several sources
    each checked, then mixed by weight (:mod:`vlmtune.data.mix`); with ``data.streaming`` the check of the
    stream's first ``data.check_samples`` records (:mod:`.streaming`)."""
    data = cfg.data
    if data.streaming:
        from .streaming import first_records_report  # it builds on checked_report

        return first_records_report(cfg, renderer)
    if not is_mixture(data):
        return checked_report(data.train, data, renderer, "data.train")
    sources, reports = train_sources(data), []
    for source in sources:
        parts = [check_dataset(file, source.format, read_options(data), renderer, shrink=data.on_too_long == "shrink")
                 for file in source.files]
        reports.append(checked_report(source.name, data, renderer, "data.train", merged(parts, source.name)))
    weights = [s.weight for s in sources]
    report = mixed(reports, weights, cfg.train.seed)
    counts = mixed_counts([len(r.samples) for r in reports], weights)
    log.info("data.train: %d samples an epoch, mixed by weight: %s", len(report.samples),
             ", ".join(f"{s.name} {n}" for s, n in zip(sources, counts, strict=True)))
    return report


def checked_report(path: str, data: DataConfig, renderer: Renderer, key: str,
                   report: CheckReport | None = None) -> CheckReport:
    """:func:`checked_samples` with the whole check report: ``report.lengths`` holds the (text, visual) token
    counts of each usable sample, in the order of ``report.samples``. ``report``: the check already made (of
    the shards of one source), to which the rules apply."""
    if report is None:
        report = check_dataset(path, data.format, read_options(data), renderer,
                               shrink=data.on_too_long == "shrink")
    if report.shrunk:
        log.info("%s: %s", key, report.shrunk_line().replace("max_length", "data.max_length", 1))
    too_long = [p for p in report.problems if p.kind == TOO_LONG]
    invalid = [p for p in report.problems if p.kind != TOO_LONG]
    for problems, policy, what in ((invalid, "on_bad_record", "unusable"), (too_long, "on_too_long",
                                                                             "over max_length")):
        if not problems:
            continue
        if getattr(data, policy) == "fail":
            raise DataError(f"{key}: {len(problems)} of {report.records} records {what} (data.{policy}=fail); "
                            f"first: {problems[0]}")
        log.warning("%s: dropped %d of %d records as %s, e.g. %s", key, len(problems), report.records, what,
                    problems[0])
    if not report.samples:
        reasons = "; ".join(f"{n}x {r}" for r, n in report.counts_by_reason().most_common(3))
        raise DataError(f"{key}: no usable sample in {path} ({report.records} records): {reasons or 'empty file'}; "
                        f"run `vlmtune data check {shlex.quote(str(path))}` for the full list")
    if report.warnings:
        log.warning("%s: %d warnings (samples kept), e.g. %s", key, len(report.warnings), report.warnings[0])
    log.info("%s: %d samples from %s (format %s)", key, len(report.samples), path, report.format)
    return report
