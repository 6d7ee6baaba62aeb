"""Length-grouped batching: every sample once per epoch, the token budget kept, the same plan on every rank and
after a restart, and not one per-sample loss changed by the grouping."""

import json
import random
from types import SimpleNamespace

import pytest
import torch
from accelerate.data_loader import BatchSamplerShard

from tests.conftest import mixed_length_data
from vlmtune.config import load_config
from vlmtune.data import Collator, EncodedDataset, Renderer
from vlmtune.data.check import check_dataset
from vlmtune.models import load_model, load_processor, spec_for
from vlmtune.train import train
from vlmtune.train.sampler import LengthGroupedBatchSampler, SamplerEpoch

_RNG = random.Random(7)
LENGTHS = [_RNG.randint(20, 400) for _ in range(203)]


def _flat(plan):
    return sorted(i for batch in plan for i in batch)


def _padding(plan, lengths):
    padded = sum(len(b) * max(lengths[i] for i in b) for b in plan)
    return 1 - sum(lengths) / padded


@pytest.mark.parametrize("step_batches", [1, 3])
def test_fixed_batches_cover_every_sample_once_per_epoch_in_a_new_order(step_batches):
    sampler = LengthGroupedBatchSampler(LENGTHS, batch_size=4, seed=1, step_batches=step_batches)
    plans = [sampler.plan(epoch) for epoch in range(3)]
    for plan in plans:
        assert _flat(plan) == list(range(len(LENGTHS)))
        assert all(1 <= len(b) <= 4 for b in plan) and len(plan) == len(sampler)
    assert plans[0] != plans[1] != plans[2]
    assert LengthGroupedBatchSampler(LENGTHS, batch_size=4, seed=1, step_batches=step_batches).plan(1) == plans[1]
    sampler.set_epoch(2)
    assert list(sampler) == plans[2]
    random_plan = [list(range(i, min(i + 4, len(LENGTHS)))) for i in range(0, len(LENGTHS), 4)]
    assert _padding(plans[0], LENGTHS) < 0.05 < _padding(random_plan, LENGTHS)


def test_token_budget_is_kept_and_the_batch_count_is_the_same_every_epoch():
    lengths = LENGTHS + [900]  # longer than the budget: trains alone
    sampler = LengthGroupedBatchSampler(lengths, max_tokens=1200, seed=0)
    counts = set()
    for epoch in range(12):
        plan = sampler.plan(epoch)
        assert _flat(plan) == list(range(len(lengths)))
        assert all(len(b) * max(lengths[i] for i in b) <= 1200 or len(b) == 1 for b in plan)
        assert [len(lengths) - 1] in plan
        counts.add(len(plan))
        assert max(len(b) for b in plan) > 3 * min(len(b) for b in plan)  # short samples share bigger batches
    assert counts == {len(sampler)}
    assert _padding(sampler.plan(0), lengths) < 0.05
    first = sampler.plan(0)[0]
    assert len(first) * max(lengths[i] for i in first) == max(
        len(b) * max(lengths[i] for i in b) for b in sampler.plan(0))  # the biggest batch first


def test_a_packed_token_budget_sums_the_samples_and_holds_every_epoch():
    lengths = LENGTHS + [1300]  # longer than the budget: a pack of its own
    packed = LengthGroupedBatchSampler(lengths, max_tokens=1200, seed=0, packed=True)
    padded = LengthGroupedBatchSampler(lengths, max_tokens=1200, seed=0)
    for epoch in range(12):
        plan = packed.plan(epoch)
        assert _flat(plan) == list(range(len(lengths))) and len(plan) == len(packed)
        assert all(sum(lengths[i] for i in b) <= 1200 or len(b) == 1 for b in plan)
        assert [len(lengths) - 1] in plan
    # No padding to count: a pack holds more samples than a padded batch, and fills the budget well.
    assert len(packed) < len(padded)
    assert sum(lengths[:-1]) / (1200 * (len(packed) - 1)) > 0.8
    first = packed.plan(0)[0]
    assert sum(lengths[i] for i in first) == max(sum(lengths[i] for i in b) for b in packed.plan(0))


@pytest.mark.parametrize("mode", [{"batch_size": 8}, {"max_tokens": 8 * 42}])
def test_kinds_of_samples_a_token_apart_share_batches(mode):
    # Two prompt templates one token apart (as in the demo task): exact length sorting would give every batch a
    # single kind; 8-token length buckets mix them, and the batches differ from epoch to epoch.
    lengths = [41, 42] * 100
    sampler = LengthGroupedBatchSampler(lengths, seed=0, **mode)
    plan = sampler.plan(0)
    assert sum(len({lengths[i] for i in b}) == 2 for b in plan) > len(plan) / 2
    assert sorted(map(sorted, plan)) != sorted(map(sorted, sampler.plan(1)))
    assert all(len(b) * max(lengths[i] for i in b) <= 8 * 42 for b in plan + sampler.plan(1))


