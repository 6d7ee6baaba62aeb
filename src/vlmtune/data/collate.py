"""Batching: pad the token sequences, concatenate the image tensors."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from .render import IGNORE_INDEX, SEQUENCE_KEYS, Renderer
from .sample import Sample

SAMPLE_ID, SAMPLE_IDS = "sample_id", "sample_ids"
"""Keys of a sample's id in its features and of the ids in a batch; the trainer removes them before the model."""


class EncodedDataset(Dataset):
    """Samples rendered when the Trainer asks for them; with ``cache`` kept for later epochs."""

    def __init__(self, samples: list[Sample], renderer: Renderer, cache: bool = False):
        self.samples, self.renderer = samples, renderer
        self._cache: dict[int, dict[str, torch.Tensor]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self._cache is None:
            features = self.renderer.encode(self.samples[index])
        else:
            if index not in self._cache:
                self._cache[index] = self.renderer.encode(self.samples[index])
            features = self._cache[index]
        # The id rides along to the training step, which names the samples of a batch whose loss is not finite.
        return {**features, SAMPLE_ID: self.samples[index].id}


class Collator:
    """Pads sequences to the longest in the batch (on ``padding_side``) and concatenates pixel tensors.

    Sequence keys (ids, masks, labels, ``mm_token_type_ids`` that Qwen-VL needs for its 3-D positions) are
    padded; everything else (``pixel_values``, ``image_grid_thw``, ...) is concatenated along dim 0, the way
    the processors batch images.
    """

    def __init__(self, pad_token_id: int, padding_side: str = "right"):
        self.pad_values = {"input_ids": pad_token_id, "labels": IGNORE_INDEX}
        self.padding_side = padding_side

    def __call__(self, features: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        batch: dict = {}
        longest = max(len(f["input_ids"]) for f in features)
        if SAMPLE_ID in features[0]:
            batch[SAMPLE_IDS] = [f[SAMPLE_ID] for f in features]
        for key in features[0]:
            if key == SAMPLE_ID:
                continue
            values = [f[key] for f in features]
            if key in SEQUENCE_KEYS:
                batch[key] = torch.stack([self._pad(v, longest, self.pad_values.get(key, 0)) for v in values])
            else:
                batch[key] = torch.cat(_pad_to_common_shape(values), dim=0)
        return batch

    def _pad(self, seq: torch.Tensor, length: int, value: int) -> torch.Tensor:
        pad = seq.new_full((length - len(seq),), value)
        return torch.cat([pad, seq] if self.padding_side == "left" else [seq, pad])


def _pad_to_common_shape(values: list[torch.Tensor]) -> list[torch.Tensor]:
    """Zero-pad every dimension but the first to the batch's largest, as the processors do within a batch.

    Tiling processors (Idefics3, SmolVLM) give each sample ``(1, tiles, 3, H, W)`` pixels with its own tile
    count; the model skips all-zero tiles. Tensors that already agree (Qwen-VL patches) are left as they are.
    """
    shapes = {tuple(v.shape[1:]) for v in values}
    if len(shapes) == 1 or len({v.dim() for v in values}) != 1:
        return values
    target = [max(dims) for dims in zip(*shapes, strict=True)]
    padded = []
    for v in values:
        pad: list[int] = []
        for have, want in zip(reversed(v.shape[1:]), reversed(target), strict=True):
            pad += [0, want - have]
        padded.append(torch.nn.functional.pad(v, pad))
    return padded
