"""Length-grouped batches: samples of similar length (text + visual tokens) share a batch, so little of it is
padding, with a fixed number of samples per batch or a token budget per batch.

Lengths come from ``Renderer.count_tokens`` during the data check, before training: no sample is rendered to
measure it. The batch plan is a pure function of (lengths, seed, epoch), so every data-parallel rank computes the
same plan and a resumed run replays the same batches.

Under data parallelism accelerate wraps the sampler in ``BatchSamplerShard``, which deals batch ``i`` to rank
``i % world_size``. The plan is built in *steps*: runs of ``world_size x grad_accum`` consecutive batches of
neighbouring lengths, shuffled as units. The ranks of one optimizer step thus hold batches of about the same
length (none waits long for the others), and the samples of a step are the same as one process would see with a
``world_size`` times larger batch.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from functools import partial

from torch.utils.data import DataLoader
from transformers import TrainerCallback
from transformers.trainer_utils import seed_worker

log = logging.getLogger("vlmtune")

MEGABATCH = 50
"""Fixed batch size: batches are formed by sorting random chunks of ``MEGABATCH`` optimizer steps' worth of
samples (transformers' ``LengthGroupedSampler`` uses the same factor), so batch contents change every epoch."""


BUCKET = 8
"""Lengths are grouped in buckets of 8 tokens, with edges shifted at random each epoch, and samples of one bucket
are in random order: samples a few tokens apart are interchangeable. Sorted by exact length, a dataset whose kinds
of samples differ by a token or two (two question templates) would train on batches of one kind only; in vlmtune's
demo task that lowered held-out accuracy over eight seeds."""


class LengthGroupedBatchSampler:
    """Yields lists of dataset indices, every index exactly once per epoch.

    ``batch_size``: samples per batch (the last batches of a chunk may hold fewer). ``max_tokens``: instead, as many
    samples as fit ``n x longest <= max_tokens`` (padded tokens, what memory and compute see); a sample longer than
    the budget forms a batch alone. ``packed`` (``train.packing``): a batch is one row without padding, so the
    budget counts the sum of its samples' tokens instead. With a budget the whole dataset is sorted by length bucket
    and cut into batch sizes fixed for the run (:meth:`_sizes`): the number of batches stays the same every epoch,
    which the Trainer's step count, schedule and resumption rely on, while their contents and order change.
    """

    # accelerate's BatchSamplerShard reads this: None means batches of varying size, dealt to ranks whole.
    batch_size = None

    def __init__(self, lengths: Sequence[int], batch_size: int | None = None, max_tokens: int | None = None,
                 seed: int = 0, step_batches: int = 1, packed: bool = False):
        if (batch_size is None) == (max_tokens is None):
            raise ValueError("give exactly one of batch_size and max_tokens")
        self.lengths, self.per_batch, self.max_tokens = list(lengths), batch_size, max_tokens
        self.seed, self.step_batches, self.epoch = seed, max(1, step_batches), 0
        self.packed = packed
        self._plans: dict[int, list[list[int]]] = {}
        self._len: int | None = None
        self._batch_sizes: list[int] | None = None
        if max_tokens is not None:
            over = sum(n > max_tokens for n in self.lengths)
            if over:
                log.warning("%d samples are longer than train.max_tokens_per_batch=%d; each trains in a batch of "
                            "its own", over, max_tokens)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        yield from self.plan(self.epoch)

    def __len__(self) -> int:
        if self._len is None:
            self._len = len(self._plan(0))  # the same for every epoch (see the class docstring)
        return self._len

    def plan(self, epoch: int) -> list[list[int]]:
        """The batches of ``epoch``, in training order."""
        if epoch not in self._plans:
            self._plans = {epoch: self._plan(epoch)}  # keep one: a long run must not hold every epoch's plan
        return self._plans[epoch]

    def _plan(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 100_003 + epoch)
        n = len(self.lengths)
        order = rng.sample(range(n), n)
        offset = rng.randrange(BUCKET)
        rank = {i: r for r, i in enumerate(order)}  # a random order inside each bucket
        key = [((length + offset) // BUCKET, rank[i]) for i, length in enumerate(self.lengths)]
        batches = []
        if self.max_tokens is None:
            chunk = self.per_batch * self.step_batches * MEGABATCH
            for start in range(0, n, chunk):
                part = sorted(order[start:start + chunk], key=key.__getitem__, reverse=True)
                batches += [part[i:i + self.per_batch] for i in range(0, len(part), self.per_batch)]
        else:
            part = sorted(order, key=key.__getitem__, reverse=True)
            for size in self._sizes():
                batches.append(part[:size])
                part = part[size:]
        steps = [batches[i:i + self.step_batches] for i in range(0, len(batches), self.step_batches)]
        # An incomplete last step stays last: in the middle it would shift every later batch to another rank and
        # optimizer step than its neighbours in length.
        full = (lambda step: len(step) == self.step_batches) if self.max_tokens else (
            lambda step: sum(map(len, step)) == self.per_batch * self.step_batches)
        tail = [] if not steps or full(steps[-1]) else [steps.pop()]
        rng.shuffle(steps)
        if steps:  # the step with the most tokens first: a batch too big for memory fails at once, not hours in
            biggest = max(range(len(steps)), key=lambda s: self.padded_tokens([i for b in steps[s] for i in b]))
            steps.insert(0, steps.pop(biggest))  # (counted per step: the same choice however it is split in batches)
        return [batch for step in steps + tail for batch in step]

    def _sizes(self) -> list[int]:
        """Batch sizes for the token budget, the same every epoch: greedy over the exact lengths, longest first,
        each batch's longest counted ``BUCKET - 1`` tokens longer (packed: every sample of it, as they are summed).

        Why this holds for every epoch: the samples at ranks 1..k of an epoch's bucket order are in the bucket of
        the sample at rank k or a longer one, so all k are at least (its length - ``BUCKET`` + 1) long, and so is
        the k-th longest sample of the dataset. The sample at rank k is thus at most ``BUCKET - 1`` tokens longer
        than the k-th longest, and a batch cut at these sizes never exceeds the budget.
        """
        if self._batch_sizes is None:
            sizes: list[int] = []
            longest = total = 0  # the current batch's longest sample and, packed, its summed tokens
            for length in sorted(self.lengths, reverse=True):
                if sizes:
                    grown = total + length + BUCKET - 1 if self.packed else (sizes[-1] + 1) * (longest + BUCKET - 1)
                if sizes and grown <= self.max_tokens:
                    sizes[-1] += 1
                    total += length + BUCKET - 1
                else:
                    sizes.append(1)
                    longest, total = length, length + BUCKET - 1
            self._batch_sizes = sizes
        return self._batch_sizes

    def padded_tokens(self, batch: list[int]) -> int:
        """Token slots of ``batch`` once padded to its longest sample (packed: the sum of its samples' tokens)."""
        if self.packed:
            return sum(self.lengths[i] for i in batch)
        return len(batch) * max(self.lengths[i] for i in batch)


class SamplerEpoch(TrainerCallback):
    """Sets the sampler's epoch at each epoch start, from the step count as the Trainer counts epochs.

    The Trainer calls ``set_epoch`` itself, except on the resumed epoch of a run continued from a checkpoint, where
    accelerate's batch-skipping wrapper hides the sampler; without this a run resumed in epoch 2 would replay
    epoch 0's order.
    """

    def __init__(self, sampler: LengthGroupedBatchSampler):
        self.sampler = sampler

    def on_epoch_begin(self, args, state, control, train_dataloader=None, **kwargs):
        if train_dataloader is not None:
            batches = len(train_dataloader)
            steps_per_epoch = batches // args.gradient_accumulation_steps + int(
                batches % args.gradient_accumulation_steps > 0)
            self.sampler.set_epoch(state.global_step // max(1, steps_per_epoch))


def grouped_dataloader(trainer, sampler: LengthGroupedBatchSampler) -> DataLoader:
    """The Trainer's training DataLoader with ``sampler`` as its batch sampler, prepared by accelerate (which
    shards it over data-parallel ranks and moves batches to the device)."""
    args = trainer.args
    workers = args.dataloader_num_workers
    loader = DataLoader(
        trainer.train_dataset, batch_sampler=sampler, collate_fn=trainer.data_collator, num_workers=workers,
        pin_memory=args.dataloader_pin_memory, persistent_workers=args.dataloader_persistent_workers and workers > 0,
        prefetch_factor=args.dataloader_prefetch_factor if workers > 0 else None,
        worker_init_fn=partial(seed_worker, num_workers=workers, rank=args.process_index),
    )
    return trainer.accelerator.prepare(loader)
