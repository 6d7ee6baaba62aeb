"""Write a Sample back out in the canonical ``messages`` form (see :mod:`.messages`), for ``vlmtune data convert``;
a preference pair in TRL's conversational ``prompt`` / ``chosen`` / ``rejected`` form (see :mod:`.preference`).

The record reads back with the messages reader into the same messages: text, image, box and point parts, in
order, with every box and point naming its image explicitly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ...core.sample import BoxPart, ImagePart, Part, PointPart, PreferenceSample, Sample, TextPart, VideoPart


def sample_to_record(sample: Sample, relative_to: str | Path) -> dict[str, Any]:
    """The messages-form record of ``sample``, its image paths relative to the folder ``relative_to``.

    Images outside that folder get a ``..`` path, which the readers only accept with ``allow_outside_root``.
    The sample's meta entries that JSON can hold become top-level keys, as the messages reader keeps them.
    """
    root = Path(relative_to).resolve()
    messages = [{"role": m.role, "content": [_part(p, root) for p in m.content]} for m in sample.messages]
    record: dict[str, Any] = {"messages": messages}
    if isinstance(sample, PreferenceSample):  # TRL's conversational form, which the preference reader reads back
        rejected = {"role": "assistant", "content": [_part(p, root) for p in sample.rejected.content]}
        record = {"prompt": messages[:-1], "chosen": messages[-1:], "rejected": [rejected]}
    for key, value in sample.meta.items():
        if key not in ("messages", *record) and _jsonable(value):
            record[key] = value
    return record


def _part(part: Part, root: Path) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ImagePart):
        return {"type": "image", "image": _relative(Path(part.path), root)}
    if isinstance(part, VideoPart):
        return {"type": "video", "video": _relative(Path(part.path), root)}
    if isinstance(part, BoxPart):
        out = {"type": "box", "box": [_number(c) for c in part.box], "image": part.image}
    elif isinstance(part, PointPart):
        out = {"type": "point", "point": [_number(c) for c in part.point], "image": part.image}
    else:
        raise TypeError(f"cannot write part {part!r}")
    if part.label is not None:
        out["label"] = part.label
    return out


def _relative(path: Path, root: Path) -> str:
    try:
        return Path(os.path.relpath(path.resolve(), root)).as_posix()
    except ValueError:  # another drive on Windows: no relative path exists
        return path.resolve().as_posix()


def _number(value: float) -> int | float:
    # Pixel coordinates are usually whole; writing them as ints keeps the files readable.
    return int(value) if float(value).is_integer() else float(value)


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
