"""A batch without an image gets a placeholder image (``Collator(placeholder_image=...)``), so the vision tower runs
on every batch (ZeRO-3 / FSDP gather its weights inside its forward; DDP wants every trainable parameter used),
while the loss and the gradients stay exactly those of the batch without it. Batches with an image are untouched."""

import pytest
import torch

from tests.conftest import FAMILIES, write_jsonl
from vlmtune.data import IGNORE_INDEX, Collator, EncodedDataset, Renderer
from vlmtune.data.check import check_dataset
from vlmtune.data.collate import SAMPLE_IDS, placeholder_image_features
from vlmtune.data.render import SEQUENCE_KEYS
from vlmtune.models import load_model, load_processor, spec_for
from vlmtune.train.trainer import causal_lm_loss

pytestmark = pytest.mark.slow  # a forward and backward pass of every family, twice


def _record(text: str, answer: str, image: str | None = None) -> dict:
    content = [{"type": "image", "image": image}] if image else []
    return {"messages": [{"role": "user", "content": [*content, {"type": "text", "text": text}]},
                         {"role": "assistant", "content": answer}]}


@pytest.fixture
def family_data(request, tiny_dir, tmp_path, images):
    """(spec, processor, text-only features [short, long], features of a sample with an image)."""
    model_dir = tiny_dir(request.param)
    spec = spec_for(model_dir, check_split=False)
    processor = load_processor(model_dir, spec)
    records = [_record("What colour is the sky?", "blue"),
               _record("Name three shapes, please.", "circle square triangle and one star"),
               _record("What colour is this?", "red", image="red.png")]
    samples = check_dataset(write_jsonl(tmp_path / "d.jsonl", records)).samples
    renderer = Renderer(processor, spec)
    dataset = EncodedDataset(samples, renderer)
    return model_dir, spec, processor, renderer, [dataset[0], dataset[1]], dataset[2]


def _loss_and_grads(model, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    inputs = {k: v for k, v in batch.items() if k != SAMPLE_IDS}
    labels = inputs.pop("labels")
    loss = causal_lm_loss(model(**inputs), labels, num_items_in_batch=int((labels[:, 1:] != IGNORE_INDEX).sum()))
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def _padded_to(batch: dict, width: int, pad: int) -> dict:
    values = {"input_ids": pad, "labels": IGNORE_INDEX}
    return {k: v if k == SAMPLE_IDS or k not in SEQUENCE_KEYS
            else torch.nn.functional.pad(v, (0, width - v.shape[1]), value=values.get(k, 0))
            for k, v in batch.items()}


@pytest.mark.parametrize("family_data", FAMILIES, indirect=True)
def test_placeholder_runs_the_vision_tower_and_changes_no_loss_or_gradient(family_data):
    model_dir, spec, processor, renderer, text_only, with_image = family_data
    placeholder = placeholder_image_features(renderer)
    pad = processor.tokenizer.pad_token_id
    plain, padded = Collator(pad), Collator(pad, placeholder_image=placeholder)

    batch, ph_batch = plain(text_only), padded(text_only)
    # The placeholder follows the shorter sample's tokens, masked out and unlabelled; the rest is as it was.
    n, short = len(placeholder["input_ids"]), len(text_only[0]["input_ids"])
    assert ph_batch["input_ids"].shape[1] == max(batch["input_ids"].shape[1], short + n)
    assert torch.equal(ph_batch["input_ids"][0, short:short + n], placeholder["input_ids"])
    assert not ph_batch["attention_mask"][0, short:].any()
    assert (ph_batch["labels"][0, short:] == IGNORE_INDEX).all()
    width = batch["input_ids"].shape[1]
    for key in batch:
        if key != SAMPLE_IDS:
            assert torch.equal(ph_batch[key][1, :width], batch[key][1]), key
    assert ph_batch[SAMPLE_IDS] == batch[SAMPLE_IDS]
    image_keys = [k for k in placeholder if k not in batch]
    assert "pixel_values" in image_keys and all(torch.equal(ph_batch[k], placeholder[k]) for k in image_keys)

    model = load_model(model_dir).eval()  # eval: no dropout, so two forwards are comparable
    vision = model.get_submodule(spec.components["vision"][0])
    calls = []
    vision.register_forward_hook(lambda *_: calls.append(1))

    loss, grads = _loss_and_grads(model, batch)
    assert not calls
    ph_loss, ph_grads = _loss_and_grads(model, ph_batch)
    assert calls
    # Exactly the loss and gradients of the batch padded to the same length: no token sees the placeholder's.
    same_loss, same_grads = _loss_and_grads(model, _padded_to(batch, ph_batch["input_ids"].shape[1], pad))
    assert torch.equal(ph_loss, same_loss)
    assert same_grads.keys() == grads.keys() and all(torch.equal(ph_grads[k], g) for k, g in same_grads.items())
    # Padding alone changes float sums in the last bits.
    torch.testing.assert_close(ph_loss, loss, rtol=1e-6, atol=1e-7)
    for name, grad in grads.items():
        torch.testing.assert_close(ph_grads[name], grad, rtol=1e-5, atol=1e-5, msg=name)
    extra = ph_grads.keys() - grads.keys()
    assert extra and all(not ph_grads[name].any() for name in extra)  # the vision tower's: zeros
    # The placeholder uses every parameter a batch with a real image uses: DDP finds none unused.
    _, image_grads = _loss_and_grads(model, padded([text_only[0], with_image]))
    assert ph_grads.keys() == image_grads.keys()


@pytest.mark.parametrize("family_data", FAMILIES, indirect=True)
def test_batches_with_an_image_are_left_as_they_are(family_data):
    *_, processor, renderer, text_only, with_image = family_data
    pad = processor.tokenizer.pad_token_id
    plain, padded = Collator(pad), Collator(pad, placeholder_image=placeholder_image_features(renderer))
    for features in ([with_image], [text_only[0], with_image], [with_image, *text_only]):
        batch, ph_batch = plain(features), padded(features)
        assert batch.keys() == ph_batch.keys()
        for key in batch:
            if key != SAMPLE_IDS:
                assert torch.equal(ph_batch[key], batch[key]), key


@pytest.mark.parametrize("family_data", ["idefics3", "internvl"], indirect=True)
def test_tiling_families_get_one_tile(family_data):
    *_, renderer, _, with_image = family_data
    placeholder = placeholder_image_features(renderer)
    # A tiny image would be upscaled and cut into tiles; the placeholder is one tile, with fewer tokens.
    assert len(placeholder["input_ids"]) < len(with_image["input_ids"])
    tiles = placeholder["pixel_values"].shape[-4]
    assert tiles == 1
