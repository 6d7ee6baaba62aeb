"""Padded batches vs packed rows (``train.packing``) of the same samples: forward + backward time, interleaved.

Each batch of N consecutive samples runs once padded (``Collator``) and once packed (``PackingCollator``), one
right after the other, for every batch and several rounds, so a change in machine load hits both alike; the
median step time of each is printed. The whole model trains (no LoRA), fp32, on one torch thread.

    PYTHONPATH=src python benchmarks/packing.py bench-data/model bench-data/train.jsonl --per-batch 4
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vlmtune.data import Collator, EncodedDataset, Renderer
from vlmtune.data.check import check_dataset
from vlmtune.data.collate import SAMPLE_IDS
from vlmtune.data.pack import PackingCollator
from vlmtune.data.render import IGNORE_INDEX
from vlmtune.models import load_model, load_processor, spec_for
from vlmtune.train.packing import model_positions, split_per_sample
from vlmtune.train.trainer import causal_lm_loss


def _step_s(model: torch.nn.Module, batch: dict) -> float:
    inputs = {k: v for k, v in batch.items() if k != SAMPLE_IDS}
    labels = inputs.pop("labels")
    start = time.perf_counter()
    loss = causal_lm_loss(model(**inputs), labels, int((labels[:, 1:] != IGNORE_INDEX).sum()))
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="checkpoint folder of a family that packs (Qwen-VL)")
    parser.add_argument("data", help="data file")
    parser.add_argument("--per-batch", type=int, default=4, help="samples in a batch / a packed row (default 4)")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-pixels", type=int, default=200704, help="as benchmarks/mixed_images.py sets")
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = spec_for(args.model, check_split=False)
    renderer = Renderer(load_processor(args.model, spec, max_pixels=args.max_pixels), spec)
    dataset = EncodedDataset(check_dataset(args.data).samples, renderer)
    model = load_model(args.model)
    split_per_sample(model, spec.packing_per_sample_modules)
    n = args.per_batch
    batches = [[dataset[i] for i in range(s, s + n)] for s in range(0, args.batches * n, n)]
    padded, packed = Collator(renderer.processor.tokenizer.pad_token_id), PackingCollator(model_positions(model))
    times: dict[str, list[float]] = {"padded": [], "packed": []}
    for _ in range(args.rounds):
        for batch in batches:
            times["padded"].append(_step_s(model, padded(batch)))
            times["packed"].append(_step_s(model, packed(batch)))
    tokens = sum(len(f["input_ids"]) for b in batches for f in b)
    slots = sum(n * max(len(f["input_ids"]) for f in b) for b in batches)
    print(f"{len(batches)} batches of {n} samples in file order, {args.rounds} rounds; {tokens} tokens, "
          f"{slots} padded slots ({1 - tokens / slots:.1%} padding)")
    for name, values in times.items():
        print(f"{name}: median {statistics.median(values) * 1000:.0f} ms a step")


if __name__ == "__main__":
    main()
