"""A loaded model ready to answer chats: the base and its adapters, each under a name, rendered and generated exactly
as ``vlmtune predict`` does, with every model call made by one worker thread (:mod:`.worker`)."""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import SampleError
from ..core.sample import Message, Sample, TextPart
from .loading import Plan, ServedModel, load_served, plan_served
from .worker import Completion, Job, Sampling, Worker


class RequestError(ValueError):
    """A request the engine cannot answer; ``param`` names the request field at fault."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message, self.param = message, param


@dataclass
class Stream:
    """A streamed answer: iterate for the text pieces; :attr:`completion` holds the totals once it is exhausted."""

    job: Job
    completion: Completion | None = None

    def __iter__(self) -> Iterator[str]:
        try:
            while True:
                item = self.job.pieces.get()
                if isinstance(item, Completion):
                    self.completion = item
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.job.cancelled.set()  # a client that stops reading stops the generation

    def close(self) -> None:
        self.job.cancelled.set()


class Engine:
    """The base model and its adapters, served by name. ``chat`` and ``stream`` may be called from any thread."""

    def __init__(self, model: Any, served: dict[str, ServedModel], max_batch_size: int = 8):
        self.model, self.served = model, served
        first = next(iter(served.values()))
        self.worker = Worker(model, first.renderer.processor.tokenizer, max_batch_size,
                             answer_tokens=first.renderer.spec.answer_tokens)

    @classmethod
    def load(cls, model: str | None, adapters: Mapping[str, str] | None = None, config: str | Path | None = None,
             *, max_batch_size: int = 8, options: Mapping[str, Any] | None = None, **overrides: Any) -> Engine:
        """Load ``model`` (a hub id, a checkpoint folder, or a `vlmtune train` run folder) with ``adapters``
        (name -> adapter folder). ``config``: the run config to follow (default: the run config next to the first
        adapter or the model, as ``predict`` finds it); ``overrides``: dotted ``key=value`` settings over it,
        e.g. ``**{"data.system": "Answer in one word."}``; ``options``: command options as ``predict`` takes them
        (``system``, ``max_new_tokens``, ``min_pixels``, ``max_pixels``, ``image_size``)."""
        items = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in overrides.items()]
        return cls.from_settings(model, adapters, config, items, options, max_batch_size)

    @classmethod
    def from_settings(cls, model: str | None, adapters: Mapping[str, str] | None, config: str | Path | None,
                      overrides: Sequence[str] = (), options: Mapping[str, Any] | None = None,
                      max_batch_size: int = 8) -> Engine:
        """:meth:`load` with overrides as the command line gives them (``["data.system=...", ...]``)."""
        plan = plan_served(model, dict(adapters or {}), config, list(overrides), dict(options or {}))
        return cls.from_plan(plan, max_batch_size)

    @classmethod
    def from_plan(cls, plan: Plan, max_batch_size: int = 8) -> Engine:
        """Load what ``plan`` (:func:`vlmtune.serve.loading.plan_served`) names."""
        return cls(*load_served(plan), max_batch_size)

    def model_names(self) -> list[str]:
        """The base's name first, then the adapters' names."""
        return list(self.served)

    def chat(self, model: str, messages: Sequence[Message], max_new_tokens: int | None = None,
             temperature: float = 0.0) -> str:
        """The answer of ``model`` (a name from :meth:`model_names`) to the conversation ``messages``."""
        return self.complete(model, messages, self.sampling(model, max_new_tokens, temperature)).text

    def stream(self, model: str, messages: Sequence[Message], max_new_tokens: int | None = None,
               temperature: float = 0.0) -> Iterator[str]:
        """:meth:`chat`'s answer in pieces as they are generated; joined, they equal :meth:`chat`'s answer."""
        return iter(self.start_stream(model, messages, self.sampling(model, max_new_tokens, temperature)))

    def sampling(self, model: str, max_new_tokens: int | None = None, temperature: float = 0.0,
                 top_p: float | None = None, seed: int | None = None, stop: Sequence[str] = ()) -> Sampling:
        """Generation settings for ``model``; ``max_new_tokens`` defaults to its run's ``eval.max_new_tokens``."""
        served = self._served(model)
        return Sampling(max_new_tokens or served.max_new_tokens, float(temperature or 0.0),
                        1.0 if top_p is None else float(top_p), seed, tuple(stop))

    def complete(self, model: str, messages: Sequence[Message], sampling: Sampling) -> Completion:
        """The answer with its token counts; raises :class:`RequestError` for a request that cannot be answered."""
        return self.worker.submit(self._job(model, messages, sampling)).future.result()

    def start_stream(self, model: str, messages: Sequence[Message], sampling: Sampling) -> Stream:
        """A :class:`Stream` of the answer; the prompt is checked before this returns."""
        job = self._job(model, messages, sampling)
        job.pieces = queue.Queue()
        return Stream(self.worker.submit(job))

    def batch_sizes(self) -> dict[int, int]:
        """How many batches of each size the worker has run."""
        return self.worker.batch_sizes()

    def close(self) -> None:
        """Stop the worker thread."""
        self.worker.close()

    def _served(self, model: str) -> ServedModel:
        try:
            return self.served[model]
        except KeyError:
            raise RequestError(f"model {model!r} is not served here; served: {', '.join(self.served)}",
                               "model") from None

    def _job(self, model: str, messages: Sequence[Message], sampling: Sampling) -> Job:
        served = self._served(model)
        messages = tuple(messages)
        if not any(m.role == "user" for m in messages):
            raise RequestError("messages: no user message", "messages")
        if served.system and not any(m.role == "system" for m in messages):
            # The system prompt as the data readers add it: first, to a conversation that has none.
            messages = (Message("system", (TextPart(served.system),)), *messages)
        sample = Sample(messages=messages, id="request")
        try:
            with served.lock:
                inputs = served.renderer.encode_prompt(sample)
        except SampleError as e:
            raise RequestError(f"messages: {e.problem}", "messages") from None
        n, limit = len(inputs["input_ids"]), served.renderer.max_length
        if limit is not None and n > limit:
            images = len(sample.image_parts)
            raise RequestError(f"messages: the prompt is {n} tokens ({images} image(s)), over this model's context "
                               f"of {limit} tokens (data.max_length)", "messages")
        return Job(served.adapter, inputs, sampling)


__all__ = ["Completion", "Engine", "RequestError", "Sampling", "Stream"]
