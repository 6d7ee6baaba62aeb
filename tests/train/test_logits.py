"""Logits only at answer positions: for every family the training loss and its gradients equal those of the full
logits, on a padded batch of different samples."""

import pytest
import torch

from tests.conftest import FAMILIES, conversation, write_jsonl
from vlmtune.data import Collator, EncodedDataset, Renderer
from vlmtune.data.check import check_dataset
from vlmtune.models import load_model, load_processor, spec_for
from vlmtune.train.logits import accepts_logits_to_keep, answer_logits_only
from vlmtune.train.trainer import causal_lm_loss

pytestmark = pytest.mark.slow  # trains a step of every family twice


@pytest.mark.parametrize("family", FAMILIES)
def test_answer_logits_only_change_no_loss_or_gradient(family, tiny_dir, tmp_path, images):
    model_dir = tiny_dir(family)
    short = {"messages": [{"role": "user", "content": [{"type": "image", "image": "green.png"},
                                                       {"type": "text", "text": "Shape?"}]},
                          {"role": "assistant", "content": "circle"}]}
    samples = check_dataset(write_jsonl(tmp_path / "d.jsonl", [conversation(), short])).samples
    spec = spec_for(model_dir, check_split=False)
    processor = load_processor(model_dir, spec)
    dataset = EncodedDataset(samples, Renderer(processor, spec))
    batch = Collator(processor.tokenizer.pad_token_id)([dataset[0], dataset[1]])
    batch.pop("sample_ids")
    model = load_model(model_dir)
    assert accepts_logits_to_keep(model)
    n = int((batch["labels"][:, 1:] != -100).sum())

    def loss_and_grads(inputs):
        model.zero_grad()
        labels = inputs.pop("labels")
        loss = causal_lm_loss(model(**inputs), labels, num_items_in_batch=n)
        loss.backward()
        return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    full_loss, full_grads = loss_and_grads(dict(batch))
    kept = answer_logits_only(dict(batch))
    assert kept["logits_to_keep"].numel() < batch["input_ids"].shape[1] // 2
    kept_loss, kept_grads = loss_and_grads(kept)
    torch.testing.assert_close(kept_loss, full_loss, rtol=1e-5, atol=1e-6)
    assert kept_grads.keys() == full_grads.keys()
    for name, grad in full_grads.items():
        torch.testing.assert_close(kept_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
