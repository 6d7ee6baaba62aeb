"""Gemma 3: framed soft tokens per image, pan-and-scan, the system prompt folded into the first turn, <bos>."""

import json

import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoTokenizer

from tests.conftest import dry_run_table, write_jsonl
from vlmtune.data import IGNORE_INDEX, Renderer, read_samples
from vlmtune.models import get_family, load_model, load_processor

FAMILY = "gemma3"


@pytest.fixture(scope="module")
def folder(tiny_dir):
    return tiny_dir(FAMILY)


@pytest.fixture
def processor(folder):
    return load_processor(folder, get_family(FAMILY))


def _image_run(processor) -> str:
    n = processor.image_seq_length
    return "\n\n<start_of_image>" + "<image_soft_token>" * n + "<end_of_image>\n\n"


def test_dry_run_parameter_table_for_lora_r8(folder, tmp_path, capsys):
    rows = dry_run_table(folder, tmp_path, capsys, "lora.r=8")

    cfg = AutoConfig.from_pretrained(folder)
    text, vision = cfg.text_config, cfg.vision_config
    h, ffn, vocab, hd = text.hidden_size, text.intermediate_size, text.vocab_size, text.head_dim
    q, kv = text.num_attention_heads * hd, text.num_key_value_heads * hd
    vh, vffn, patch = vision.hidden_size, vision.intermediate_size, vision.patch_size
    # LoRA r on every language linear (default "all-linear"): A is r x in, B is out x r.
    r = 8
    shapes = [(h, q), (h, kv), (h, kv), (q, h), (h, ffn), (h, ffn), (ffn, h)]  # q k v o gate up down
    lora = text.num_hidden_layers * sum(r * (i + o) for i, o in shapes)
    # Gemma 3 layer: no biases, q/k RMSNorms over head_dim, four RMSNorms around attention and MLP.
    layer = h * q + 2 * h * kv + q * h + 3 * h * ffn + 2 * hd + 4 * h
    language = vocab * h + text.num_hidden_layers * layer + h
    # SigLIP layer: q/k/v/out with bias, two LayerNorms, fc1/fc2; no pooling head (vision_use_head=False).
    vlayer = 4 * (vh * vh + vh) + 4 * vh + (vh * vffn + vffn) + (vffn * vh + vh)
    n_patches = (vision.image_size // patch) ** 2
    vision_total = (3 * patch * patch * vh + vh) + n_patches * vh + vision.num_hidden_layers * vlayer + 2 * vh
    projector = vh * h + vh  # mm_input_projection_weight and mm_soft_emb_norm

    assert rows["language"] == [lora, language + lora]
    assert rows["vision"] == [0, vision_total]
    assert rows["projector"] == [0, projector]
    assert rows["lm_head"] == [0, vocab * h]
    assert rows["all"] == [lora, language + lora + vision_total + projector + vocab * h]
    assert lora == 2 * 8 * (128 + 96 + 96 + 128 + 192 + 192 + 192)  # by hand: hidden 64, kv 32, ffn 128


def test_an_image_becomes_its_soft_tokens_framed_by_begin_and_end_of_image(folder, processor):
    cfg = AutoConfig.from_pretrained(folder)
    pooled_side = cfg.vision_config.image_size // cfg.vision_config.patch_size // 2  # avg-pool kernel 2
    assert pooled_side ** 2 == cfg.mm_tokens_per_image == processor.image_seq_length == 16
    assert (896 // 14 // 4) ** 2 == 256  # the published checkpoints: 896 px, 14-px patches, pooled 4 x 4

    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is this?"}]}]
    prompt = processor.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert prompt == ("<bos><start_of_turn>user\n<start_of_image>What colour is this?<end_of_turn>\n"
                      "<start_of_turn>model\n")
    image = Image.new("RGB", (90, 120), (0, 0, 255))
    inputs = processor(text=[prompt], images=[image], return_tensors="pt", add_special_tokens=False)
    tok = processor.tokenizer
    assert tok.decode(inputs["input_ids"][0]) == prompt.replace("<start_of_image>", _image_run(processor))
    assert inputs["pixel_values"].shape == (1, 3, 64, 64)  # any size is resized to the square input
    soft = inputs["input_ids"][0] == tok.convert_tokens_to_ids("<image_soft_token>")
    assert torch.equal(inputs["token_type_ids"][0].bool(), soft) and int(soft.sum()) == 16
    counts = processor._get_num_multimodal_tokens(image_sizes=[(120, 90)])
    assert counts["num_image_tokens"] == [16]  # soft tokens only: the frame is what image_placeholder_text adds


def test_special_tokens_ids_and_the_sentencepiece_tokenizer_round_trip(folder, processor):
    tok, cfg = processor.tokenizer, AutoConfig.from_pretrained(folder)
    assert (tok.boi_token, tok.eoi_token, tok.image_token) == ("<start_of_image>", "<end_of_image>",
                                                               "<image_soft_token>")
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<bos>", "<eos>", "<pad>")
    assert [tok.convert_tokens_to_ids(t) for t in ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")] == [0, 1, 2, 3, 4]
    assert (cfg.boi_token_index, cfg.eoi_token_index, cfg.image_token_index) == tuple(
        tok.convert_tokens_to_ids(t) for t in ("<start_of_image>", "<end_of_image>", "<image_soft_token>"))
    saved = json.loads((folder / "tokenizer_config.json").read_text())
    assert saved["tokenizer_class"] == "GemmaTokenizer" and saved["boi_token"] == "<start_of_image>"
    # Like the published tokenizer it adds <bos> to plain text, writes spaces as "▁" and falls back to bytes.
    ids = tok("Which colour? é")["input_ids"]
    assert ids[0] == tok.bos_token_id and "▁" in "".join(tok.convert_ids_to_tokens(ids))
    assert "<0xC3>" in tok.convert_ids_to_tokens(ids) and tok.decode(ids, skip_special_tokens=True) == "Which colour? é"
    # transformers rebuilds GemmaTokenizer from vocab and merges on load: the same ids come back.
    assert AutoTokenizer.from_pretrained(folder)("Which colour? é")["input_ids"] == ids


def _samples(tmp_path, records):
    for name, size in (("wide.png", (200, 60)), ("tall.png", (50, 120))):
        Image.new("RGB", size, (255, 0, 0)).save(tmp_path / name)
    return read_samples(write_jsonl(tmp_path / "d.jsonl", records))


def test_system_prompt_is_folded_into_the_first_user_turn_and_not_trained_on(processor, tmp_path):
    spec = get_family(FAMILY)
    [sample] = _samples(tmp_path, [{"messages": [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": [{"type": "image", "image": "wide.png"}, {"type": "text", "text": "Colour?"}]},
        {"role": "assistant", "content": "red"},
    ]}])
    renderer = Renderer(processor, spec)
    assert renderer.text(sample) == ("<bos><start_of_turn>user\nYou answer briefly.\n\n<start_of_image>Colour?"
                                     "<end_of_turn>\n<start_of_turn>model\nred<end_of_turn>\n")
    assert renderer.text(sample, add_generation_prompt=True).endswith("<start_of_turn>model\n")
    features = renderer.encode(sample)
    ids, tok = features["input_ids"], processor.tokenizer
    # The template writes <bos>; the tokenizer, which adds one to plain text, must not add a second.
    assert ids[0] == tok.bos_token_id and int((ids == tok.bos_token_id).sum()) == 1
    trained = features["labels"] != IGNORE_INDEX
    assert tok.decode(ids[trained]) == "red<end_of_turn>"
    assert "system" not in tok.decode(ids) and "You answer briefly." in tok.decode(ids[~trained])


def test_pan_and_scan_when_the_processor_turns_it_on(folder, processor, tmp_path):
    spec = get_family(FAMILY)
    # In transformers 5.24 the processor's images_kwargs win over preprocessor_config.json: pan-and-scan is off
    # unless they turn it on.
    config = json.loads((folder / "processor_config.json").read_text())
    assert config["image_processor"].get("do_pan_and_scan") is None and not processor.images_kwargs["do_pan_and_scan"]
    processor.images_kwargs = {**processor.images_kwargs, "do_pan_and_scan": True, "pan_and_scan_min_crop_size": 16}
    samples = _samples(tmp_path, [{"messages": [
        {"role": "user", "content": [{"type": "image", "image": "wide.png"}, {"type": "text", "text": "And?"},
                                     {"type": "image", "image": "tall.png"}]},
        {"role": "assistant", "content": "red"},
    ]}])
    renderer = Renderer(processor, spec)
    features = renderer.encode(samples[0])
    # 200 x 60 -> 3 crops side by side, 50 x 120 -> 2 stacked; each crop is another framed run of soft tokens.
    assert features["pixel_values"].shape == (1 + 3 + 1 + 2, 3, 64, 64)
    n_soft = int((features["input_ids"] == processor.tokenizer.image_token_id).sum())
    assert n_soft == 7 * processor.image_seq_length == int(features["token_type_ids"].sum())
    assert "Here is the original image" in processor.tokenizer.decode(features["input_ids"])
    assert sum(renderer.count_tokens(samples[0], [(200, 60), (50, 120)])) == len(features["input_ids"])
    model = load_model(folder)
    batch = {k: v.unsqueeze(0) if v.dim() == 1 else v for k, v in features.items()}
    assert torch.isfinite(model(**batch).loss)


def test_the_images_reach_the_language_model_and_generation_stops_at_end_of_turn(folder, processor, tmp_path):
    model = load_model(folder).eval()
    assert model.model.multi_modal_projector.mm_input_projection_weight.abs().sum() > 0  # not the zero init
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}]
    prompt = processor.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    logits = []
    for colour in ((255, 0, 0), (0, 0, 255)):
        inputs = processor(text=[prompt], images=[Image.new("RGB", (64, 64), colour)], return_tensors="pt",
                           add_special_tokens=False)
        with torch.no_grad():
            logits.append(model(**inputs).logits[0, -1])
    assert not torch.allclose(logits[0], logits[1], atol=1e-4)
    assert model.generation_config.eos_token_id == processor.tokenizer.convert_tokens_to_ids("<end_of_turn>")
    generated = model.generate(**inputs, max_new_tokens=3)
    assert generated.shape[1] > inputs["input_ids"].shape[1]
