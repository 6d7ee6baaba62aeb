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


def _text_feature(n):
    return {"input_ids": torch.arange(1, n + 1), "attention_mask": torch.ones(n, dtype=torch.long),
            "mm_token_type_ids": torch.zeros(n, dtype=torch.long), "labels": torch.arange(1, n + 1)}


def test_batches_mixing_samples_with_and_without_images():
    text, image = _text_feature(2), _feature(3, 4)
    for features in ([text, image], [image, text]):
        batch = Collator(pad_token_id=0)(features)
        assert torch.equal(batch["pixel_values"], image["pixel_values"])
        assert batch["image_grid_thw"].tolist() == [[1, 2, 2]]
        assert batch["input_ids"].shape == (2, 3)
    # A sequence key some samples lack is what it would be for them: types 0, everything attended, no labels.
    bare = {"input_ids": torch.tensor([5, 6])}
    batch = Collator(pad_token_id=0)([image, bare])
    assert batch["mm_token_type_ids"][1].tolist() == [0, 0, 0] and batch["attention_mask"][1].tolist() == [1, 1, 0]
    assert batch["labels"][1].tolist() == [IGNORE_INDEX] * 3


_PLACEHOLDER = {"input_ids": torch.tensor([7, 8, 7]), "attention_mask": torch.zeros(3, dtype=torch.long),
                "labels": torch.full((3,), IGNORE_INDEX), "mm_token_type_ids": torch.tensor([0, 1, 0]),
                "pixel_values": torch.randn(4, 6), "image_grid_thw": torch.tensor([[1, 2, 2]])}


def test_placeholder_image_joins_the_shortest_sample_of_a_batch_without_images():
    collate = Collator(pad_token_id=0, placeholder_image=_PLACEHOLDER)
    batch = collate([_text_feature(6), _text_feature(2)])
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6], [1, 2, 7, 8, 7, 0]]
    assert batch["attention_mask"].tolist() == [[1] * 6, [1, 1, 0, 0, 0, 0]]
    assert batch["labels"][1].tolist() == [1, 2] + [IGNORE_INDEX] * 4
    assert batch["mm_token_type_ids"][1].tolist() == [0, 0, 0, 1, 0, 0]
    assert torch.equal(batch["pixel_values"], _PLACEHOLDER["pixel_values"])
    assert torch.equal(batch["image_grid_thw"], _PLACEHOLDER["image_grid_thw"])
    # Left padding: before the sample's tokens, which stay last in their row.
    left = Collator(pad_token_id=0, padding_side="left", placeholder_image=_PLACEHOLDER)([_text_feature(2)])
    assert left["input_ids"].tolist() == [[7, 8, 7, 1, 2]] and left["attention_mask"].tolist() == [[0, 0, 0, 1, 1]]


def test_placeholder_image_leaves_batches_with_an_image_alone():
    features = [_text_feature(2), _feature(3, 4)]
    batch = Collator(pad_token_id=0, placeholder_image=_PLACEHOLDER)(features)
    expected = Collator(pad_token_id=0)(features)
    assert batch.keys() == expected.keys() and all(torch.equal(batch[k], expected[k]) for k in batch)
