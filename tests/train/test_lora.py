"""LoRA lands on the language model only; the vision tower never trains by default."""

import pytest
from torch import nn

from vlmtune.config import LoraConfig
from vlmtune.models import get_family, load_model
from vlmtune.train import apply_lora, language_lora_modules, parameter_table, prepare_full

FAMILIES = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("targets", ["all-linear", ["q_proj", "v_proj", "gate_proj", "down_proj"]])
def test_no_vision_parameter_is_trainable_by_default(family, targets, tiny_dir):
    spec = get_family(family)
    model = apply_lora(load_model(tiny_dir(family)), spec, LoraConfig(targets=targets))
    trainable = [n.removeprefix("base_model.model.") for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert all(n.startswith("model.language_model.layers.") for n in trainable), trainable
    table = parameter_table(model, spec)
    assert table["vision"][0] == 0 and table["projector"][0] == 0 and table["lm_head"][0] == 0
    assert table["language"][0] > 0


def test_bare_names_would_hit_the_qwen2_5_vision_mlp(tiny_dir):
    """The trap: Qwen2.5-VL's vision blocks have gate/up/down_proj too; our targets are exact paths."""
    spec = get_family("qwen2_5_vl")
    model = load_model(tiny_dir("qwen2_5_vl"))
    vision_mlps = [n for n, m in model.named_modules()
                   if isinstance(m, nn.Linear) and n.endswith("gate_proj") and spec.component_of(n) == "vision"]
    assert vision_mlps, "the tiny Qwen2.5-VL should reproduce the real vision MLP naming"
    selected = language_lora_modules(model, spec, ["gate_proj"])
    assert selected and not set(selected) & set(vision_mlps)
    assert len(selected) == model.config.text_config.num_hidden_layers


def test_unknown_target_names_the_available_layers(tiny_dir):
    model = load_model(tiny_dir("qwen2_vl"))
    with pytest.raises(ValueError, match=r"\['qkv'\] name no linear layer.*q_proj"):
        language_lora_modules(model, get_family("qwen2_vl"), ["q_proj", "qkv"])


def test_full_fine_tuning_keeps_the_vision_tower_frozen(tiny_dir):
    spec = get_family("qwen2_5_vl")
    table = parameter_table(prepare_full(load_model(tiny_dir("qwen2_5_vl")), spec), spec)
    assert table["vision"][0] == 0
    assert table["language"][0] == table["language"][1] and table["projector"][0] == table["projector"][1]
