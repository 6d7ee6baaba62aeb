"""Batching: pad the token sequences, concatenate the image tensors."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from ..core.sample import ImagePart, Message, Sample, TextPart
from .prefetch import RENDERING, Prefetcher
from .render import IGNORE_INDEX, SEQUENCE_KEYS, Renderer

SAMPLE_ID, SAMPLE_IDS = "sample_id", "sample_ids"
"""Keys of a sample's id in its features and of the ids in a batch; the trainer removes them before the model."""


class EncodedDataset(Dataset):
    """Samples rendered when the Trainer asks for them; with ``cache`` kept for later epochs."""

    def __init__(self, samples: list[Sample], renderer: Renderer, cache: bool = False):
        self.samples, self.renderer = samples, renderer
        self._cache: dict[int, dict[str, torch.Tensor]] | None = {} if cache else None
        self.prefetcher: Prefetcher | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        features = self._encode(index) if self.prefetcher is None else self.prefetcher.get(index)
        # The id rides along to the training step, which names the samples of a batch whose loss is not finite.
        return {**features, SAMPLE_ID: self.samples[index].id}

    def _encode(self, index: int) -> dict[str, torch.Tensor]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        with RENDERING:  # the prefetch thread and a validation may share one processor
            features = self.renderer.encode(self.samples[index])
        if self._cache is not None:
            self._cache[index] = features
        return features

    def prefetch(self, plan: Callable[[], list[list[int]]], stride: int = 1) -> None:
        """Render the samples of the next batches of ``plan`` in a background thread while the model trains
        (:class:`vlmtune.data.prefetch.Prefetcher`); only in the training process, not in DataLoader workers."""
        self.prefetcher = Prefetcher(self._encode, plan, stride)

    def __getstate__(self) -> dict[str, Any]:  # a DataLoader worker gets a copy without the thread
        return {**self.__dict__, "prefetcher": None}


