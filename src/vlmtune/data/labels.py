"""Label only what the assistant says: find each answer in the token ids and mask everything else.

Labels are -100 everywhere except the tokens of each assistant answer and the end-of-turn token that closes
it, in every assistant turn. Answers are found in the token ids by the family's assistant header and
end-of-turn token, the way the families' own fine-tuning code masks them. A model of no registered family has
no known header: its answers are found by rendering the conversation turn by turn (:func:`turn_labels`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..core.errors import ModelError, SampleError
from ..core.sample import Sample

if TYPE_CHECKING:
    from .render import Renderer

IGNORE_INDEX = -100


class TemplateMismatch(ModelError):
    """Rendering a conversation turn by turn does not reproduce its full rendering: the answers cannot be found."""


def header_tokenizations(tokenizer: Any, header: str | None) -> list[list[int]]:
    """The token ids ``header`` can take in a rendered conversation: on its own, and after a newline, where
    SentencePiece tokenizers drop the word-start marker (LLaVA-1.5: "▁A SS..." after a space, "A SS..." after the
    "<image>\n" of a user turn that is only an image)."""
    if not header:
        return []
    forms = [tokenizer.encode(header, add_special_tokens=False)]
    newline = tokenizer.encode("\n", add_special_tokens=False)
    after_newline = tokenizer.encode("\n" + header, add_special_tokens=False)
    if after_newline[:len(newline)] == newline and after_newline[len(newline):] not in forms:
        forms.append(after_newline[len(newline):])
    return forms


def answer_spans(ids: list[int], header_ids: list[list[int]], turn_end_id: int,
                 prefix_ids: list[int] | None = None) -> list[tuple[int, int]]:
    """``(start, end)`` of each assistant answer in ``ids``: from after a header (and the family's
    ``answer_prefix``, where it follows) through the end-of-turn token that closes it. A header inside an answer
    is part of that answer."""
    prefix, spans, i = prefix_ids or [], [], 0
    while i < len(ids):
        header = next((h for h in header_ids if h and ids[i:i + len(h)] == h), None)
        if header is None:
            i += 1
            continue
        j = start = i + len(header)
        if prefix and ids[j:j + len(prefix)] == prefix:
            j = start = j + len(prefix)
        while j < len(ids) and ids[j] != turn_end_id:
            j += 1
        spans.append((start, min(j + 1, len(ids))))
        i = j + 1
    return spans


def assistant_labels(input_ids: torch.Tensor, header_ids: list[list[int]], turn_end_id: int,
                     prefix_ids: list[int] | None = None) -> torch.Tensor:
    """Copy of ``input_ids`` with everything but assistant answers (+ their end token) set to -100.

    ``header_ids``: the tokenizations of the assistant header (:func:`header_tokenizations`). ``prefix_ids`` (the
    family's ``answer_prefix``), where they follow a header, stay -100 with it.
    """
    ids = input_ids.tolist()
    labels = [IGNORE_INDEX] * len(ids)
    for start, end in answer_spans(ids, header_ids, turn_end_id, prefix_ids):
        labels[start:end] = ids[start:end]
    return torch.tensor(labels, dtype=input_ids.dtype)


def check_answer_count(renderer: Renderer, sample: Sample, input_ids: torch.Tensor) -> None:
    """One labelled answer per assistant turn, or the labels would leave an answer out (a header tokenised
    in an unforeseen way) or train on text that is not an answer."""
    found = len(answer_spans(input_ids.tolist(), renderer.header_ids, renderer.turn_end_id, renderer.prefix_ids))
    turns = sum(m.role == "assistant" for m in sample.messages)
    if found != turns:
        raise SampleError(sample.id, (
            f"{found} answer(s) found after the assistant header {renderer.spec.assistant_header!r} for {turns} "
            "assistant turn(s): the labels would be wrong, so the sample is not used"))


def turn_labels(renderer: Renderer, sample: Sample, input_ids: torch.Tensor) -> torch.Tensor:
    """Labels for a family with no known assistant header: an answer is what rendering the conversation up to the
    end of its turn adds to rendering it up to the turn's generation prompt, through the last special token
    added (the end of the turn: what the template writes after it only separates turns), or all of it where
    it adds none.

    Both renderings must begin the full one: a template that renders earlier turns differently once later
    turns exist raises :class:`TemplateMismatch`, naming the sample and the first differing token.
    """
    ids = input_ids.tolist()
    labels = [IGNORE_INDEX] * len(ids)
    last = len(sample.messages) - 1
    for i, message in enumerate(sample.messages):
        if message.role != "assistant":
            continue
        start = _prefix_length(renderer, sample, i, ids, add_generation_prompt=True)
        stop = len(ids) if i == last else _prefix_length(renderer, sample, i + 1, ids)
        ends = [j for j in range(start, stop) if ids[j] in renderer.special_ids]
        for j in range(start, ends[-1] + 1 if ends else stop):
            labels[j] = ids[j]
    return torch.tensor(labels, dtype=input_ids.dtype)


def _prefix_length(renderer: Renderer, sample: Sample, n: int, ids: list[int],
                   add_generation_prompt: bool = False) -> int:
    """Tokens in the rendering of ``sample``'s first ``n`` messages, which must begin the full rendering ``ids``."""
    part = Sample(sample.messages[:n], sample.id, sample.meta)
    prefix = renderer.process(part, renderer.text(part, add_generation_prompt))["input_ids"].tolist()
    if ids[:len(prefix)] == prefix:
        return len(prefix)
    at = next(k for k, token in enumerate(prefix) if k >= len(ids) or ids[k] != token)
    decode = renderer.processor.tokenizer.decode
    theirs = repr(decode([ids[at]])) if at < len(ids) else "its end"
    raise TemplateMismatch(
        f"{sample.id}: the chat template renders messages[:{n}] differently alone than within the whole "
        f"conversation (token {at}: {decode([prefix[at]])!r} alone, {theirs} in the whole), so the assistant "
        f"answers cannot be found by rendering turn by turn. {renderer.spec.name} is not a registered family; "
        "registering it with its assistant header lets vlmtune mask its answers")
