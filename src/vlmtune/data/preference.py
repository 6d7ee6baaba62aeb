"""Preference pairs as model inputs: the prompt answered with the chosen answer and with the rejected one, each
rendered by the :class:`~vlmtune.data.render.Renderer` like a supervised sample, labelled on its last answer only
(the answer's tokens and the end-of-turn token that closes it), and batched the way TRL's DPOTrainer takes them:
the chosen sequences, then the rejected ones, with a ``completion_mask`` where the labels are."""

from __future__ import annotations

from typing import Any

import torch

from ..core.errors import DataError
from ..core.sample import PreferenceSample, Sample
from .collate import SAMPLE_IDS, Collator, EncodedDataset
from .render import IGNORE_INDEX


def pair_tokens(renderer: Any, sample: Sample, image_sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """``(text, visual)`` tokens of ``sample`` (:meth:`Renderer.count_tokens`); of a preference pair, those of the
    longer of its two conversations, which bounds the pair's padded length. Both conversations are checked for
    control tokens."""
    counts = renderer.count_tokens(sample, image_sizes)
    if isinstance(sample, PreferenceSample):
        counts = max(counts, renderer.count_tokens(sample.rejected_sample(), image_sizes), key=sum)
    return counts


def last_answer_labels(labels: torch.Tensor) -> torch.Tensor:
    """``labels`` with every label before the last labelled span set to -100: only the final answer (the one the
    pair's sides differ in) is scored, not assistant turns of a multi-turn prompt."""
    labelled = (labels != IGNORE_INDEX).nonzero().flatten().tolist()
    if not labelled:
        return labels
    start = labelled[-1]
    while start > 0 and labels[start - 1] != IGNORE_INDEX:
        start -= 1
    out = labels.clone()
    out[:start] = IGNORE_INDEX
    return out


class _LastAnswer:
    """An encoder (a Renderer or a CachedRenderer) whose labels cover the last answer only."""

    def __init__(self, encoder: Any):
        self.encoder = encoder

    def encode(self, sample: Sample) -> dict[str, torch.Tensor]:
        features = dict(self.encoder.encode(sample))
        features["labels"] = last_answer_labels(features["labels"])
        return features


def pair_datasets(samples: list[Sample], encoder: Any, cache: bool = False
                  ) -> tuple[EncodedDataset, EncodedDataset]:
    """The chosen and the rejected conversations of ``samples``, rendered on demand (``cache``: kept in memory)."""
    plain = [s for s in samples if not isinstance(s, PreferenceSample)]
    if plain:
        raise DataError(f"{plain[0].id}: not a preference pair (no rejected answer); train.stage dpo needs "
                        "preference data: prompt, chosen and rejected (see `vlmtune data check`)")
    encoder = _LastAnswer(encoder)
    chosen = EncodedDataset([s.chosen_sample() for s in samples], encoder, cache=cache)
    rejected = EncodedDataset([s.rejected_sample() for s in samples], encoder, cache=cache)
    return chosen, rejected


class PreferenceCollator:
    """Rows ``{"index": i}`` -> one DPO batch: pair i's chosen sequences first, then the rejected ones in the same
    order (their image tensors concatenated in that order too), padded by :class:`Collator`, and
    ``completion_mask`` 1 exactly where a label is (the last answer and its end-of-turn token)."""

    def __init__(self, chosen: EncodedDataset, rejected: EncodedDataset, pad_token_id: int):
        self.chosen, self.rejected = chosen, rejected
        self.collator = Collator(pad_token_id)

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        indices = [row["index"] for row in rows]
        batch = self.collator([self.chosen[i] for i in indices] + [self.rejected[i] for i in indices])
        batch.pop(SAMPLE_IDS, None)  # TRL hands every key to the model
        labels = batch.pop("labels")
        batch["completion_mask"] = (labels != IGNORE_INDEX).long()
        return batch
