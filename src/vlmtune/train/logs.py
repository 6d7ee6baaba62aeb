"""A run's log: what is said before ``train.log`` can be opened is held back and written there first, and the
file gets every line of the run after it (the console keeps its own handler)."""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("vlmtune")


@contextlib.contextmanager
def held_back() -> Iterator[logging.handlers.BufferingHandler]:
    """Keep what is logged in the block (at INFO and above) for :func:`train_log` to write first."""
    early = logging.handlers.BufferingHandler(capacity=10_000)
    log.addHandler(early)
    log.setLevel(logging.INFO)
    try:
        yield early
    finally:
        log.removeHandler(early)


@contextlib.contextmanager
def train_log(path: Path | None, append: bool, early: logging.handlers.BufferingHandler) -> Iterator[None]:
    """Log to ``path`` in the block, after what ``early`` held back (``append``: continue the file of a resumed
    run). None: no file (the console only); what was held back is dropped."""
    handler = logging.FileHandler(path, mode="a" if append else "w") if path else None
    if handler:
        for record in early.buffer:
            handler.handle(record)
        log.addHandler(handler)
    log.removeHandler(early)
    try:
        yield
    finally:
        if handler:
            log.removeHandler(handler)
            handler.close()
