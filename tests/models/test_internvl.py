"""InternVL (-hf checkpoints): tiles + thumbnail, their image tokens, the chat template, the parameter table."""

import json

import pytest
import torch
from PIL import Image
from transformers import AutoConfig

from tests.conftest import dry_run_table
from vlmtune.models import get_family, load_model, load_processor

FAMILY = "internvl"


@pytest.fixture(scope="module")
def folder(tiny_dir):
    return tiny_dir(FAMILY)


@pytest.fixture(scope="module")
def processor(folder):
    return load_processor(folder, get_family(FAMILY))


def test_dry_run_parameter_table_for_lora_r8(folder, tmp_path, capsys):
    rows = dry_run_table(folder, tmp_path, capsys, "lora.r=8")

    cfg = AutoConfig.from_pretrained(folder)
    text, vision = cfg.text_config, cfg.vision_config
    h, ffn, vocab = text.hidden_size, text.intermediate_size, text.vocab_size
    kv = text.num_key_value_heads * h // text.num_attention_heads
    vh, vffn, tile, patch = vision.hidden_size, vision.intermediate_size, vision.image_size[0], vision.patch_size[0]
    # LoRA r on every language linear (default "all-linear"): A is r x in, B is out x r.
    r = 8
    shapes = [(h, h), (h, kv), (h, kv), (h, h), (h, ffn), (h, ffn), (ffn, h)]  # q k v o gate up down
    lora = text.num_hidden_layers * sum(r * (i + o) for i, o in shapes)
    # Qwen2 layer: q/k/v carry a bias, o and the MLP do not; two RMSNorms; final norm; embeddings.
    layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * ffn + 2 * h
    language = vocab * h + text.num_hidden_layers * layer + h
    # InternViT layer: q/k/v without bias, output projection, fc1/fc2, two LayerNorms, two layer-scale vectors.
    vlayer = 3 * vh * vh + (vh * vh + vh) + (vh * vffn + vffn) + (vffn * vh + vh) + 4 * vh + 2 * vh
    n_patches = (tile // patch) ** 2
    vision_total = vh + (n_patches + 1) * vh + (3 * patch * patch * vh + vh) + vision.num_hidden_layers * vlayer
    shuffled = vh * int(1 / cfg.downsample_ratio) ** 2  # pixel shuffle folds 2 x 2 patches into one vector
    projector = 2 * shuffled + (shuffled * h + h) + (h * h + h)

    assert rows["language"] == [lora, language + lora]
    assert rows["vision"] == [0, vision_total]
    assert rows["projector"] == [0, projector]
    assert rows["lm_head"] == [0, vocab * h]
    assert rows["all"] == [lora, language + lora + vision_total + projector + vocab * h]
    assert lora == 2 * 8 * (128 + 96 + 96 + 128 + 192 + 192 + 192)  # by hand: hidden 64, kv 32, ffn 128


@pytest.mark.parametrize(("size", "tiles"), [
    ((56, 56), 1),  # one tile, no thumbnail
    ((112, 56), 3),  # 2 x 1 tiles + thumbnail
    ((56, 224), 5),  # 1 x 4 tiles + thumbnail
    ((64, 48), 1),  # 4:3 is closest to 1:1 among the grids of at most 4 tiles
])
def test_tiling_gives_image_seq_length_tokens_per_tile_between_img_tokens(processor, folder, size, tiles):
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is this?"}]}]
    prompt = processor.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[prompt], images=[Image.new("RGB", size, (255, 0, 0))], return_tensors="pt")
    ids, tok = inputs["input_ids"][0].tolist(), processor.tokenizer
    per_tile = processor.image_seq_length
    assert per_tile == 4  # (56 / 14)^2 patches, pixel-shuffled by 0.5 per side
    assert inputs["pixel_values"].shape == (tiles, 3, 56, 56)
    start = ids.index(tok.convert_tokens_to_ids("<img>"))
    context = tok.convert_tokens_to_ids("<IMG_CONTEXT>")
    assert ids[start + 1:start + 1 + tiles * per_tile] == [context] * (tiles * per_tile)
    assert ids[start + 1 + tiles * per_tile] == tok.convert_tokens_to_ids("</img>")
    assert ids.count(context) == tiles * per_tile
    counts = processor._get_num_multimodal_tokens(image_sizes=[size[::-1]])
    assert counts["num_image_patches"] == [tiles] and counts["num_image_tokens"] == [tiles * per_tile + 2]


