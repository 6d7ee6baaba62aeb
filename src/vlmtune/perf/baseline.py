"""The recipe most VLM fine-tuning tutorials teach (COCO captions, Qwen-VL notebooks), for ``vlmtune bench
--baseline``: the processor applied to each sample in ``datasets.Dataset.map``, the resulting ids and pixel tensors
stored in the Arrow table and read back with ``with_format("torch")``, transformers' ``DataCollatorForSeq2Seq``
padding each batch to its longest sample, plain ``Trainer`` with random batches (no length grouping).

Tokens, labels and pixels are vlmtune's own rendering, so both sides train on identical inputs and only the data
pipeline and batching differ.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DataCollatorForSeq2Seq

from ..core.sample import Sample
from ..data.render import SEQUENCE_KEYS, Renderer

_TEXT_KEYS = ("input_ids", "attention_mask", "labels")


def baseline_dataset(samples: list[Sample], renderer: Renderer, progress: bool = False) -> Any:
    """``samples`` processed one by one in ``Dataset.map``, stored in Arrow, served as torch tensors."""
    try:
        import datasets
    except ImportError:
        raise ImportError("vlmtune bench --baseline needs the datasets library: pip install 'vlmtune[hf]'") from None

    def process(example: dict) -> dict:
        return {k: v.tolist() for k, v in renderer.encode(samples[example["index"]]).items()}

    table = datasets.Dataset.from_dict({"index": list(range(len(samples)))})
    if not progress:
        datasets.disable_progress_bars()
    try:
        return table.map(process, remove_columns=["index"]).with_format("torch")
    finally:
        if not progress:
            datasets.enable_progress_bars()


class BaselineCollator:
    """``DataCollatorForSeq2Seq`` for ids, attention mask and labels (padded to the batch's longest), plus what the
    tutorials' collate functions add for images: pixel rows concatenated, other sequences (Qwen-VL's
    ``mm_token_type_ids``) padded alike."""

    def __init__(self, tokenizer: Any):
        self.seq2seq = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100)
        self.left = tokenizer.padding_side == "left"

    def __call__(self, features: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        batch = dict(self.seq2seq([{k: f[k] for k in _TEXT_KEYS if k in f} for f in features]))
        longest = batch["input_ids"].shape[1]
        for key in features[0]:
            if key in _TEXT_KEYS:
                continue
            values = [f[key] for f in features]
            if key in SEQUENCE_KEYS:
                pads = [v.new_zeros(longest - len(v)) for v in values]
                pairs = zip(values, pads, strict=True)
                batch[key] = torch.stack([torch.cat([p, v] if self.left else [v, p]) for v, p in pairs])
            else:
                batch[key] = torch.cat(values, dim=0)
        return batch
