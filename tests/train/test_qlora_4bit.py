"""QLoRA's model, built for real: bitsandbytes quantises the tiny model to NF4 (its CPU backend stands in for CUDA,
which ``vlmtune train`` requires for speed), and vlmtune's build puts adapters over the 4-bit language layers only.
The quantisation config is vlmtune's own, so these tests check the components it keeps in full precision, that
LoRA trains over frozen 4-bit weights, and that the trainable counts equal the CPU dry run's."""

import pytest
import torch
from torch import nn

from vlmtune.config import load_config
from vlmtune.data import Collator, Renderer
from vlmtune.data.demo import make_demo_data
from vlmtune.data.formats import read_samples
from vlmtune.models import get_family, load_model, load_processor
from vlmtune.train import build_model, parameter_table
from vlmtune.train.model import quantization_config
from vlmtune.train.trainer import causal_lm_loss

bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed (pip install 'vlmtune[qlora]')")
FAMILY = "qwen2_vl"


def _qlora(tiny_dir, tmp_path, *overrides: str):
    """(cfg, spec, the QLoRA model built by vlmtune over a 4-bit base)."""
    from transformers import AutoModelForImageTextToText

    spec = get_family(FAMILY)
    cfg = load_config(None, [f"model.path={tiny_dir(FAMILY)}", f"data.train={tmp_path / 'unused.jsonl'}",
                             "train.method=qlora", "lora.r=8", "quantization.compute_dtype=fp32", *overrides])
    base = AutoModelForImageTextToText.from_pretrained(  # what load_model does, placed on the CPU
        str(tiny_dir(FAMILY)), quantization_config=quantization_config(cfg, spec), device_map={"": "cpu"},
        dtype=torch.float32)
    return cfg, spec, build_model(cfg, spec, base=base)


def _linear_kinds(model: nn.Module, spec) -> dict[str, set[str]]:
    """Component -> class names of its linear layers (the base layer under a LoRA wrapper)."""
    kinds: dict[str, set[str]] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and ".lora_" not in name and not name.endswith("base_layer") \
                and not hasattr(module, "base_layer"):
            component = spec.component_of(name.removeprefix("base_model.model."))
            kinds.setdefault(component, set()).add(type(module).__name__)
        elif hasattr(module, "base_layer") and isinstance(module.base_layer, nn.Linear):
            component = spec.component_of(name.removeprefix("base_model.model."))
            kinds.setdefault(component, set()).add(type(module.base_layer).__name__)
    return kinds


def test_only_the_language_model_is_4bit_and_lora_counts_as_in_the_dry_run(tiny_dir, tmp_path):
    cfg, spec, model = _qlora(tiny_dir, tmp_path)
    kinds = _linear_kinds(model, spec)
    assert kinds["language"] == {"Linear4bit"}
    assert kinds["vision"] == kinds["projector"] == kinds["lm_head"] == {"Linear"}
    # The CPU dry run counts LoRA over the unquantised model: the same trainable parameters, component by component.
    dry = build_model(cfg.model_copy(update={"train": cfg.train.model_copy(update={"method": "lora"})}), spec,
                      base=load_model(tiny_dir(FAMILY)))
    assert {c: t for c, (t, _) in parameter_table(model, spec).items()} == {
        c: t for c, (t, _) in parameter_table(dry, spec).items()}
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)


def test_quantizing_the_vision_tower_and_projector_too(tiny_dir, tmp_path):
    _, spec, model = _qlora(tiny_dir, tmp_path, "quantization.components=[language,vision,projector]")
    kinds = _linear_kinds(model, spec)
    assert kinds["language"] == kinds["vision"] == kinds["projector"] == {"Linear4bit"}
    assert kinds["lm_head"] == {"Linear"}


@pytest.mark.slow  # a learning test: trains the tiny model to an accuracy
def test_lora_learns_over_frozen_4bit_weights(tiny_dir, tmp_path):
    _, spec, model = _qlora(tiny_dir, tmp_path)
    renderer = Renderer(load_processor(tiny_dir(FAMILY), spec), spec)
    samples = read_samples(make_demo_data(tmp_path / "data", n_train=4, n_val=1, seed=2)["train"])
    batch = Collator(renderer.processor.tokenizer.pad_token_id)([renderer.encode(s) for s in samples])
    packed = {n: p.detach().clone() for n, p in model.named_parameters() if isinstance(p, bnb.nn.Params4bit)}
    assert packed, "no 4-bit weight in the model"
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(5):
        loss = causal_lm_loss(model(**batch), batch["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5, losses
    assert all(torch.equal(p, packed[n]) for n, p in model.named_parameters() if n in packed)  # 4-bit untouched
    assert any(p.abs().max() > 0 for n, p in model.named_parameters() if "lora_B" in n)
