"""The one thread that touches the model: it gathers waiting requests for the same model and settings into one
left-padded batched ``generate`` call, and runs streamed requests one at a time."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from ..models.answers import AnswerText
from .text import IncrementalText, final_text

log = logging.getLogger("vlmtune")


@dataclass(frozen=True)
class Sampling:
    """How to generate one answer (OpenAI's request fields)."""

    max_new_tokens: int
    temperature: float = 0.0
    """0: greedy, exactly as ``vlmtune predict`` and ``vlmtune eval`` generate."""
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


@dataclass(frozen=True)
class Completion:
    """One generated answer and its token counts."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    """``stop`` (end of turn or a stop string) or ``length`` (``max_new_tokens`` reached)."""


@dataclass(eq=False)
class Job:
    """One request waiting for the worker: its encoded prompt, the adapter (None: the base) and the sampling."""

    adapter: str | None
    inputs: dict[str, torch.Tensor]
    sampling: Sampling
    future: Future = field(default_factory=Future)
    pieces: queue.Queue | None = None
    """For a streamed request: text pieces, then the :class:`Completion` (or an exception) last."""
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def prompt_tokens(self) -> int:
        return len(self.inputs["input_ids"])

    def batch_key(self) -> tuple | None:
        """Jobs with equal keys share a batch; None: this job runs alone (streamed, or seeded for reproducibility)."""
        if self.pieces is not None or self.sampling.seed is not None:
            return None
        s = self.sampling
        return (self.adapter, "greedy") if s.greedy else (self.adapter, s.temperature, s.top_p)


class Worker:
    """Runs :class:`Job`\\ s on ``model`` in its own thread; ``adapters`` maps an adapter to PEFT's adapter name.
    ``answer_tokens``: the special tokens an answer keeps (the family's ``FamilySpec.answer_tokens``)."""

    def __init__(self, model: Any, tokenizer: Any, max_batch_size: int = 8, gather_seconds: float = 0.01,
                 answer_tokens: Sequence[str] = ()):
        self.model, self.tokenizer = model, tokenizer
        self._answer_text = AnswerText(tokenizer, answer_tokens)
        self.max_batch_size, self.gather_seconds = max(1, max_batch_size), gather_seconds
        self._batch_sizes: Counter[int] = Counter()
        self._stats_lock = threading.Lock()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._waiting: deque[Job] = deque()
        self._eos = _eos_ids(model, tokenizer)
        self._thread = threading.Thread(target=self._loop, name="vlmtune-generate", daemon=True)
        self._thread.start()

    def batch_sizes(self) -> dict[int, int]:
        """How many batches of each size have been run."""
        with self._stats_lock:
            return dict(sorted(self._batch_sizes.items()))

    def submit(self, job: Job) -> Job:
        self._queue.put(job)
        return job

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        while True:
            first = self._waiting.popleft() if self._waiting else self._queue.get()
            if first is None:
                return
            batch = self._gather(first)
            if batch is None:
                return
            with self._stats_lock:
                self._batch_sizes[len(batch)] += 1
            self._run(batch)

    def _gather(self, first: Job) -> list[Job] | None:
        """``first`` and the jobs that share its key, waiting a short moment for more to arrive."""
        key = first.batch_key()
        batch = [first]
        if key is None:
            return batch
        for job in list(self._waiting):
            if len(batch) < self.max_batch_size and job.batch_key() == key:
                self._waiting.remove(job)
                batch.append(job)
        deadline = time.monotonic() + self.gather_seconds
        while len(batch) < self.max_batch_size:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)  # close after this batch
                break
            (batch if job.batch_key() == key else self._waiting).append(job)
        return batch

    def _run(self, jobs: list[Job]) -> None:
        jobs = [j for j in jobs if j.future.set_running_or_notify_cancel() and not j.cancelled.is_set()]
        if not jobs:
            return
        try:
            with torch.no_grad(), self._adapter(jobs[0].adapter):
                results = self._generate(jobs)
        except Exception as e:  # the request fails, the worker keeps serving
            log.exception("generation failed")
            for job in jobs:
                job.future.set_exception(e)
                if job.pieces is not None:
                    job.pieces.put(e)
            return
        for job, result in zip(jobs, results, strict=True):
            job.future.set_result(result)
            if job.pieces is not None:
                job.pieces.put(result)

    @contextlib.contextmanager
    def _adapter(self, adapter: str | None) -> Iterator[None]:
        if not hasattr(self.model, "peft_config"):
            yield
        elif adapter is None:
            with self.model.disable_adapter():
                yield
        else:
            self.model.set_adapter(adapter)
            yield

    def _generate(self, jobs: list[Job]) -> list[Completion]:
        from ..data.collate import Collator

        pad = self.tokenizer.pad_token_id
        # Decoder-only generation continues from the last position, so prompts are padded on the left.
        collate = Collator(pad, padding_side="left")
        device = next(self.model.parameters()).device
        batch = {k: v.to(device) for k, v in collate([j.inputs for j in jobs]).items()}
        s = jobs[0].sampling
        kwargs: dict[str, Any] = {"max_new_tokens": max(j.sampling.max_new_tokens for j in jobs),
                                  "pad_token_id": pad}
        if s.greedy:
            kwargs["do_sample"] = False  # as vlmtune.evaluate.generate calls it: the same tokens as predict
        else:
            kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p)
            if s.seed is not None:
                torch.manual_seed(s.seed)
        width = batch["input_ids"].shape[1]
        streamed = jobs[0].pieces is not None
        texts = [IncrementalText(self._decode, j.sampling.stop) for j in jobs]
        if streamed:
            kwargs["streamer"] = _Streamer(texts[0], jobs[0].pieces)
        if streamed or any(j.sampling.stop for j in jobs):
            kwargs["stopping_criteria"] = StoppingCriteriaList([_Stop(jobs, texts, width, streamed)])
        out = self.model.generate(**batch, **kwargs)
        return [self._completion(job, out[i, width:].tolist()) for i, job in enumerate(jobs)]

    def _completion(self, job: Job, generated: list[int]) -> Completion:
        generated = generated[:job.sampling.max_new_tokens]
        end = next((i for i, t in enumerate(generated) if t in self._eos), None)
        n = len(generated) if end is None else end + 1
        text, stopped = final_text(self._decode(generated[:n]), job.sampling.stop)
        reason = "stop" if end is not None or stopped or job.cancelled.is_set() else "length"
        return Completion(text, job.prompt_tokens, n, reason)

    def _decode(self, tokens: list[int]) -> str:
        return self._answer_text(tokens)


class _Streamer(BaseStreamer):
    """Hands each new piece of a streamed answer to its request's queue as ``generate`` produces it."""

    def __init__(self, text: IncrementalText, pieces: queue.Queue):
        self.text, self.pieces, self.prompt_seen = text, pieces, False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate first passes the prompt
            self.prompt_seen = True
            return
        piece = self.text.add(value.reshape(-1).tolist())
        if piece:
            self.pieces.put(piece)

    def end(self) -> None:
        piece = self.text.finish()
        if piece:
            self.pieces.put(piece)


class _Stop(StoppingCriteria):
    """Ends a row at its stop strings, and a streamed request whose client went away."""

    def __init__(self, jobs: list[Job], texts: list[IncrementalText], width: int, streamed: bool):
        self.jobs, self.texts, self.width, self.streamed = jobs, texts, width, streamed

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        done = []
        for i, job in enumerate(self.jobs):
            if self.streamed:  # the streamer has already read this token
                stop = self.texts[i].stopped
            else:
                _, stop = final_text(self.texts[i].decode(input_ids[i, self.width:].tolist()), job.sampling.stop)
            done.append(stop or job.cancelled.is_set())
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids
