"""Which weights train: LoRA on the language model's linear layers, or the full language model.

Targets are resolved to exact module paths inside the language model. Bare leaf names are not enough:
Qwen2.5-VL's vision blocks also have ``gate_proj`` / ``up_proj`` / ``down_proj``, so handing PEFT those names
would silently put adapters on the vision tower.
"""

from __future__ import annotations

from collections.abc import Sequence

import peft
from torch import nn

from ..config import LoraConfig
from ..models.spec import COMPONENTS, FamilySpec


def language_lora_modules(model: nn.Module, spec: FamilySpec, targets: str | Sequence[str]) -> list[str]:
    """Full names of the language model's ``nn.Linear`` layers selected by ``targets``."""
    linear = [name for name, module in model.named_modules()
              if isinstance(module, nn.Linear) and spec.component_of(name) == "language"]
    leaves = {name.rsplit(".", 1)[-1] for name in linear}
    if targets == "all-linear":
        return linear
    unknown = sorted(set(targets) - leaves)
    if unknown:
        raise ValueError(f"lora.targets {unknown} name no linear layer of the language model; "
                         f"its linear layers are: {', '.join(sorted(leaves))} (or use \"all-linear\")")
    return [name for name in linear if name.rsplit(".", 1)[-1] in targets]


def apply_lora(model: nn.Module, spec: FamilySpec, cfg: LoraConfig) -> peft.PeftModel:
    """Wrap ``model`` with LoRA adapters on its language model; everything else stays frozen."""
    modules = language_lora_modules(model, spec, cfg.targets)
    config = peft.LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=modules,
                             task_type="CAUSAL_LM")
    return peft.get_peft_model(model, config)


def prepare_full(model: nn.Module, spec: FamilySpec) -> nn.Module:
    """Full fine-tuning of the language model, projector and head; the vision tower stays frozen."""
    for name, param in model.named_parameters():
        param.requires_grad = spec.component_of(name) in ("language", "projector", "lm_head")
    return model


def parameter_table(model: nn.Module, spec: FamilySpec) -> dict[str, tuple[int, int]]:
    """Component -> (trainable, total) parameter counts. PEFT's ``base_model.model.`` prefix is ignored."""
    table: dict[str, list[int]] = {c: [0, 0] for c in (*COMPONENTS, "other")}
    for name, param in model.named_parameters():
        component = spec.component_of(_strip_peft_prefix(name)) or "other"
        table[component][1] += param.numel()
        if param.requires_grad:
            table[component][0] += param.numel()
    return {c: (t, n) for c, (t, n) in table.items() if n}


def format_table(table: dict[str, tuple[int, int]]) -> str:
    rows = [f"{'component':<10} {'trainable':>12} {'total':>12}"]
    for component, (trainable, total) in table.items():
        rows.append(f"{component:<10} {trainable:>12,} {total:>12,}")
    trainable = sum(t for t, _ in table.values())
    total = sum(n for _, n in table.values())
    rows.append(f"{'all':<10} {trainable:>12,} {total:>12,}  ({100 * trainable / max(total, 1):.2f}% trainable)")
    return "\n".join(rows)


def _strip_peft_prefix(name: str) -> str:
    # LoRA weights live under the layer they adapt (...q_proj.lora_A.default.weight), so the prefix match
    # on the stripped name puts them in that layer's component.
    return name.removeprefix("base_model.model.")

