"""``vlmtune eval``: score a model (with an adapter, against a base) on a held-out data file and write the report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..config import Config
from ..core.errors import DataError
from ..data.check import Problem, check_dataset
from ..models.load import load_for_inference
from .run import Comparison, compare


def evaluate_file(cfg: Config, model_path: str, data: str, out_dir: str | Path, adapter: str | None = None,
                  base_path: str | None = None, loss_log: str | None = None, progress: bool = True,
                  skipped: Callable[[Problem], None] = lambda problem: None) -> tuple[Comparison, Path]:
    """Score ``model_path`` (with ``adapter``) on the usable samples of ``data``, read, rendered and generated as
    ``cfg`` says, against the base ``base_path`` where given (or the adapter switched off, with
    ``eval.compare_base``); write metrics.json, predictions.jsonl and report.html in ``out_dir``.

    ``skipped`` is told each unusable sample, before any weights load. Returns the comparison and ``out_dir``."""
    from ..data.settings import read_options, renderer_for

    d, e = cfg.data, cfg.eval
    renderer = renderer_for(model_path, d)
    report = check_dataset(data, d.format, read_options(d), renderer, shrink=d.on_too_long == "shrink")
    for problem in report.problems:
        skipped(problem)
    samples = report.samples[:e.max_samples] if e.max_samples else report.samples
    if not samples:
        raise DataError(f"{data}: no usable sample to evaluate")
    model = load_for_inference(model_path, cfg.model.dtype, adapter)
    base = load_for_inference(base_path, cfg.model.dtype) if base_path else None
    result = compare(model, renderer, samples, e.metric_names(), base, e.compare_base or base is not None,
                     e.max_new_tokens, e.batch_size, progress)
    out = result.write(out_dir, Path(loss_log) if loss_log else None, task=e.task, model=model_path, adapter=adapter)
    return result, out