def test_ranks_share_each_step_like_one_process_with_the_doubled_batch():
    # accelerate deals batch i to rank i % 2; a step of two ranks then trains the samples one process would train
    # in one batch of 8, and the two ranks' batches are neighbours in length.
    two = LengthGroupedBatchSampler(LENGTHS, batch_size=4, seed=3, step_batches=2)
    one = LengthGroupedBatchSampler(LENGTHS, batch_size=8, seed=3, step_batches=1)
    ranks = [list(BatchSamplerShard(two, num_processes=2, process_index=r)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(one)
    for step, (a, b) in enumerate(zip(*ranks, strict=True)):
        assert sorted(a + b) == sorted(one.plan(0)[step]) or step == len(one) - 1  # the odd tail wraps around
    assert sorted({i for rank in ranks for batch in rank for i in batch}) == list(range(len(LENGTHS)))
    budget = LengthGroupedBatchSampler(LENGTHS, max_tokens=1000, seed=3, step_batches=2)
    shards = [list(BatchSamplerShard(budget, num_processes=2, process_index=r)) for r in range(2)]
    assert sorted({i for rank in shards for batch in rank for i in batch}) == list(range(len(LENGTHS)))


def test_a_resumed_run_sets_the_epoch_the_trainer_is_in():
    # On the epoch a run resumes in, accelerate's batch-skipping wrapper hides the sampler from the Trainer's own
    # set_epoch call; the callback sets it from the step count (20 batches, accumulation 3: 7 steps per epoch).
    sampler = LengthGroupedBatchSampler(LENGTHS, batch_size=4)
    args, state = SimpleNamespace(gradient_accumulation_steps=3), SimpleNamespace(global_step=15)
    SamplerEpoch(sampler).on_epoch_begin(args, state, None, train_dataloader=[None] * 20)
    assert sampler.epoch == 2


def _per_sample_losses(model, batch) -> list[float]:
    logits = model(**{k: v for k, v in batch.items() if k != "sample_ids" and k != "labels"}).logits.float()
    labels = batch["labels"][:, 1:]
    token = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels, reduction="none",
                                              ignore_index=-100)
    mask = labels != -100
    return ((token * mask).sum(1) / mask.sum(1)).tolist()


@pytest.fixture
def mixed(tmp_path, tiny_dir):
    """A tiny Qwen2-VL and 10 samples of very different lengths (image sizes and answer lengths)."""
    data = mixed_length_data(tmp_path, 10, seed=0, sizes=[(56, 56), (112, 84), (168, 224), (224, 224)],
                             words=["red", "blue", "circle", "square", "left"], max_words=30)
    return tiny_dir("qwen2_vl"), data


@pytest.mark.slow  # trains for a few steps
def test_grouped_padded_batches_change_no_per_sample_loss(mixed):
    model_dir, data = mixed
    spec = spec_for(model_dir, check_split=False)
    renderer = Renderer(load_processor(model_dir, spec), spec)
    report = check_dataset(data, renderer=renderer)
    lengths = [t + v for t, v in report.lengths]
    dataset = EncodedDataset(report.samples, renderer)
    assert [len(dataset[i]["input_ids"]) for i in range(len(dataset))] == lengths  # counted = rendered
    model = load_model(model_dir).eval()
    collate = Collator(renderer.processor.tokenizer.pad_token_id)
    plan = LengthGroupedBatchSampler(lengths, max_tokens=3 * max(lengths), seed=0).plan(0)
    assert max(len(b) for b in plan) > 1 and len({len(dataset[i]["input_ids"]) for i in plan[0]}) > 1  # padded
    with torch.no_grad():
        alone = {i: _per_sample_losses(model, collate([dataset[i]]))[0] for i in range(len(dataset))}
        grouped = {i: loss for b in plan for i, loss in zip(b, _per_sample_losses(model, collate(
            [dataset[i] for i in b])), strict=True)}
    assert sorted(grouped) == list(range(len(dataset)))
    for i, loss in alone.items():
        assert grouped[i] == pytest.approx(loss, rel=1e-5, abs=1e-6), i


@pytest.mark.slow  # trains for a few steps
def test_the_trainer_trains_the_plan_with_a_token_budget(mixed, tmp_path):
    model_dir, data = mixed
    cfg = load_config(None, [f"model.path={model_dir}", f"data.train={data}", "lora.r=4",
                             f"train.output_dir={tmp_path / 'run'}", "train.max_tokens_per_batch=600",
                             "train.epochs=2", "train.trace_samples=true", "train.progress=false",
                             "train.report_to=none", "train.logging_steps=1", "train.seed=5"])
    train(cfg)
    steps = [json.loads(line) for line in (tmp_path / "run" / "samples.rank0.jsonl").read_text().splitlines()]
    lines = [[int(i.rsplit(":", 1)[1]) - 1 for i in s["ids"]] for s in steps]
    spec = spec_for(model_dir, check_split=False)
    report = check_dataset(data, renderer=Renderer(load_processor(model_dir, spec), spec))
    sampler = LengthGroupedBatchSampler([t + v for t, v in report.lengths], max_tokens=600, seed=5)
    assert lines == sampler.plan(0) + sampler.plan(1)
