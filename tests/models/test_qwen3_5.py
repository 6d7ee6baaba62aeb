"""Qwen3.5: hybrid linear/full attention under LoRA, the thinking template's empty think block, image tokens."""

import pytest
import torch
from PIL import Image
from transformers import AutoConfig

from tests.conftest import conversation, dry_run_table, write_jsonl
from vlmtune.config import LoraConfig, load_config
from vlmtune.data import IGNORE_INDEX, Renderer, read_samples
from vlmtune.data.demo import make_demo_data
from vlmtune.demo import shuffled_answers
from vlmtune.models import get_family, load_model, load_processor
from vlmtune.models.qwen_vl import QWEN3_VL
from vlmtune.train import apply_lora, train

FAMILY = "qwen3_5"
SPEC = get_family(FAMILY)
GDN = ("in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a", "out_proj")  # Gated-DeltaNet projections


@pytest.fixture(scope="module")
def folder(tiny_dir):
    return tiny_dir(FAMILY)


@pytest.fixture(scope="module")
def processor(folder):
    return load_processor(folder, SPEC)


def test_tiny_model_has_both_kinds_of_layer(folder):
    model = load_model(folder)
    assert model.config.text_config.layer_types == ["linear_attention", "full_attention"]
    first, second = model.model.language_model.layers
    assert type(first.linear_attn).__name__ == "Qwen3_5GatedDeltaNet" and not hasattr(first, "self_attn")
    assert type(second.self_attn).__name__ == "Qwen3_5Attention" and not hasattr(second, "linear_attn")
    # The real checkpoints: three linear-attention layers, then one full-attention layer, repeated.
    assert type(model.config.text_config)(num_hidden_layers=8).layer_types == (
        ["linear_attention"] * 3 + ["full_attention"]) * 2


def test_default_lora_targets_cover_linear_attention_and_skip_the_vision_tower(folder):
    model = apply_lora(load_model(folder), SPEC, LoraConfig())  # lora.targets defaults to "all-linear"
    adapted = {n.removeprefix("base_model.model.").rsplit(".lora_A", 1)[0]
               for n, _ in model.named_parameters() if ".lora_A." in n}
    language = "model.language_model.layers"
    assert {f"{language}.0.linear_attn.{leaf}" for leaf in GDN} <= adapted
    assert {f"{language}.1.self_attn.{leaf}" for leaf in ("q_proj", "k_proj", "v_proj", "o_proj")} <= adapted
    assert {f"{language}.{i}.mlp.{leaf}" for i in (0, 1) for leaf in ("gate_proj", "up_proj", "down_proj")} <= adapted
    assert not [n for n in adapted if n.startswith("model.visual")]
    assert {n.rsplit(".", 1)[-1] for n in adapted} == set(SPEC.language_lora_targets)
    assert all(p.grad is None for p in model.parameters())
    # The conv1d of the linear-attention layer is no nn.Linear: it keeps its weights, like A_log and dt_bias.
    assert not [n for n in adapted if "conv1d" in n]


