"""``vlmtune data convert`` and ``vlmtune data split``: any readable format in, canonical messages JSONL out.

Only usable samples are written; every dropped record is listed with its line and reason.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..core.errors import DataError
from ..core.sample import Sample
from .check import CheckReport, check_dataset, content_key
from .formats import ReadOptions, get_reader, input_files
from .formats.gui_events import convert_gui_events
from .formats.write import sample_to_record


def convert(path: str | Path, output: str | Path, format: str = "auto", options: ReadOptions | None = None) -> str:
    """Write the usable samples of ``path`` to ``output`` (messages JSONL); returns a summary to print.

    GUI event files also get their screenshots re-encoded as RGB JPEGs under ``output``'s folder.
    """
    output = Path(output)
    refuse_overwriting_inputs(path, [output], "-o another file")
    output.parent.mkdir(parents=True, exist_ok=True)
    if get_reader(path, format).name == "gui_events":
        return str(convert_gui_events(path, output.parent, options, annotations=output.name))
    report = check_dataset(path, format, options)
    outside = write_jsonl(report.samples, output)
    return _summary(report, {output: len(report.samples)}, outside)


def split(path: str | Path, out_dir: str | Path, val: float = 0.1, seed: int = 0, format: str = "auto",
          options: ReadOptions | None = None) -> str:
    """Deterministic train/validation split written as ``out_dir/train.jsonl`` and ``out_dir/val.jsonl``.

    Each sample's side depends only on its content and ``seed`` (a hash order), so re-reading the file, or
    reordering it, gives the same split; identical samples always land on the same side, so no sample is in
    both. The validation side gets ``round(val * n)`` samples (at least one when ``val > 0``).
    """
    if not 0 < val < 1:
        raise DataError(f"--val must be a fraction between 0 and 1, got {val}")
    out_dir = Path(out_dir)
    train_file, val_file = out_dir / "train.jsonl", out_dir / "val.jsonl"
    refuse_overwriting_inputs(path, [train_file, val_file], "-o another folder")
    report = check_dataset(path, format, options)
    groups: dict[str, list[int]] = {}
    for i, sample in enumerate(report.samples):
        groups.setdefault(content_key(sample), []).append(i)
    order = sorted(groups, key=lambda key: hashlib.sha256(f"{seed}:{key}".encode()).hexdigest())
    target = max(1, round(val * len(report.samples))) if report.samples else 0
    val_idx: set[int] = set()
    for key in order:
        if len(val_idx) >= target:
            break
        val_idx.update(groups[key])
    out_dir.mkdir(parents=True, exist_ok=True)
    train = [s for i, s in enumerate(report.samples) if i not in val_idx]
    held = [s for i, s in enumerate(report.samples) if i in val_idx]
    outside = write_jsonl(train, train_file) + write_jsonl(held, val_file)
    return _summary(report, {train_file: len(train), val_file: len(held)}, outside)


def refuse_overwriting_inputs(path: str | Path, outputs: list[Path], remedy: str) -> None:
    """Raise a DataError, before anything is written, where an output file is one of the files ``path`` is read
    from: the same path, or the same file through a symbolic or hard link."""
    for output in outputs:
        for source in (s for s in input_files(path) if s.exists()):
            if output.resolve() == source.resolve() or (output.exists() and os.path.samefile(output, source)):
                same = "" if output.absolute() == source.absolute() else f" (the same file as {source})"
                raise DataError(f"refusing to write {output}: it is an input file{same} and would be overwritten; "
                                f"give {remedy}")


def write_jsonl(samples: list[Sample], output: Path) -> int:
    """Write samples in messages form; returns how many image paths lie outside ``output``'s folder."""
    root = output.parent.resolve()
    outside = 0
    with open(output, "w", encoding="utf-8") as f:
        for sample in samples:
            f.write(json.dumps(sample_to_record(sample, root), ensure_ascii=False) + "\n")
            outside += sum(not p.is_relative_to(root) for p in sample.images)
    return outside


def _summary(report: CheckReport, written: dict[Path, int], outside: int) -> str:
    lines = [f"{report.source}: format {report.format}, {report.records} records; "
             + ", ".join(f"wrote {n} samples to {path}" for path, n in written.items())]
    if outside:
        lines.append(f"note: {outside} image paths lie outside the output folder; read the output with "
                     "data.allow_outside_root: true (--allow-outside-root) or move it next to the images")
    if report.problems:
        lines.append(f"dropped {len(report.problems)} unusable records:")
        lines += [f"  {p}" for p in report.problems]
    return "\n".join(lines)
