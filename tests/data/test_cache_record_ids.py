"""The disk cache keys rendered samples by record: the samples of a JSON array written on one line are each their
own record, so each gets its own tensors, not the first one's."""

import json

import torch

from tests.conftest import conversation
from vlmtune.data import Renderer
from vlmtune.data.cache import CachedRenderer
from vlmtune.data.check import check_dataset
from vlmtune.models import load_processor, spec_for


def test_each_record_of_a_one_line_array_gets_its_own_cached_tensors(tmp_path, tiny_dir, images):
    data = tmp_path / "train.json"
    data.write_text(json.dumps([conversation(), conversation("green.png"), conversation("blue.png", "red.png")]))
    samples = check_dataset(data).samples
    model = tiny_dir("qwen2_5_vl")
    spec = spec_for(model, check_split=False)
    renderer = Renderer(load_processor(model, spec), spec)
    cached = CachedRenderer(renderer, tmp_path / "cache")
    for sample in samples:
        want, got = renderer.encode(sample), cached.encode(sample)
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), sample.id
    assert (cached.misses, cached.hits) == (3, 0)
