"""Which weights train: LoRA / DoRA / QLoRA adapters on chosen layers of each component, or full fine-tuning
of the components that are not frozen.

Targets are resolved to exact module paths inside their component. Bare leaf names are not enough:
Qwen2.5-VL's vision blocks also have ``gate_proj`` / ``up_proj`` / ``down_proj``, so handing PEFT those names
would silently put adapters on the vision tower.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import peft
from torch import nn

from ..config.method import Method
from ..config.schema import FreezeConfig, LoraConfig
from ..models.spec import COMPONENTS, FamilySpec


def component_linear_modules(model: nn.Module, spec: FamilySpec, component: str,
                             targets: str | Sequence[str]) -> list[str]:
    """Full names of ``component``'s ``nn.Linear`` layers selected by ``targets`` ("all-linear" or leaf names)."""
    linear = [name for name, module in model.named_modules()
              if isinstance(module, nn.Linear) and spec.component_of(name) == component]
    if targets == "all-linear":
        return linear
    leaves = {name.rsplit(".", 1)[-1] for name in linear}
    unknown = sorted(set(targets) - leaves)
    if unknown:
        key = "lora.targets" if component == "language" else f"lora.targets.{component}"
        raise ValueError(f"{key} {unknown} name no linear layer of the {component} component; its linear layers "
                         f"are: {', '.join(sorted(leaves)) or 'none'} (or use \"all-linear\")")
    return [name for name in linear if name.rsplit(".", 1)[-1] in targets]


def language_lora_modules(model: nn.Module, spec: FamilySpec, targets: str | Sequence[str]) -> list[str]:
    """Full names of the language model's ``nn.Linear`` layers selected by ``targets``."""
    return component_linear_modules(model, spec, "language", targets)


def training_plan(model: nn.Module, spec: FamilySpec, method: Method | str = Method.LORA,
                  lora: LoraConfig | None = None, freeze: FreezeConfig | None = None) -> dict[str, str | list[str]]:
    """Component -> "frozen", "full" (its own weights train) or the module paths that get adapters."""
    lora, freeze = lora or LoraConfig(), freeze or FreezeConfig()
    if not Method(method).trains_adapter:
        frozen = {"vision": freeze.vision, "projector": bool(freeze.projector), "language": freeze.language,
                  "lm_head": freeze.language}
        return {c: "frozen" if frozen[c] else "full" for c in COMPONENTS}
    plan: dict[str, str | list[str]] = {}
    for component, targets in lora.by_component().items():
        unfrozen = component != "language" and getattr(freeze, component) is False
        if targets == "full" or (unfrozen and not targets):
            plan[component] = "full"
        else:
            plan[component] = component_linear_modules(model, spec, component, targets) if targets else "frozen"
    plan["lm_head"] = "frozen"
    if not any(isinstance(v, list) for v in plan.values()):
        raise ValueError("lora.targets selects no layer in any component: nothing would get an adapter")
    return plan


def check_targets(cfg: Any, spec: FamilySpec | None = None) -> None:
    """Raise ConfigError where ``lora.targets`` names a layer the model does not have, or selects none: the plan is
    made on the model's module tree on the meta device (its config alone), before any data or weight is read."""
    if not cfg.train.method.trains_adapter:
        return
    from ..core.errors import ConfigError
    from ..models import spec_for
    from ..models.infer import skeleton
    from ..models.load import model_config

    spec = spec or spec_for(cfg.model.path, cfg.model.components)
    try:
        training_plan(skeleton(model_config(cfg.model.path)), spec, cfg.train.method, cfg.lora, cfg.freeze)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def apply_lora(model: nn.Module, spec: FamilySpec, lora: LoraConfig, method: Method | str = Method.LORA,
               freeze: FreezeConfig | None = None) -> peft.PeftModel:
    """Wrap ``model`` with adapters where the plan puts them; components planned "full" train whole (saved with
    the adapter, PEFT's ``modules_to_save``), everything else stays frozen."""
    plan = training_plan(model, spec, method, lora, freeze)
    modules = [m for targets in plan.values() if isinstance(targets, list) for m in targets]
    whole = [prefix for c, targets in plan.items() if targets == "full" for prefix in spec.components[c]]
    config = peft.LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=modules,
                             modules_to_save=whole or None, use_dora=Method(method).dora, use_rslora=lora.rslora,
                             task_type="CAUSAL_LM")
    return peft.get_peft_model(model, config)


def prepare_full(model: nn.Module, spec: FamilySpec, freeze: FreezeConfig | None = None) -> nn.Module:
    """Full fine-tuning: every weight of a component not frozen trains (default: all but the vision tower)."""
    plan = training_plan(model, spec, Method.FULL, freeze=freeze)
    for name, param in model.named_parameters():
        param.requires_grad = plan.get(spec.component_of(name) or "", "frozen") == "full"
    return model


def parameter_table(model: nn.Module, spec: FamilySpec) -> dict[str, tuple[int, int]]:
    """Component -> (trainable, total) parameter counts. PEFT's wrappers are seen through: adapter weights count
    in the component of the layer they adapt, ``modules_to_save`` copies in their module's component. Weights
    partitioned by ZeRO-3 count whole (``ds_numel``), not as this process's empty placeholder."""
    table: dict[str, list[int]] = {c: [0, 0] for c in (*COMPONENTS, "other")}
    for name, param in model.named_parameters():
        component = spec.component_of(_strip_peft(name)) or "other"
        size = getattr(param, "ds_numel", None) or param.numel()
        if param.requires_grad or ".original_module." not in name:  # PEFT's frozen copy is not a second model
            table[component][1] += size
        if param.requires_grad:
            table[component][0] += size
    return {c: (t, n) for c, (t, n) in table.items() if n}


def format_table(table: dict[str, tuple[int, int]], modules: Mapping[str, Sequence[str]] | None = None) -> str:
    """The table as text; with ``modules`` (component -> module prefixes) a column shows where each part lives."""
    rows = [f"{'component':<10} {'trainable':>12} {'total':>12}" + ("  modules" if modules else "")]
    for component, (trainable, total) in table.items():
        where = f"  {', '.join(modules.get(component, ())) or '-'}" if modules else ""
        rows.append(f"{component:<10} {trainable:>12,} {total:>12,}{where}")
    trainable = sum(t for t, _ in table.values())
    total = sum(n for _, n in table.values())
    rows.append(f"{'all':<10} {trainable:>12,} {total:>12,}  ({100 * trainable / max(total, 1):.2f}% trainable)")
    return "\n".join(rows)


def _strip_peft(name: str) -> str:
    # LoRA weights live under the layer they adapt (...q_proj.lora_A.default.weight) and modules_to_save copies
    # under ...merger.modules_to_save.default.<param>: the prefix match on the stripped name finds the component.
    name = name.removeprefix("base_model.model.")
    for marker in (".modules_to_save.default", ".original_module"):
        name = name.replace(marker, "")
    return name
