"""Can vLLM serve an exported adapter as trained? Checked against the adapter's tensor names.

vLLM and the adapter's module names (read from vLLM's source, ``vllm/lora/lora_model.py``, ``lora/utils.py``,
``lora/model_manager.py`` and ``model_executor/models/qwen2_5_vl.py``; vLLM itself is not run here). For a
safetensors adapter vLLM takes the tensor names, not ``target_modules``, as the truth: it strips
``base_model.model.``, maps the rest with the model's ``hf_to_vllm_mapper`` (``model.language_model.`` ->
``language_model.model.`` for the Qwen-VL families) and accepts a tensor when the last component of its module
name is one of the model's LoRA layers (q/k/v/o_proj, gate/up/down_proj, packed into qkv_proj and gate_up_proj).
Vision-tower and projector modules never receive LoRA in vLLM. So the exact language-model paths vlmtune trains on
are served as they are, and the export keeps them: rewriting them as bare leaf names would not be equivalent for
Qwen2.5-VL, whose vision blocks also have gate/up/down_proj, and PEFT would then adapt those too.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from ..models import FamilySpec
from .folders import require_adapter

# Values vLLM accepts for --max-lora-rank; the served adapter's rank must not exceed it.
_VLLM_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def check_vllm_compatible(adapter_dir: str | Path, spec: FamilySpec) -> list[str]:
    """What would stop vLLM from serving the adapter as trained; an empty list when nothing does.

    vLLM puts LoRA on the language model's q/k/v/o and gate/up/down projections only: weights elsewhere (vision
    tower, projector, lm_head, full tensors from ``modules_to_save``) are refused or silently dropped.
    """
    adapter = require_adapter(adapter_dir)
    config = json.loads((adapter / "adapter_config.json").read_text())
    problems = []
    if config.get("peft_type", "LORA") != "LORA":
        problems.append(f"peft_type {config['peft_type']}: vLLM serves LoRA adapters only")
    if config.get("use_dora"):
        problems.append("use_dora: vLLM does not serve DoRA adapters (export with --merge instead)")
    if config.get("modules_to_save"):
        problems.append(f"modules_to_save {config['modules_to_save']}: vLLM loads no full weights from an adapter "
                        "(export with --merge instead)")
    if config.get("bias", "none") != "none":
        problems.append(f"bias {config['bias']!r}: vLLM serves adapters without bias only")

    targets = spec.language_lora_targets
    where: dict[str, list[str]] = {}
    for key in _tensor_names(adapter):
        module = _lora_module(key)
        if module is None:
            kind = "that are not LoRA weights (full tensors, e.g. from modules_to_save)"
        elif spec.component_of(module) in ("vision", "projector"):
            kind = f"on the {spec.component_of(module)} (vLLM adds LoRA to the language model only)"
        elif spec.component_of(module) != "language" or module.rsplit(".", 1)[-1] not in targets:
            kind = f"outside the language model's {'/'.join(targets)} layers"
        else:
            continue
        where.setdefault(kind, []).append(module or key)
    problems += [f"{len(names)} tensor(s) {kind}, e.g. {names[0]}" for kind, names in where.items()]
    return problems


def _tensor_names(folder: Path, pattern: str = "adapter_model.safetensors") -> list[str]:
    names = []
    for file in sorted(folder.glob(pattern)):
        with safe_open(str(file), framework="pt") as f:
            names += list(f.keys())
    return names


def _lora_module(key: str) -> str | None:
    # base_model.model.<module>.lora_A.weight (also lora_A.<adapter>.weight, lora_embedding_A, lora_magnitude_vector)
    parts = key.removeprefix("base_model.model.").split(".")
    index = next((i for i, part in enumerate(parts) if part.startswith("lora_")), None)
    return ".".join(parts[:index]) if index else None
