"""Rendered samples cached on disk: identical tensors, reused by a new process, rendered afresh when the image
file, the processor settings or the file itself changes."""

import os

import torch
from PIL import Image

from tests.conftest import conversation, write_jsonl
from vlmtune.data import Collator, EncodedDataset, Renderer
from vlmtune.data.cache import CachedRenderer
from vlmtune.data.check import check_dataset
from vlmtune.models import load_processor, spec_for


def _renderer(model_dir, max_pixels=None):
    spec = spec_for(model_dir, check_split=False)
    return Renderer(load_processor(model_dir, spec, None, max_pixels), spec)


def test_cached_tensors_equal_a_fresh_render_and_are_reused(tmp_path, tiny_dir, images):
    model = tiny_dir("qwen2_5_vl")
    samples = check_dataset(write_jsonl(tmp_path / "d.jsonl", [conversation(), conversation("green.png")])).samples
    renderer, cache = _renderer(model), tmp_path / "cache"
    first = CachedRenderer(renderer, cache)
    fresh = [renderer.encode(s) for s in samples]
    for sample, want in zip(samples, fresh, strict=True):
        got = first.encode(sample)
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert (first.misses, first.hits) == (2, 0)

    again = CachedRenderer(_renderer(model), cache)  # a later run: a new processor object, the same settings
    dataset = EncodedDataset(samples, again)
    for i, want in enumerate(fresh):
        got = dataset[i]
        assert all(torch.equal(got[k], want[k]) for k in want)
    assert (again.misses, again.hits) == (0, 2)
    Collator(renderer.processor.tokenizer.pad_token_id)([dataset[0], dataset[1]])  # batches like fresh renders


def test_a_changed_image_other_pixel_limits_or_a_broken_file_render_again(tmp_path, tiny_dir, images):
    model = tiny_dir("qwen2_5_vl")
    sample = check_dataset(write_jsonl(tmp_path / "d.jsonl", [conversation()])).samples[0]
    cache = tmp_path / "cache"
    CachedRenderer(_renderer(model), cache).encode(sample)

    Image.new("RGB", (64, 48), (255, 0, 1)).save(images["red.png"])  # same size, new pixels, new mtime
    os.utime(images["red.png"], ns=(1, 2_000_000_000))
    changed = CachedRenderer(_renderer(model), cache)
    assert changed.encode(sample)["pixel_values"].shape and changed.misses == 1

    smaller = CachedRenderer(_renderer(model, max_pixels=28 * 28), cache)
    assert smaller.fingerprint != changed.fingerprint
    smaller.encode(sample)
    assert smaller.misses == 1

    path = changed.path(sample)
    path.write_bytes(b"not safetensors")
    reread = CachedRenderer(_renderer(model), cache)
    assert torch.equal(reread.encode(sample)["input_ids"], _renderer(model).encode(sample)["input_ids"])
    assert reread.misses == 1 and reread.encode(sample) and reread.hits == 1


def test_the_cache_stops_writing_at_its_byte_limit_and_still_renders(tmp_path, tiny_dir, images, caplog):
    model = tiny_dir("qwen2_5_vl")
    samples = check_dataset(write_jsonl(tmp_path / "d.jsonl", [conversation(), conversation("green.png")])).samples
    renderer = _renderer(model)
    sizes = [sum(v.numel() * v.element_size() for v in renderer.encode(s).values()) for s in samples]
    cache = CachedRenderer(renderer, tmp_path / "cache", max_bytes=sizes[0])
    for sample in samples:
        assert torch.equal(cache.encode(sample)["input_ids"], renderer.encode(sample)["input_ids"])
    assert [cache.path(s).is_file() for s in samples] == [True, False]
    assert "reached its limit of" in caplog.text
    assert cache.encode(samples[1]) and cache.misses == 3  # not written, so rendered again


def test_the_two_sides_of_a_preference_pair_are_cached_apart(tmp_path, tiny_dir, images):
    from dataclasses import replace

    from vlmtune.core.sample import Message, PreferenceSample, TextPart

    sample = check_dataset(write_jsonl(tmp_path / "d.jsonl", [conversation()])).samples[0]
    pair = PreferenceSample(sample.messages, sample.id, sample.meta,
                            rejected=Message("assistant", (TextPart("a wrong answer entirely"),)))
    chosen, rejected = pair.chosen_sample(), pair.rejected_sample()
    assert chosen.id == rejected.id  # one record: the memo must not confuse its sides
    renderer = _renderer(tiny_dir("qwen2_5_vl"))
    cached = CachedRenderer(renderer, tmp_path / "cache")
    for side in (chosen, rejected, replace(rejected)):
        want = renderer.encode(side)
        assert torch.equal(cached.encode(side)["input_ids"], want["input_ids"])
    assert (cached.misses, cached.hits) == (2, 1)
