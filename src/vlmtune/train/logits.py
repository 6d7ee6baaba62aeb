"""Logits only where a label is: the LM head and the loss skip every position whose next token is not trained on
(system prompt, image tokens, question, padding), through transformers' ``logits_to_keep``.

In VLM data most tokens are visual or prompt: the answer is often a tenth of a sample or less. The full logits
tensor (tokens x vocabulary, upcast to fp32 for the loss, and its gradient) is then mostly wasted compute and, for
a 150k vocabulary, gigabytes of memory. The loss is unchanged: the same label tokens meet the same logits.
"""

from __future__ import annotations

import inspect

import torch

from ..data.render import IGNORE_INDEX


def accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether the (PEFT-unwrapped) model's forward takes ``logits_to_keep`` (transformers' generative models do)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def answer_logits_only(inputs: dict) -> dict:
    """``inputs`` with ``logits_to_keep`` = the positions that predict a label in any row of the batch, and labels
    cut to match for a next-token loss that shifts by one.

    The loss pairs logit ``j`` with label ``j + 1`` and ignores the last logit: so the labels are an ignored column
    followed by the kept targets, and one extra (repeated) position is kept last, the one the loss ignores.
    """
    labels = inputs["labels"]
    keep = (labels[:, 1:] != IGNORE_INDEX).any(0).nonzero().squeeze(1)  # position p predicts token p + 1
    if keep.numel() == 0:
        return inputs
    ignored = labels.new_full((labels.shape[0], 1), IGNORE_INDEX)
    return {**inputs, "logits_to_keep": torch.cat([keep, keep[-1:]]),
            "labels": torch.cat([ignored, labels[:, keep + 1]], dim=1)}
