"""Padding-free packing (``train.packing``): the samples of a batch concatenated into one row, no padding.

Each sample keeps the positions it has alone: ``positions`` gives them per sample (for Qwen-VL's M-RoPE the
model's own ``get_rope_index`` on the sample alone, so image tokens get their temporal / height / width positions),
and they restart at 0 at every sample. The row carries no attention mask: transformers then reads the sample
boundaries from the restarting text positions (``position_ids[0]``) when no cache is built (``use_cache`` is
False in the batch), and builds a block-diagonal causal mask
under SDPA and eager attention, or the varlen arguments (``cu_seq_lens_q``, ``max_length_q``) under
flash-attention. Those arguments are not put in the batch: the vision tower receives the forward's extra keyword
arguments too, and passes its own ``cu_seq_lens_q`` for the image patches.

The first label of each sample is -100: the loss pairs each label with the previous position's logits, which
for a sample's first token is the previous sample's last token. Images go in sample order (``pixel_values`` and
``image_grid_thw`` concatenated), the order in which the model matches them to image tokens.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .collate import SAMPLE_ID, SAMPLE_IDS, _pad_to_common_shape
from .render import IGNORE_INDEX, SEQUENCE_KEYS

Positions = Callable[[dict[str, torch.Tensor]], torch.Tensor]
"""One sample's features -> its position ids, ``(rows, length)``: the rows the model takes (one for plain RoPE;
text then temporal, height, width for M-RoPE), each starting at 0 for that sample."""


class PackingCollator:
    """Concatenates a batch's samples into a single row of ``input_ids``, ``labels``, ``position_ids`` (shape
    ``(rows, 1, total)``, or ``(1, total)`` for one row) and the other sequence keys, with the image tensors of
    all samples concatenated in order.

    ``placeholder_image`` (see :func:`.collate.placeholder_image_features`): a pack without any image gets it as a
    segment of its own, unlabelled; no sample attends to it, so the loss and the gradients are unchanged.
    """

    def __init__(self, positions: Positions, placeholder_image: dict[str, torch.Tensor] | None = None):
        self.positions = positions
        self.placeholder_image = placeholder_image
        self._image_keys = [k for k in placeholder_image or {} if k not in SEQUENCE_KEYS]

    def __call__(self, features: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        batch: dict = {}
        if SAMPLE_ID in features[0]:
            batch[SAMPLE_IDS] = [f[SAMPLE_ID] for f in features]
        segments = list(features)
        if self._image_keys and not any(k in f for f in features for k in self._image_keys):
            segments.append(self.placeholder_image)
        keys = list(dict.fromkeys(k for f in segments for k in f if k not in (SAMPLE_ID, "attention_mask")))
        for key in keys:
            if key in SEQUENCE_KEYS:
                batch[key] = torch.cat([_sequence(f, key) for f in segments])[None]
            else:
                batch[key] = torch.cat(_pad_to_common_shape([f[key] for f in segments if key in f]), dim=0)
        positions = torch.cat([self.positions(f) for f in segments], dim=-1)
        batch["position_ids"] = positions[:, None] if len(positions) > 1 else positions
        batch["use_cache"] = False  # with a cache (the config's default) transformers ignores the restarts
        return batch


def _sequence(features: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    """``features[key]`` as it goes into the pack: labels with the first one ignored (it would be predicted from
    the previous sample); a key the sample lacks filled as for a text token (type 0, no label)."""
    ids = features["input_ids"]
    if key not in features:
        return ids.new_full(ids.shape, IGNORE_INDEX if key == "labels" else 0)
    if key == "labels":
        labels = features[key].clone()
        labels[:1] = IGNORE_INDEX
        return labels
    return features[key]


def text_positions(features: dict[str, torch.Tensor]) -> torch.Tensor:
    """Plain RoPE: ``0 .. length - 1``, one row."""
    return torch.arange(len(features["input_ids"]))[None]
