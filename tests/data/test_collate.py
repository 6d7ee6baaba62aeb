from types import SimpleNamespace

import torch

from vlmtune.data import IGNORE_INDEX, Collator


def _feature(n, n_patches):
    return {"input_ids": torch.arange(1, n + 1), "attention_mask": torch.ones(n, dtype=torch.long),
            "mm_token_type_ids": torch.ones(n, dtype=torch.long), "labels": torch.arange(1, n + 1),
            "pixel_values": torch.randn(n_patches, 6), "image_grid_thw": torch.tensor([[1, 2, n_patches // 2]])}


def test_right_padding_for_training():
    a, b = _feature(3, 4), _feature(5, 8)
    batch = Collator(pad_token_id=0)([a, b])
    assert batch["input_ids"].tolist() == [[1, 2, 3, 0, 0], [1, 2, 3, 4, 5]]
    assert batch["labels"][0].tolist() == [1, 2, 3, IGNORE_INDEX, IGNORE_INDEX]
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 0, 0]
    assert batch["mm_token_type_ids"][0].tolist() == [1, 1, 1, 0, 0]
    assert torch.equal(batch["pixel_values"], torch.cat([a["pixel_values"], b["pixel_values"]]))
    assert batch["image_grid_thw"].tolist() == [[1, 2, 2], [1, 2, 4]]


def test_left_padding_for_generation():
    batch = Collator(pad_token_id=9, padding_side="left")([_feature(2, 2), _feature(4, 2)])
    assert batch["input_ids"].tolist() == [[9, 9, 1, 2], [1, 2, 3, 4]]
    assert batch["attention_mask"][0].tolist() == [0, 0, 1, 1]


class _CountingRenderer:
    def __init__(self):
        self.calls = 0

    def encode(self, sample):
        self.calls += 1
        return {"input_ids": torch.tensor([sample.value])}


def test_dataset_renders_again_unless_cached():
    from vlmtune.data import EncodedDataset

    samples = [SimpleNamespace(id="d.jsonl:1", value=1), SimpleNamespace(id="d.jsonl:2", value=2)]
    plain, cached = _CountingRenderer(), _CountingRenderer()
    for renderer, cache in ((plain, False), (cached, True)):
        dataset = EncodedDataset(samples, renderer, cache=cache)
        assert [dataset[i]["input_ids"].item() for i in (0, 1, 0, 1)] == [1, 2, 1, 2]
    assert plain.calls == 4 and cached.calls == 2
    # Each sample's id rides along and comes out of the collator as the batch's list of ids.
    batch = Collator(pad_token_id=0)([dataset[1], dataset[0]])
    assert batch["sample_ids"] == ["d.jsonl:2", "d.jsonl:1"] and batch["input_ids"].tolist() == [[2], [1]]


def test_tiled_pixels_with_different_tile_counts_are_zero_padded():
    a = {"input_ids": torch.arange(1, 4), "pixel_values": torch.ones(1, 5, 3, 4, 4),
         "pixel_attention_mask": torch.ones(1, 5, 4, 4, dtype=torch.bool)}
    b = {"input_ids": torch.arange(1, 3), "pixel_values": torch.ones(1, 3, 3, 4, 4),
         "pixel_attention_mask": torch.ones(1, 3, 4, 4, dtype=torch.bool)}
    batch = Collator(pad_token_id=0)([a, b])
    assert batch["pixel_values"].shape == (2, 5, 3, 4, 4)
    assert batch["pixel_values"][1, 3:].abs().sum() == 0 and batch["pixel_values"][1, :3].min() == 1
    assert batch["pixel_attention_mask"][1].sum() == 3 * 16 and batch["pixel_attention_mask"].dtype == torch.bool
