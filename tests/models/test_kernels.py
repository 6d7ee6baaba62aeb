"""Kernel choices change no result: patch-embedding convolutions run as one matrix multiply give the model's
logits, and convolutions over whole images (a ViT's patchify) keep their own path."""

import pytest
import torch
from transformers import AutoModelForImageTextToText

from tests.conftest import conversation, write_jsonl
from vlmtune.data import Collator, EncodedDataset, Renderer
from vlmtune.data.check import check_dataset
from vlmtune.models import load_processor, spec_for
from vlmtune.models.kernels import fast_kernels, patch_convs_as_matmuls


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl", "llava"])
def test_patch_convolutions_as_matmuls_give_the_same_logits(family, tiny_dir, tmp_path, images):
    model_dir = tiny_dir(family)
    spec = spec_for(model_dir, check_split=False)
    processor = load_processor(model_dir, spec)
    samples = check_dataset(write_jsonl(tmp_path / "d.jsonl", [conversation()])).samples
    batch = Collator(processor.tokenizer.pad_token_id)([EncodedDataset(samples, Renderer(processor, spec))[0]])
    batch.pop("sample_ids")
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    with torch.no_grad():
        before = model(**batch).logits
        patched = patch_convs_as_matmuls(model)
        after = model(**batch).logits
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    # Qwen-VL towers get pre-cut patches (one Conv3d changed); LLaVA's CLIP patchifies a whole image with a
    # Conv2d of stride = kernel: patched too, but its input is larger than one kernel, so it runs the convolution.
    assert patched == 1


def test_fast_kernels_on_cpu_keep_sdpa_and_log_why(tiny_dir, caplog):
    model = AutoModelForImageTextToText.from_pretrained(tiny_dir("qwen2_5_vl"))
    with caplog.at_level("INFO", logger="vlmtune"):
        fast_kernels(model, torch.float32)
    assert model.config._attn_implementation == "sdpa"
    assert "attention: sdpa (no CUDA)" in caplog.text and "patch embedding: 1 convolution" in caplog.text
