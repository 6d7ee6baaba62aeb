"""``vlmtune data show``: samples as training sees them. Each is the chat template's text with every image's run
of visual tokens collapsed to one marker (``<|image_pad|>x64``), the tokens training learns from wrapped in
``[[ ]]``, and its token counts. Both come from :meth:`Renderer.encode`, the encoding training uses: the marked
spans are its labels, never worked out again here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import DataError, RecordError
from ..core.sample import Sample
from .check import Problem, check_samples
from .formats import ReadOptions, format_mismatch, get_reader
from .mix import train_sources
from .render import IGNORE_INDEX, Renderer
from .settings import read_options, renderer_for

OPEN, CLOSE = "[[", "]]"
LEGEND = f"trained tokens (the labels) are inside {OPEN} {CLOSE}; <token>xN is one image's N visual tokens"


@dataclass(frozen=True)
class ShownSample:
    """One sample's rendering with its trained spans marked, and its token counts."""

    id: str
    text: str
    text_tokens: int
    visual_tokens: int
    trained_tokens: int

    def __str__(self) -> str:
        return (f"--- {self.id}\n{self.text}\n--- tokens: {self.text_tokens} text + {self.visual_tokens} visual = "
                f"{self.text_tokens + self.visual_tokens} total; {self.trained_tokens} trained")


def show_sample(renderer: Renderer, sample: Sample, lengths: tuple[int, int]) -> ShownSample:
    """``sample`` encoded as for training, its labels marked. ``lengths``: its ``(text, visual)`` token counts as
    ``data check`` measures them (:func:`~vlmtune.data.check.check_samples`)."""
    features = renderer.encode(sample)
    ids, labels = features["input_ids"].tolist(), features["labels"].tolist()
    # Image and video tokens: each run is shown as one token and its count.
    media = {t for t in (_media_token_id(renderer.processor, "image_token"),
                         _media_token_id(renderer.processor, "video_token")) if t is not None}
    decode = renderer.processor.tokenizer.decode
    pieces: list[str] = []
    trained, i = False, 0
    while i < len(ids):
        now = labels[i] != IGNORE_INDEX
        if now != trained:
            pieces.append(OPEN if now else CLOSE)
            trained = now
        j = i + 1
        if ids[i] in media:
            while j < len(ids) and ids[j] == ids[i] and (labels[j] != IGNORE_INDEX) == now:
                j += 1
            pieces.append(f"{decode([ids[i]], skip_special_tokens=False)}x{j - i}")
        else:
            while j < len(ids) and ids[j] not in media and (labels[j] != IGNORE_INDEX) == now:
                j += 1
            pieces.append(_decode_run(decode, ids, i, j))
        i = j
    if trained:
        pieces.append(CLOSE)
    text, visual = lengths
    # The newline after the last turn separates nothing; the counts still include it.
    n_trained = sum(label != IGNORE_INDEX for label in labels)
    return ShownSample(sample.id, "".join(pieces).rstrip("\n"), text, visual, n_trained)


def _decode_run(decode: Any, ids: list[int], start: int, stop: int) -> str:
    """``ids[start:stop]`` as text, as it reads within the whole sequence. Decoded as a run, not token by token, so
    a character split over several byte tokens stays whole; after the token before it, so a SentencePiece word
    start keeps its space ("ASSISTANT: red", not "ASSISTANT:red")."""
    def text(tokens: list[int]) -> str:
        return decode(tokens, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    if start:
        before, both = text(ids[start - 1:start]), text(ids[start - 1:stop])
        if both.startswith(before):
            return both[len(before):]
    return text(ids[start:stop])


def _media_token_id(processor: Any, name: str) -> int | None:
    token = getattr(processor, name, None)
    if not isinstance(token, str):
        return None
    found = processor.tokenizer.convert_tokens_to_ids(token)
    return found if isinstance(found, int) and found != processor.tokenizer.unk_token_id else None


def first_samples(path: str | Path, format: str, options: ReadOptions, renderer: Renderer, n: int,
                  shrink: bool = False) -> tuple[list[ShownSample], list[Problem]]:
    """The first ``n`` usable samples of a data source, shown, and the problems of the records before them.

    Records are read and checked one at a time, as training checks them (:func:`check_samples`), and reading
    stops after the ``n``-th usable one, so a large file is not read to its end.
    """
    shown: list[ShownSample] = []
    problems: list[Problem] = []
    for item in get_reader(path, format).read(Path(path), options):
        if len(shown) >= n:
            break
        if isinstance(item, RecordError):
            problems.append(Problem.from_error(item))
            continue
        good, bad, lengths, _ = check_samples([item], renderer, shrink)
        problems += bad
        if good:
            shown.append(show_sample(renderer, good[0], lengths[0]))
    mismatch = format_mismatch(path, format) if problems and not shown else None
    if mismatch is not None:
        raise mismatch
    return shown, problems


def show(path: str | Path, format: str, options: ReadOptions, renderer: Renderer, n: int = 2,
         shrink: bool = False) -> str:
    """What ``vlmtune data show`` prints: the legend, then each of the first ``n`` usable samples."""
    shown, problems = first_samples(path, format, options, renderer, n, shrink)
    lines = [f"{path}: the first {len(shown)} usable sample(s) as training sees them; {LEGEND}"]
    if problems:
        lines.append(f"skipped {len(problems)} unusable record(s) before them, e.g. {problems[0]} "
                     "(vlmtune data check lists all)")
    if not shown:
        lines.append("no usable sample found")
    lines += [str(s) for s in shown]
    return "\n".join(lines)


def dry_run_sample(cfg: Any, spec: Any) -> str:
    """One sample of ``data.train`` shown as :func:`show` does, for ``vlmtune train --dry-run``; one line saying
    so where the file does not exist."""
    data = cfg.data
    try:
        first = train_sources(data)[0]
    except DataError as e:
        return f"{e}: no sample shown"
    if not Path(first.files[0].split("#", 1)[0]).exists():
        return f"data.train {first.files[0]} not found: no sample shown"
    renderer = renderer_for(cfg.model.path, data, spec)
    return show(first.files[0], first.format, read_options(data), renderer, n=1,
                shrink=data.on_too_long == "shrink")
