"""Rendering ahead in a background thread: the training loader yields exactly the batches it yields without it, in
the same order, every sample rendered in the one rendering thread; only the batches this process fetches next are
rendered ahead (every ``stride``-th under data parallelism), none of those a resumed run skips."""

import threading

import pytest
import torch

from tests.conftest import mixed_length_data
from vlmtune.config import load_config
from vlmtune.data.collate import SAMPLE_IDS
from vlmtune.data.prefetch import Prefetcher
from vlmtune.models import load_model
from vlmtune.train.arguments import training_arguments
from vlmtune.train.prepare import prepare
from vlmtune.train.trainer import VlmTrainer
from vlmtune.train.trainer_inputs import batch_collator, batch_lengths, encoded_datasets, render_ahead

PLAN = [[0, 1], [2, 3], [4], [5, 6], [7, 8], [9]]


def _recording_prefetcher(stride: int = 1) -> tuple[Prefetcher, list[int]]:
    rendered: list[int] = []
    gate = threading.Lock()

    def encode(i: int) -> int:
        with gate:
            rendered.append(i)
        return i * 10

    return Prefetcher(encode, lambda: PLAN, stride=stride), rendered


def test_fetching_a_batch_queues_the_next_two_of_this_process():
    prefetcher, rendered = _recording_prefetcher()
    assert [prefetcher.get(i) for i in PLAN[0]] == [0, 10]
    prefetcher.drain()
    assert sorted(rendered) == [0, 1, 2, 3, 4]  # batch 0 on demand, batches 1 and 2 ahead
    assert [prefetcher.get(i) for i in (2, 3)] == [20, 30] and prefetcher.served_ahead == 2
    prefetcher.drain()
    assert sorted(rendered) == [0, 1, 2, 3, 4, 5, 6]  # batch 3 joins; nothing rendered twice


def test_with_two_ranks_only_this_ranks_batches_are_rendered_ahead():
    prefetcher, rendered = _recording_prefetcher(stride=2)
    prefetcher.get(2)  # rank 1 fetches batch 1: batches 3 and 5 are its next ones
    prefetcher.drain()
    assert sorted(rendered) == [2, 5, 6, 9]


def test_a_resumed_run_renders_nothing_for_the_batches_it_skips():
    prefetcher, rendered = _recording_prefetcher()
    prefetcher.get(7)  # resumed at batch 4: batches 0-3 are skipped, never fetched
    prefetcher.drain()
    assert sorted(rendered) == [7, 9]


def test_a_rendering_error_reaches_the_loader():
    def encode(i: int) -> int:
        raise ValueError(f"image of sample {i} is unreadable")

    prefetcher = Prefetcher(encode, lambda: PLAN)
    with pytest.raises(ValueError, match="sample 2 is unreadable"):
        prefetcher.get(2)


@pytest.fixture
def mixed(tmp_path, tiny_dir):
    """A tiny Qwen2-VL and 14 samples of different image sizes and answer lengths."""
    data = mixed_length_data(tmp_path, 14, seed=1, sizes=[(56, 56), (112, 84), (168, 224)],
                             words=["red", "blue", "circle", "left"], max_words=20)
    return tiny_dir("qwen2_vl"), data


def _loader_batches(cfg, prefetch: bool, run_dir) -> tuple[list[dict], VlmTrainer]:
    data = prepare(cfg)
    train_ds, _ = encoded_datasets(cfg, data)
    args = training_arguments(cfg, run_dir, has_val=False)
    trainer = VlmTrainer(model=load_model(cfg.model.path), args=args, train_dataset=train_ds,
                         data_collator=batch_collator(cfg, data, 1), train_lengths=batch_lengths(cfg, data.train),
                         render_ahead=prefetch)
    assert (train_ds.prefetcher is not None) == prefetch
    loader = trainer.get_train_dataloader()
    batches = [batch for _ in range(2) for batch in loader]  # two epochs, as the Trainer iterates them
    return batches, trainer


def test_the_prefetching_loader_yields_the_plain_loaders_batches_in_order(mixed, tmp_path, monkeypatch):
    model_dir, data = mixed
    cfg = load_config(None, [f"model.path={model_dir}", f"data.train={data}", "lora.r=4", "train.batch_size=3",
                             f"train.output_dir={tmp_path / 'run'}", "data.cache_dir=null", "train.seed=7"])
    threads = set()
    encode = type(prepare(cfg).renderer).encode

    def recording(self, sample):
        threads.add(threading.current_thread().name.split("_")[0])
        return encode(self, sample)

    monkeypatch.setattr(type(prepare(cfg).renderer), "encode", recording)
    plain, _ = _loader_batches(cfg, prefetch=False, run_dir=tmp_path / "plain")
    assert threads == {"MainThread"}
    threads.clear()
    ahead, trainer = _loader_batches(cfg, prefetch=True, run_dir=tmp_path / "ahead")
    assert threads == {"vlmtune-render"}  # every sample, ahead or on demand, in the one rendering thread

    assert len(ahead) == len(plain) == 10  # 14 samples in batches of 3, two epochs
    assert [b[SAMPLE_IDS] for b in ahead[:5]] != [b[SAMPLE_IDS] for b in ahead[5:]]  # epoch 1 has its own plan
    for got, want in zip(ahead, plain, strict=True):
        assert got[SAMPLE_IDS] == want[SAMPLE_IDS]
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in want if k != SAMPLE_IDS)
    first_batches = len(ahead[0][SAMPLE_IDS]) + len(ahead[5][SAMPLE_IDS])
    assert trainer.train_dataset.prefetcher.served_ahead == 2 * 14 - first_batches  # all but each epoch's first


def test_the_same_plan_again_is_rendered_ahead_again():
    prefetcher, rendered = _recording_prefetcher()
    for _ in range(2):
        for batch in PLAN:
            for i in batch:
                prefetcher.get(i)
    assert prefetcher.served_ahead == 2 * (10 - 2)  # all but batch 0, each time


def test_rendering_ahead_is_the_default_on_an_accelerator_only(tmp_path):
    cfg = load_config(None, ["model.path=m", "data.train=t.jsonl"])
    assert render_ahead(cfg, torch.device("cuda", 0)) and render_ahead(cfg, torch.device("mps"))
    assert not render_ahead(cfg, torch.device("cpu"))  # the steps already use every core
    forced = load_config(None, ["model.path=m", "data.train=t.jsonl", "data.prefetch=true"])
    assert render_ahead(forced, torch.device("cpu"))
    off = load_config(None, ["model.path=m", "data.train=t.jsonl", "data.prefetch=false"])
    assert not render_ahead(off, torch.device("cuda", 0))