def test_dry_run_parameter_table_for_lora_r8(folder, tmp_path, capsys):
    rows = dry_run_table(folder, tmp_path, capsys, "lora.r=8")

    cfg = AutoConfig.from_pretrained(folder)
    t, v = cfg.text_config, cfg.vision_config
    h, ffn, vocab = t.hidden_size, t.intermediate_size, t.vocab_size
    q, kv = t.num_attention_heads * t.head_dim, t.num_key_value_heads * t.head_dim
    keys, values, vheads = t.linear_num_key_heads * t.linear_key_head_dim, (
        t.linear_num_value_heads * t.linear_value_head_dim), t.linear_num_value_heads
    # (in, out) of each linear layer. Gated attention: q_proj also yields the output gate (2x).
    gdn = [(h, 2 * keys + values), (h, values), (h, vheads), (h, vheads), (values, h)]  # qkv z b a out
    attn = [(h, 2 * q), (h, kv), (h, kv), (q, h)]  # q k v o
    mlp = [(h, ffn), (h, ffn), (ffn, h)]  # gate up down
    r = 8
    lora = sum(r * (i + o) for i, o in gdn + attn + mlp + mlp)  # A is r x in, B is out x r
    conv = (2 * keys + values) * t.linear_conv_kernel_dim  # depthwise, no bias
    gdn_layer = sum(i * o for i, o in gdn) + conv + 2 * vheads + t.linear_value_head_dim  # + dt_bias A_log norm
    attn_layer = sum(i * o for i, o in attn) + 2 * t.head_dim  # + q_norm k_norm
    mlp_norms = sum(i * o for i, o in mlp) + 2 * h
    language = vocab * h + gdn_layer + attn_layer + 2 * mlp_norms + h
    vh, vffn, patch = v.hidden_size, v.intermediate_size, v.patch_size
    block = 4 * vh + (3 * vh * vh + 3 * vh) + (vh * vh + vh) + (vh * vffn + vffn) + (vffn * vh + vh)
    vision = (3 * v.temporal_patch_size * patch * patch * vh + vh) + v.num_position_embeddings * vh + v.depth * block
    merged = vh * v.spatial_merge_size ** 2
    projector = 2 * vh + (merged * merged + merged) + (merged * v.out_hidden_size + v.out_hidden_size)

    assert rows["language"] == [lora, language + lora]
    assert rows["vision"] == [0, vision]
    assert rows["projector"] == [0, projector]
    assert rows["lm_head"] == [0, vocab * h]
    assert rows["all"] == [lora, language + lora + vision + projector + vocab * h]
    # By hand (hidden 64, ffn 128): GDN 8*(192+128+68+68+128), attention 8*(320+128+128+192), MLPs 2*8*576.
    assert lora == 8 * 584 + 8 * 768 + 2 * 8 * 576 == 20_032


def test_forward_backward_on_cpu_reach_both_kinds_of_layer(folder, processor, tmp_path, images):
    # Without flash-linear-attention / causal-conv1d, transformers runs its reference PyTorch kernels.
    model = apply_lora(load_model(folder), SPEC, LoraConfig())
    [sample] = read_samples(write_jsonl(tmp_path / "d.jsonl", [conversation()]))
    features = Renderer(processor, SPEC).encode(sample)
    batch = {k: v.unsqueeze(0) if k in ("input_ids", "attention_mask", "labels", "mm_token_type_ids") else v
             for k, v in features.items()}
    loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss)
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    for layer in ("linear_attn.in_proj_qkv", "linear_attn.in_proj_a", "self_attn.q_proj"):
        name = next(n for n in grads if f".{layer}.lora_B." in n)
        assert grads[name].abs().sum() > 0, name


def test_template_opens_thinking_by_default_and_vlmtune_prompts_close_it(processor):
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which shape?"}]}]
    head = ("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Which shape?<|im_end|>\n"
            "<|im_start|>assistant\n")
    # As shipped by Qwen3.5-4B and larger: the generation prompt opens a think block for the model to fill.
    assert processor.apply_chat_template(chat, add_generation_prompt=True) == head + "<think>\n"
    assert processor.apply_chat_template(chat, add_generation_prompt=True, **SPEC.chat_template_kwargs) == (
        head + "<think>\n\n</think>\n\n")
    # No default system prompt; a given one is kept as its own turn.
    system = [{"role": "system", "content": "You answer briefly."}, *chat]
    assert processor.apply_chat_template(system, add_generation_prompt=True).startswith(
        "<|im_start|>system\nYou answer briefly.<|im_end|>\n" + head)


