"""A model of no registered family: parts found in its module tree, answers found by rendering turn by turn.

The tiny model is Mllama (Llama 3.2 Vision), a real image-text-to-text class vlmtune has no entry for: vision
tower, projector and a language model whose cross-attention layers read the images. Its chat template is the one
transformers' own MllamaProcessor test uses (tests/models/mllama/test_processing_mllama.py, a trimmed form of the
checkpoints' template: the same headers, ``<|image|>`` placeholders and ``<|eot_id|>`` ends, no tool or date block).
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from torch import nn
from transformers import AutoConfig, AutoModelForImageTextToText, GenerationConfig

from tests.conftest import conversation, write_jsonl
from vlmtune.cli.main import main
from vlmtune.config import load_config
from vlmtune.core.errors import UnknownFamilyError
from vlmtune.data import IGNORE_INDEX, Renderer, read_samples
from vlmtune.data.check import check_dataset
from vlmtune.data.images import load_image
from vlmtune.data.labels import TemplateMismatch
from vlmtune.models import get_family, load_processor, spec_for
from vlmtune.models.infer import ComponentsError, find_components, skeleton
from vlmtune.models.processor_compat import processor_class
from vlmtune.models.spec import FamilySpec
from vlmtune.models.tiny import train_tokenizer
from vlmtune.train import train

TEMPLATE = (
    "{% for message in messages %}{% if loop.index0 == 0 %}{{ bos_token }}{% endif %}{{ '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\\n\\n' }}{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}{{ '<|image|>' }}{% elif "
    "content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}{{ '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
# Like the published Llama 3.2 Vision template, a system block is written only when no message holds an image: a
# conversation whose first image comes after the first answer renders that answer's prefix with the block and the
# whole conversation without it.
NO_IMAGE_SYSTEM_BLOCK = (
    "{% set ns = namespace(images=false) %}{% for m in messages %}{% if m['content'] is not string %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}{% set ns.images = true %}{% endif %}{% endfor %}"
    "{% endif %}{% endfor %}{{ bos_token }}{% if not ns.images %}"
    "{{ '<|start_header_id|>system<|end_header_id|>\\n\\nno images<|eot_id|>' }}{% endif %}"
    + TEMPLATE.replace("{% if loop.index0 == 0 %}{{ bos_token }}{% endif %}", "")
)
SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
            "<|finetune_right_pad_id|>", "<|python_tag|>", "<|image|>")


def build_tiny_mllama(out: Path, template: str = TEMPLATE) -> Path:
    """A tiny random-init Mllama checkpoint (about 0.23M parameters; two 28x28 tiles per image at most)."""
    # Only train_tokenizer reads this spec; it is registered nowhere.
    tokenizer_spec = FamilySpec(
        name="mllama", model_class="MllamaForConditionalGeneration", processor_class="MllamaProcessor",
        chat_template="", template_source="", special_tokens=SPECIALS, eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>", assistant_header=None, turn_end="<|eot_id|>", components={},
        language_lora_targets=(), tiny_tokenizer={"bos_token": "<|begin_of_text|>", "add_bos_token": True})
    tokenizer = train_tokenizer(tokenizer_spec)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIALS}
    image_processor = transformers.MllamaImageProcessorPil(size={"height": 28, "width": 28}, max_image_tiles=2)
    processor_class("MllamaProcessor")(image_processor=image_processor, tokenizer=tokenizer,
                                       chat_template=template).save_pretrained(out)
    config = transformers.MllamaConfig(
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_global_layers=1, attention_heads=2,
                           intermediate_size=64, vision_output_dim=64, image_size=28, patch_size=14, max_num_tiles=2,
                           supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]], intermediate_layers_indices=[0],
                           initializer_range=0.2),
        text_config=dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, cross_attention_layers=[1],
                         max_position_embeddings=4096, initializer_range=0.2, bos_token_id=ids["<|begin_of_text|>"],
                         eos_token_id=ids["<|eot_id|>"], pad_token_id=ids["<|finetune_right_pad_id|>"]),
        image_token_index=ids["<|image|>"])
    torch.manual_seed(0)
    model = transformers.MllamaForConditionalGeneration(config)
    model.generation_config = GenerationConfig(eos_token_id=ids["<|eot_id|>"],
                                               pad_token_id=ids["<|finetune_right_pad_id|>"], do_sample=False)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_mllama(tmp_path_factory.mktemp("tiny_mllama"))


@pytest.fixture(scope="module")
def two_towers(tmp_path_factory):
    """A DeepSeek-VL hybrid config (two vision towers, a neck and an aligner): the folder only needs config.json
    for the split to be refused, before anything else is read."""
    out = tmp_path_factory.mktemp("deepseek_vl_hybrid")
    transformers.DeepseekVLHybridConfig().save_pretrained(out)
    return out


def test_mllama_has_no_family_but_its_components_are_found(folder):
    with pytest.raises(UnknownFamilyError):
        get_family("mllama")
    assert AutoConfig.from_pretrained(folder).model_type == "mllama"
    spec = spec_for(folder)
    assert dict(spec.components) == {"vision": ("model.vision_model",), "projector": ("model.multi_modal_projector",),
                                     "language": ("model.language_model",), "lm_head": ("lm_head",)}
    # Every parameter of the real model lands in one of them.
    model = AutoModelForImageTextToText.from_pretrained(folder)
    assert all(spec.component_of(n) for n, _ in model.named_parameters())
    assert spec.language_lora_targets == ("down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj")
    assert spec.processor_class == "MllamaProcessor" and spec.model_class == "MllamaForConditionalGeneration"
    assert spec.eos_token == "<|eot_id|>" and set(SPECIALS) <= set(spec.special_tokens)
    assert spec_for(folder, check_split=False) == spec


def test_dry_run_prints_the_components_found_and_warns_the_family_is_unregistered(folder, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  path: {folder}\ndata:\n  train: unused.jsonl\ntrain:\n  output_dir: {tmp_path}/run\n")
    assert main(["train", str(config), "--dry-run", "lora.r=8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["component", "trainable", "total", "modules"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:6]}
    assert lines[-1].startswith("warning: mllama is not a registered vlmtune family")
    assert "model.components" in lines[-1]

    model = AutoModelForImageTextToText.from_pretrained(folder)
    r = 8  # LoRA on every linear layer of the language model, cross-attention included: A is r x in, B is out x r
    lora = sum(r * (m.in_features + m.out_features) for m in model.model.language_model.modules()
               if isinstance(m, nn.Linear))
    size = {name: sum(p.numel() for p in getattr(model.model, name).parameters())
            for name in ("vision_model", "multi_modal_projector", "language_model")}
    assert rows["vision"] == ["0", f"{size['vision_model']:,}", "model.vision_model"]
    assert rows["projector"] == ["0", f"{size['multi_modal_projector']:,}", "model.multi_modal_projector"]
    assert rows["language"] == [f"{lora:,}", f"{size['language_model'] + lora:,}", "model.language_model"]
    assert rows["lm_head"] == ["0", f"{model.lm_head.weight.numel():,}", "lm_head"]


def test_two_vision_towers_are_refused_naming_the_modules_and_the_config_key(two_towers, tmp_path, capsys):
    with pytest.raises(ComponentsError) as error:
        spec_for(two_towers)
    message = str(error.value)
    assert "several sub-models could be the vision tower: " in message
    assert "model.high_res_vision_model (built from high_res_vision_config)" in message
    assert "model.vision_model (built from vision_config)" in message
    assert "parameters in no component: model.high_res_vision_alpha, model.aligner" in message
    assert "model.components" in message

    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  path: {two_towers}\ndata:\n  train: unused.jsonl\n"
                      f"train:\n  output_dir: {tmp_path}/run\n")
    assert main(["train", str(config), "--dry-run"]) == 2
    assert "model.components" in capsys.readouterr().err
    # Naming the parts settles it; a prefix that names nothing is refused.
    model = skeleton(AutoConfig.from_pretrained(two_towers))
    vision = ["model.vision_model", "model.high_res_vision_model", "model.high_res_vision_neck",
              "model.high_res_vision_proj", "model.high_res_vision_alpha"]
    found, doubts = find_components(model, {"vision": vision, "projector": ["model.aligner"]})
    assert doubts == [] and found["language"] == ("model.language_model",) and found["vision"] == tuple(vision)
    _, doubts = find_components(model, {"vision": vision, "projector": ["model.aligner", "model.nothing"]})
    assert doubts == ["model.components.projector: no module or parameter is called 'model.nothing'"]


def test_components_from_the_config_reach_the_training_plan(folder, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  path: {folder}\n  components:\n    vision: [model.vision_model, "
                      "model.multi_modal_projector]\n"
                      f"data:\n  train: unused.jsonl\ntrain:\n  output_dir: {tmp_path}/run\n")
    assert main(["train", str(config), "--dry-run"]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[2:]}
    assert "projector" not in rows  # the one module left between the parts is now part of the vision tower
    assert rows["vision"][2:] == ["model.vision_model,", "model.multi_modal_projector"]


def test_per_turn_labels_are_exactly_the_answers(folder, tmp_path, images):
    spec = spec_for(folder, check_split=False)
    processor = load_processor(folder, spec)
    [sample] = read_samples(write_jsonl(tmp_path / "d.jsonl", [conversation()]))
    features = Renderer(processor, spec).encode(sample)
    ids, labels = features["input_ids"], features["labels"]
    chat = sample.to_chat()
    pictures = iter(load_image(p) for p in sample.images)
    for part in (p for m in chat for p in m["content"] if p["type"] == "image"):
        part["image"] = next(pictures)
    theirs = processor.apply_chat_template(chat, tokenize=True, return_dict=True, return_tensors="pt")
    assert ids.tolist() == theirs["input_ids"][0].tolist()
    trained = (labels != IGNORE_INDEX).nonzero().flatten().tolist()
    runs, start = [], trained[0]
    for a, b in zip(trained, trained[1:] + [None], strict=True):
        if b != a + 1:
            runs.append(processor.tokenizer.decode(ids[start:a + 1]))
            start = b
    assert runs == ["red<|eot_id|>", "It is blue.<|eot_id|>"]
    assert torch.equal(labels[labels != IGNORE_INDEX], ids[labels != IGNORE_INDEX])
    # The processor has no token-counting rule (cross-attention: each image stays one token); blank images count.
    sizes = [load_image(p).size for p in sample.images]
    assert sum(Renderer(processor, spec).count_tokens(sample, sizes)) == len(ids)


def test_lora_training_runs_on_the_unregistered_model(folder, tmp_path, images):
    data = write_jsonl(tmp_path / "d.jsonl", [conversation(), conversation("green.png", "red.png")])
    cfg = load_config(None, [f"model.path={folder}", f"data.train={data}", f"train.output_dir={tmp_path / 'run'}",
                             "train.progress=false", "train.report_to=none", "train.max_steps=2",
                             "train.batch_size=2", "train.logging_steps=1"])
    result = train(cfg)
    assert result.metrics["family"] == "mllama" and result.metrics["steps"] == 2
    adapter = json.loads((result.weights_dir / "adapter_config.json").read_text())
    assert adapter["target_modules"] and all(m.startswith("model.language_model.") for m in adapter["target_modules"])


def test_a_template_whose_turns_disagree_with_the_whole_stops_the_run(folder, tmp_path, images):
    crafted = tmp_path / "crafted"
    shutil.copytree(folder, crafted)
    (crafted / "chat_template.jinja").write_text(NO_IMAGE_SYSTEM_BLOCK)
    record = {"messages": [
        {"role": "user", "content": "Say red."}, {"role": "assistant", "content": "red"},
        {"role": "user", "content": [{"type": "image", "image": "blue.png"}, {"type": "text", "text": "Colour?"}]},
        {"role": "assistant", "content": "blue"}]}
    data = write_jsonl(tmp_path / "d.jsonl", [record])
    spec = spec_for(crafted, check_split=False)
    renderer = Renderer(load_processor(crafted, spec), spec)
    [sample] = read_samples(data)
    # The first differing token: the role after the shared <|begin_of_text|><|start_header_id|>.
    with pytest.raises(TemplateMismatch, match=rf"^{data}:1: the chat template renders messages\[:1\] differently "
                       r"alone than within the whole conversation \(token 2: 'system' alone, 'user' in the whole\)"):
        renderer.encode(sample)
    # Measuring the data (before any weights load) checks the first samples the same way.
    with pytest.raises(TemplateMismatch, match=rf"^{data}:1: "):
        check_dataset(data, renderer=Renderer(load_processor(crafted, spec), spec))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model:\n  path: {crafted}\ndata:\n  train: {data}\ntrain:\n  output_dir: {tmp_path}/run\n")
    assert main(["train", str(cfg)]) == 2
    assert not (tmp_path / "run" / "adapter").exists()


def test_the_key_also_replaces_a_registered_familys_prefixes_and_names_a_wrong_one(tiny_dir):
    spec = spec_for(tiny_dir("qwen2_vl"), {"projector": ["model.visual.merger.mlp"]})
    assert spec.components["projector"] == ("model.visual.merger.mlp",)
    assert spec.component_of("model.visual.merger.ln_q.weight") == "vision"
    with pytest.raises(ComponentsError, match=r"model\.components\.vision: no module or parameter is called "
                                              r"'model\.vison'"):
        spec_for(tiny_dir("qwen2_vl"), {"vision": ["model.vison"]})
