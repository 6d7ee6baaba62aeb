"""Rendering that overlaps training: while the model trains on one batch, a background thread renders the samples
of the next batches this process will ask for (chat template, tokenizer, image decoding and the image processor;
much of it releases the GIL), so the training loop finds them ready.

The batches to come are read from the batch plan (:class:`vlmtune.train.sampler.LengthGroupedBatchSampler` makes
it a pure function of seed and epoch), starting from the batch the loader is fetching now: a resumed run that skips
its first batches renders nothing for them. Every sample is rendered in that one thread, whether prefetched or
asked for at once, so the processor and tokenizer are never used by two threads together. What a sample renders to
does not depend on when or where it is rendered: batches are the same, in the same order, as without prefetching.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

RENDERING = threading.Lock()
"""Held while a dataset renders a sample: a validation in the training process and the prefetch thread share one
processor, whose tokenizer must not be used from two threads at once."""

AHEAD = 2
"""Batches rendered ahead of the one being fetched: one keeps the loop fed when rendering a batch takes less time
than a training step; a second absorbs a batch of large images."""


class Prefetcher:
    """``get(index)`` returns ``encode(index)``, rendered in the background thread, ahead of time where the plan
    says the index comes soon.

    ``plan``: the current epoch's batches, in the order the loader fetches them (a new list object each epoch).
    ``stride``: every how many batches of the plan this process takes (data-parallel ranks are dealt batch ``i``
    at ``i % world_size``).
    """

    def __init__(self, encode: Callable[[int], Any], plan: Callable[[], list[list[int]]], stride: int = 1,
                 ahead: int = AHEAD):
        self.encode, self.plan, self.stride, self.ahead = encode, plan, max(1, stride), ahead
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlmtune-render")
        self._pending: dict[int, Future] = {}
        self.served_ahead = 0  # samples that were queued before the loader asked for them
        self._batches: list[list[int]] | None = None
        self._last = -1  # the position in the plan fetched last
        self._position: dict[int, int] = {}
        self._followed: set[int] = set()  # batches whose fetch has queued the ones after them
        self._queued: set[int] = set()

    def get(self, index: int) -> Any:
        """The rendered sample ``index``; starts rendering the batches that follow its batch in the plan."""
        self._follow(index)
        future = self._pending.pop(index, None)
        if future is None:
            future = self._thread.submit(self.encode, index)
        else:
            self.served_ahead += 1
        return future.result()

    def _follow(self, index: int) -> None:
        batches = self.plan()
        if batches is not self._batches:  # a new epoch: a new plan
            self._batches = batches
            self._position = {i: p for p, batch in enumerate(batches) for i in batch}
            self._followed, self._queued, self._last = set(), set(), -1
        position = self._position.get(index)
        if position is None:
            return
        if position < self._last:  # the same plan from the start again
            self._followed, self._queued = set(), set()
        self._last = position
        if position in self._followed:
            return
        self._followed.add(position)
        for ahead in range(1, self.ahead + 1):
            following = position + ahead * self.stride
            if following >= len(batches) or following in self._queued:
                continue
            self._queued.add(following)
            for i in batches[following]:
                if i not in self._pending:
                    self._pending[i] = self._thread.submit(self.encode, i)

    def drain(self) -> None:
        """Wait for the samples queued ahead (training ended before it asked for them): after this nothing renders
        in the background, and the processor is the caller's alone."""
        wait(list(self._pending.values()))
