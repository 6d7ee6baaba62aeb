"""Preference pairs as DPO inputs: each side's ids equal the processor's own rendering of prompt + answer, the
labels (and the batch's completion_mask) cover exactly the last answer and its end token, and a batch holds the
chosen rows, then the rejected rows, with their images in that order and every image's tokens intact. The batch
agrees with TRL's own vision preference collator on the same pair."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import chat_with_images, write_jsonl
from vlmtune.data import IGNORE_INDEX, Renderer
from vlmtune.data.formats import read_samples
from vlmtune.data.preference import PreferenceCollator, last_answer_labels, pair_datasets
from vlmtune.models import get_family, load_processor

PAIRS = [
    {"prompt": [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]},
                {"role": "assistant", "content": "red"},
                {"role": "user", "content": [{"type": "text", "text": "And this one?"}, {"type": "image"}]}],
     "chosen": "It is blue.", "rejected": "green", "images": ["red.png", "blue.png"]},
    {"prompt": "<image>What colour is the shape?", "chosen": "green", "rejected": "a big red one",
     "images": ["green.png"]},
]


@pytest.fixture
def pairs(tiny_dir, tmp_path, images):
    spec = get_family("qwen2_vl")
    processor = load_processor(tiny_dir("qwen2_vl"), spec)
    samples = read_samples(write_jsonl(tmp_path / "pairs.jsonl", PAIRS))
    return processor, Renderer(processor, spec), samples


def _labelled(processor, ids: torch.Tensor, mask: torch.Tensor) -> str:
    return processor.tokenizer.decode(ids[mask.bool()])


def test_each_side_renders_as_the_processor_does_and_labels_only_the_last_answer(pairs):
    processor, renderer, samples = pairs
    chosen, rejected = pair_datasets(samples, renderer)
    for i, sample in enumerate(samples):
        for dataset, conversation, answer in ((chosen, sample.chosen_sample(), sample.chosen.text),
                                              (rejected, sample.rejected_sample(), sample.rejected.text)):
            features = dataset[i]
            theirs = processor.apply_chat_template(chat_with_images(conversation), tokenize=True,
                                                   return_dict=True, return_tensors="pt")
            assert torch.equal(features["input_ids"], theirs["input_ids"][0])
            assert torch.equal(features["pixel_values"], theirs["pixel_values"])
            # The earlier answer "red" of the first pair's prompt is context, not scored.
            assert _labelled(processor, features["input_ids"], features["labels"] != IGNORE_INDEX) == \
                answer + "<|im_end|>"


def test_a_batch_holds_chosen_rows_then_rejected_rows_with_their_images_in_order(pairs):
    processor, renderer, samples = pairs
    chosen, rejected = pair_datasets(samples, renderer)
    batch = PreferenceCollator(chosen, rejected, processor.tokenizer.pad_token_id)([{"index": 0}, {"index": 1}])
    assert set(batch) == {"input_ids", "attention_mask", "completion_mask", "mm_token_type_ids", "pixel_values",
                          "image_grid_thw"}
    rows = [chosen[0], chosen[1], rejected[0], rejected[1]]
    answers = ["It is blue.", "green", "green", "a big red one"]
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    for row, (features, answer) in enumerate(zip(rows, answers, strict=True)):
        n = len(features["input_ids"])
        assert torch.equal(batch["input_ids"][row, :n], features["input_ids"])
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (batch["input_ids"].shape[1] - n)
        assert _labelled(processor, batch["input_ids"][row], batch["completion_mask"][row]) == answer + "<|im_end|>"
        assert int((batch["input_ids"][row] == image_pad).sum()) == int(batch["mm_token_type_ids"][row].sum())
    grids = [f["image_grid_thw"] for f in rows]
    assert torch.equal(batch["image_grid_thw"], torch.cat(grids))
    assert torch.equal(batch["pixel_values"], torch.cat([f["pixel_values"] for f in rows]))
    # Every image's tokens are in its row: the 2x2 merge makes grid/4 tokens of each.
    per_row = [int(g.prod(dim=1).sum()) // 4 for g in grids]
    assert [int((batch["input_ids"][r] == image_pad).sum()) for r in range(4)] == per_row


def test_the_batch_agrees_with_trls_vision_preference_collator(pairs):
    """TRL renders the prompt and each answer itself; its completion mask also takes the newline after the end
    token, which nothing has to predict. Otherwise the sequences and masks are the same."""
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    from vlmtune.data.images import load_image

    processor, renderer, samples = pairs
    sample = samples[1]
    chosen, rejected = pair_datasets([sample], renderer)
    ours = PreferenceCollator(chosen, rejected, processor.tokenizer.pad_token_id)([{"index": 0}])
    chat = sample.chosen_sample().to_chat()
    example = {"prompt": chat[:-1], "chosen": chat[-1:],
               "rejected": sample.rejected_sample().to_chat()[-1:],
               "images": [load_image(p) for p in sample.images]}
    theirs = DataCollatorForVisionPreference(processor)([example])
    newline = processor.tokenizer.encode("\n", add_special_tokens=False)[0]
    end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    for row in range(2):
        n = int(theirs["attention_mask"][row].sum())
        ids = theirs["input_ids"][row, :n]
        assert torch.equal(ours["input_ids"][row, :n], ids)
        mask = ours["completion_mask"][row, :n].clone()
        mask[1:] |= (mask[:-1].bool() & (ids[:-1] == end) & (ids[1:] == newline)).long()
        assert torch.equal(theirs["completion_mask"][row, :n], mask)
        assert torch.equal(theirs["mm_token_type_ids"][row, :n], ours["mm_token_type_ids"][row, :n])
    assert torch.equal(theirs["pixel_values"], ours["pixel_values"])


def test_last_answer_labels_keeps_only_the_final_labelled_span():
    labels = torch.tensor([-100, 5, 6, -100, -100, 7, 8, -100])
    assert last_answer_labels(labels).tolist() == [-100, -100, -100, -100, -100, 7, 8, -100]


def test_supervised_samples_are_refused_for_dpo_naming_the_first(pairs, tmp_path):
    from vlmtune.core.errors import DataError

    _, renderer, _ = pairs
    [plain] = read_samples(write_jsonl(tmp_path / "sft.jsonl", [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "hi"}]}]))
    with pytest.raises(DataError, match=rf"^{tmp_path / 'sft.jsonl'}:1: not a preference pair"):
        pair_datasets([plain], renderer)