def test_tiny_config_matches_the_processor_and_the_real_ratio(folder, processor):
    cfg = AutoConfig.from_pretrained(folder)
    tile, patch = cfg.vision_config.image_size[0], cfg.vision_config.patch_size[0]
    assert (tile // patch) ** 2 * cfg.downsample_ratio ** 2 == cfg.image_seq_length == processor.image_seq_length
    assert (448 // 14) ** 2 * 0.5 ** 2 == 256  # the published checkpoints: 448-px tiles, 256 tokens a tile
    assert json.loads((folder / "processor_config.json").read_text())["image_seq_length"] == 4
    assert cfg.image_token_id == processor.tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")


def test_special_tokens_are_named_tokenizer_attributes(folder, processor):
    tok = processor.tokenizer
    assert (tok.start_image_token, tok.context_image_token, tok.end_image_token, tok.video_token) == (
        "<img>", "<IMG_CONTEXT>", "</img>", "<video>")
    assert processor.image_token == "<IMG_CONTEXT>" and processor.start_image_token == "<img>"
    saved = json.loads((folder / "tokenizer_config.json").read_text())
    assert saved["context_image_token"] == "<IMG_CONTEXT>" and saved["tokenizer_class"] == "Qwen2Tokenizer"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"


def test_template_renders_like_the_real_checkpoint(processor):
    # transformers tests/models/internvl/test_modeling_internvl.py (InternVL3-1B-hf) writes this prompt by hand.
    chat = [{"role": "user", "content": [{"type": "image"},
                                         {"type": "text", "text": "Please describe the image explicitly."}]}]
    assert processor.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>user\n<IMG_CONTEXT>\nPlease describe the image explicitly.<|im_end|>\n<|im_start|>assistant\n")


def test_template_keeps_the_system_prompt_adds_none_and_places_images_in_order(processor):
    chat = [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": [{"type": "text", "text": "And this one?"}, {"type": "image"}]},
        {"role": "assistant", "content": "blue"},
    ]
    assert processor.apply_chat_template(chat, tokenize=False) == (
        "<|im_start|>system\nYou answer briefly.<|im_end|>\n"
        "<|im_start|>user\nAnd this one?<IMG_CONTEXT>\n<|im_end|>\n"
        "<|im_start|>assistant\nblue<|im_end|>\n")
    # No default system prompt (the original remote-code InternVL adds one; the -hf template does not).
    assert processor.apply_chat_template(chat[1:], tokenize=False).startswith("<|im_start|>user\n")


def test_forward_backward_and_generate_on_tiled_images(folder, processor):
    model = load_model(folder)
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Same?"}]},
            {"role": "assistant", "content": "no"}]
    text = processor.apply_chat_template(chat, tokenize=False)
    images = [Image.new("RGB", (112, 56), (0, 0, 255)), Image.new("RGB", (40, 40), (0, 200, 0))]
    inputs = processor(text=[text], images=images, return_tensors="pt")
    assert inputs["pixel_values"].shape[0] == 3 + 1
    out = model(**inputs, labels=inputs["input_ids"])
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.model.vision_tower.embeddings.cls_token.grad is not None
    prompt = processor(text=[processor.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True)],
                       images=images, return_tensors="pt")
    generated = model.generate(**prompt, max_new_tokens=3)
    assert generated.shape[1] > prompt["input_ids"].shape[1]
