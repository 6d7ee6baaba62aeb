"""Tiny models are ordinary checkpoints: plain transformers reloads them, same class, same numbers."""

import json

import pytest
import torch
import transformers
from PIL import Image
from transformers import AutoConfig, AutoModelForImageTextToText

from vlmtune.models import get_family, load_model, load_processor

FAMILIES = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_model_round_trip(family, tiny_dir):
    spec = get_family(family)
    folder = tiny_dir(family)
    assert AutoConfig.from_pretrained(folder).model_type == family

    model = AutoModelForImageTextToText.from_pretrained(folder)
    assert type(model).__name__ == spec.model_class
    assert sum(p.numel() for p in model.parameters()) < 1_000_000

    processor = load_processor(folder, spec)
    saved = json.loads((folder / "processor_config.json").read_text())
    assert saved["processor_class"] == spec.processor_class  # the real class, loadable without vlmtune
    assert processor.chat_template == spec.read_chat_template()
    tokenizer = processor.tokenizer
    assert type(tokenizer).__name__ == spec.tokenizer_class
    for token in spec.special_tokens:  # each special token is one id and survives a decode
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1 and tokenizer.decode(ids) == token
    text = "What colour is the circle? It is red, at (10,20),(30,40)."
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text

    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe it."}]}]
    prompt = processor.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[prompt], images=[Image.new("RGB", (64, 64), (0, 0, 255))], return_tensors="pt")
    n_image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert n_image_tokens == int(inputs["image_grid_thw"].prod()) // 4  # 2x2 spatial merge
    reloaded = load_model(folder)
    with torch.no_grad():
        # load_model runs the patch embedding as one matrix multiply (models/kernels.py): the same sums in another
        # order, which moves a logit by about 1e-5 with torch 2.14 (tests/models/test_kernels.py checks that layer).
        torch.testing.assert_close(model(**inputs).logits, reloaded(**inputs).logits, rtol=1e-5, atol=5e-5)


def test_image_token_ids_are_resolved_by_name(tiny_dir):
    folder = tiny_dir("qwen2_5_vl")
    processor = load_processor(folder, get_family("qwen2_5_vl"))
    config = AutoConfig.from_pretrained(folder)
    assert config.image_token_id == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert config.vision_start_token_id == processor.tokenizer.convert_tokens_to_ids("<|vision_start|>")


def test_pixel_limits_reach_the_image_processor(tiny_dir):
    spec = get_family("qwen2_5_vl")
    small = load_processor(tiny_dir("qwen2_5_vl"), spec, min_pixels=28 * 28, max_pixels=4 * 28 * 28)
    big = load_processor(tiny_dir("qwen2_5_vl"), spec, min_pixels=28 * 28, max_pixels=64 * 28 * 28)
    image = Image.new("RGB", (224, 224))
    n_small = small.image_processor(images=[image], return_tensors="pt")["image_grid_thw"].prod()
    n_big = big.image_processor(images=[image], return_tensors="pt")["image_grid_thw"].prod()
    assert n_small == 16 and n_big == 256  # 224 px -> 4 or 16 patches a side within the caps


def test_processor_class_matches_transformers():
    for family in FAMILIES:
        assert hasattr(transformers, get_family(family).processor_class)