class Collator:
    """Pads sequences to the longest in the batch (on ``padding_side``) and concatenates pixel tensors.

    Sequence keys (ids, masks, labels, ``mm_token_type_ids`` that Qwen-VL needs for its 3-D positions) are
    padded; everything else (``pixel_values``, ``image_grid_thw``, ...) is concatenated along dim 0, the way
    the processors batch images, from the samples that have it (a batch may mix samples with and without images).

    ``placeholder_image`` (from :func:`placeholder_image_features`): a batch in which no sample has an image gets
    that one tiny image, so the vision tower runs on every batch (ZeRO-3 / FSDP gather its sharded weights inside
    its forward, and a rank that skipped it would hang the others; DDP expects every trainable parameter used).
    Its tokens go after the shortest sample's tokens (before them with left padding), with attention mask 0 and
    labels -100: no token attends to them and no loss is taken on them, so the loss and the gradients are those of
    the batch without it (the vision tower's gradients are zeros). Batches holding an image are left as they are.
    """

    def __init__(self, pad_token_id: int, padding_side: str = "right",
                 placeholder_image: dict[str, torch.Tensor] | None = None):
        self.pad_values = {"input_ids": pad_token_id, "labels": IGNORE_INDEX}
        self.padding_side = padding_side
        if placeholder_image is not None:  # never attended to, never trained on, whoever built it
            ids = placeholder_image["input_ids"]
            placeholder_image = {**placeholder_image, "attention_mask": torch.zeros_like(ids),
                                 "labels": torch.full_like(ids, IGNORE_INDEX)}
        self.placeholder_image = placeholder_image
        self._image_keys = [k for k in placeholder_image or {} if k not in SEQUENCE_KEYS]

    def __call__(self, features: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        if self._image_keys and not any(k in f for f in features for k in self._image_keys):
            features = self._add_placeholder(features)
        batch: dict = {}
        longest = max(len(f["input_ids"]) for f in features)
        if SAMPLE_ID in features[0]:
            batch[SAMPLE_IDS] = [f[SAMPLE_ID] for f in features]
        for key in dict.fromkeys(k for f in features for k in f):  # every sample's keys, in order of appearance
            if key == SAMPLE_ID:
                continue
            if key in SEQUENCE_KEYS:
                batch[key] = torch.stack([self._pad(self._sequence(f, key), longest, self.pad_values.get(key, 0))
                                          for f in features])
            else:
                batch[key] = torch.cat(_pad_to_common_shape([f[key] for f in features if key in f]), dim=0)
        return batch

    def _sequence(self, features: dict[str, torch.Tensor], key: str) -> torch.Tensor:
        """``features[key]``, or what it would hold for a sample without it: all attended, no labels, type 0."""
        if key in features:
            return features[key]
        ids = features["input_ids"]
        return ids.new_full(ids.shape, 1 if key == "attention_mask" else self.pad_values.get(key, 0))

    def _add_placeholder(self, features: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        """``features`` with the placeholder image joined to the shortest sample (the padded length grows least)."""
        placeholder = self.placeholder_image
        i = min(range(len(features)), key=lambda j: len(features[j]["input_ids"]))
        joined = {k: v for k, v in features[i].items() if k not in SEQUENCE_KEYS}
        for key in dict.fromkeys([*features[i], *placeholder]):
            if key in SEQUENCE_KEYS:
                own, extra = self._sequence(features[i], key), self._sequence(placeholder, key)
                joined[key] = torch.cat([extra, own] if self.padding_side == "left" else [own, extra])
        joined.update({k: placeholder[k] for k in self._image_keys})
        return [*features[:i], joined, *features[i + 1:]]

    def _pad(self, seq: torch.Tensor, length: int, value: int) -> torch.Tensor:
        pad = seq.new_full((length - len(seq),), value)
        return torch.cat([pad, seq] if self.padding_side == "left" else [seq, pad])


# Image-processor switches that cut an image into tiles (Idefics3 / SmolVLM, InternVL, Gemma 3 pan-and-scan):
# off for the placeholder image, which then is one tile.
_TILING_OFF = {"do_image_splitting": False, "crop_to_patches": False, "do_pan_and_scan": False}
PLACEHOLDER_IMAGE_SIDE = 32
"""Side in pixels of the placeholder image; processors resize it to their smallest input (Qwen-VL: min_pixels)."""


def placeholder_image_features(renderer: Renderer, side: int = PLACEHOLDER_IMAGE_SIDE) -> dict[str, torch.Tensor]:
    """The features :class:`Collator` adds to a batch without an image: one small white image, untiled.

    Rendered by the family's own processor and chat template, as a user turn holding just the image; kept are the
    tokens the image adds to the rendering of the same turn without it (the image's tokens and its markers), with
    attention mask 0, labels -100 and the processor's type ids, and the image tensors (``pixel_values``,
    ``image_grid_thw``, ``pixel_attention_mask``, ...). Built once per run.
    """
    processor = renderer.processor
    tiling = {k: v for k, v in _TILING_OFF.items() if hasattr(processor.image_processor, k)}
    untiled = Renderer(_ImageKwargs(processor, tiling) if tiling else processor, renderer.spec)

    def sample(*parts) -> Sample:
        return Sample((Message("user", (*parts, TextPart("image"))), Message("assistant", (TextPart("yes"),))),
                      id="<placeholder image>")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "placeholder.png"
        Image.new("RGB", (side, side), (255, 255, 255)).save(path)  # white: never an all-zero (padding) tile
        with_image = untiled.encode(sample(ImagePart(path)))
    without = untiled.encode(sample())
    ids, text_ids = with_image["input_ids"].tolist(), without["input_ids"].tolist()
    start = 0
    while start < len(text_ids) and ids[start] == text_ids[start]:
        start += 1
    end = len(ids)
    while end - start > len(ids) - len(text_ids) and ids[end - 1] == text_ids[end - 1 - len(ids) + len(text_ids)]:
        end -= 1
    image_keys = [k for k in with_image if k not in SEQUENCE_KEYS]
    if not image_keys or end <= start:
        raise ValueError(f"{type(processor).__name__} gave no image tensors or tokens for a placeholder image")
    features = {k: with_image[k][start:end].clone() for k in SEQUENCE_KEYS if k in with_image}
    features["attention_mask"] = torch.zeros_like(features["input_ids"])
    features["labels"] = torch.full_like(features["input_ids"], IGNORE_INDEX)
    return {**features, **{k: with_image[k] for k in image_keys}}


class _ImageKwargs:
    """A processor whose calls carry extra image-processor arguments; its other attributes are the processor's."""

    def __init__(self, processor: Any, images_kwargs: dict[str, Any]):
        self._processor, self._images_kwargs = processor, images_kwargs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._processor, name)

    def __call__(self, *args, **kwargs):
        return self._processor(*args, images_kwargs=self._images_kwargs, **kwargs)


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