def test_empty_think_block_is_prompt_in_the_last_turn_only(processor, tmp_path, images):
    [sample] = read_samples(write_jsonl(tmp_path / "d.jsonl", [conversation()]))
    renderer = Renderer(processor, SPEC)
    text = renderer.text(sample)
    assert text.endswith("<|im_start|>assistant\nred<|im_end|>\n<|im_start|>user\nAnd this one?"
                         "<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n"
                         "<|im_start|>assistant\n<think>\n\n</think>\n\nIt is blue.<|im_end|>\n")
    features = renderer.encode(sample)
    ids, labels = features["input_ids"], features["labels"]
    think = processor.tokenizer.convert_tokens_to_ids(["<think>", "</think>"])
    assert all(labels[ids == token].eq(IGNORE_INDEX).all() for token in think)
    # Generation resumes exactly where the last answer's labels begin: the prompt ends with the empty block.
    prompt_ids = renderer.encode_prompt(sample.prompt_and_answer()[0])["input_ids"]
    last_answer = (labels != IGNORE_INDEX).nonzero().flatten()
    first_of_last = int(last_answer[last_answer >= len(prompt_ids)][0])
    assert torch.equal(ids[:len(prompt_ids)], prompt_ids) and first_of_last == len(prompt_ids)
    assert processor.tokenizer.decode(ids[first_of_last:]) == "It is blue.<|im_end|>\n"


@pytest.mark.parametrize(("size", "tokens"), [((64, 48), 4), ((90, 120), 12), ((112, 112), 16)])
def test_images_resize_to_multiples_of_32_and_merge_2x2_patches(processor, size, tokens):
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which shape?"}]}]
    prompt = processor.apply_chat_template(chat, add_generation_prompt=True)
    inputs = processor(text=[prompt], images=[Image.new("RGB", size, (255, 0, 0))], return_tensors="pt")
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((inputs["input_ids"] == image_pad).sum()) == tokens == int(inputs["image_grid_thw"].prod()) // 4
    # e.g. 90 x 120 -> 96 x 128 pixels (nearest multiples of patch 16 x merge 2) -> 6 x 8 patches -> 12 tokens
    assert processor._get_num_multimodal_tokens(image_sizes=[size[::-1]])["num_image_tokens"] == [tokens]
    assert (SPEC.image_factor, SPEC.min_pixels, SPEC.max_pixels) == (32, 65536, 16777216)  # real processors


def test_tokens_processor_and_grounding_follow_qwen3_vl(folder, processor):
    assert type(processor.tokenizer).__name__ == "Qwen3_5Tokenizer"
    assert type(processor).__name__ == "Qwen3VLProcessor"
    assert processor.tokenizer.eos_token == "<|im_end|>" and processor.tokenizer.pad_token == "<|endoftext|>"
    cfg = AutoConfig.from_pretrained(folder)
    assert cfg.image_token_id == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert cfg.vision_start_token_id == processor.tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert SPEC.grounding is QWEN3_VL.grounding and SPEC.grounding.grid == 1000
    assert {"<think>", "</think>", "<tool_call>"} <= set(SPEC.special_tokens)


@pytest.mark.slow  # a learning test: trains the tiny model to an accuracy
def test_lora_learns_the_demo_task_on_cpu(tiny_dir, tmp_path):
    """Base (a warm-up on shuffled answers: the task's words, not the images) vs LoRA on the real answers."""
    files = make_demo_data(tmp_path / "data", n_train=200, n_val=40)
    warm = shuffled_answers(files["train"], files["train"].parent / "warm.jsonl")
    common = ["train.batch_size=8", "train.progress=false", "train.report_to=none", "data.cache_in_memory=true"]
    train(load_config(None, [
        f"model.path={tiny_dir(FAMILY)}", f"data.train={warm}",
        f"train.output_dir={tmp_path / 'base'}", "train.method=full", "train.epochs=2", "train.lr=1e-3", *common]))
    result = train(load_config(None, [
        f"model.path={tmp_path / 'base' / 'model'}", f"data.train={files['train']}", f"data.val={files['val']}",
        f"train.output_dir={tmp_path / 'run'}", "train.epochs=5", "train.lr=3e-3", "train.warmup_steps=5",
        "eval.metrics=[exact_match]", "eval.max_new_tokens=6", *common]))
    base, tuned = result.metrics["base_val_exact_match"], result.metrics["val_exact_match"]
    assert base <= 0.5 and tuned >= 0.75 and tuned - base >= 0.3, (base, tuned)
