"""Export a LoRA run for serving: a clean PEFT adapter folder with a model card, or the adapter merged into its base.

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
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import safe_open
from transformers import AutoConfig

from .models import FamilySpec, family_of, load_model, load_processor, resolve_dtype

log = logging.getLogger("vlmtune")

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
# Values vLLM accepts for --max-lora-rank; the served adapter's rank must not exceed it.
_VLLM_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def require_adapter(adapter_dir: str | Path) -> Path:
    """The adapter folder, or FileNotFoundError naming what is missing from it."""
    adapter = Path(adapter_dir)
    missing = [name for name in ADAPTER_FILES if not (adapter / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{adapter}: not a PEFT adapter folder (no {', '.join(missing)})")
    return adapter


def export_merged(model_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path,
                  dtype: str | None = None) -> Path:
    """Merge the adapter into the base and write a plain transformers checkpoint (safetensors, processor,
    generation config). ``dtype`` (fp32, bf16, fp16) defaults to the base checkpoint's own."""
    from peft import PeftModel

    adapter = require_adapter(adapter_dir)
    _refuse_non_empty(out_dir)
    spec = family_of(model_dir)
    base = load_model(model_dir, resolve_dtype(dtype) if dtype else _checkpoint_dtype(model_dir))
    architectures = list(base.config.architectures or [])
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out)  # transformers 5 writes safetensors only (no safe_serialization switch)
    # Our loader, so the processor saves without torchvision; the folder still names the real class.
    load_processor(model_dir, spec).save_pretrained(out)
    _check_merged(out, architectures)
    return out


def export_adapter(adapter_dir: str | Path, out_dir: str | Path, run_dir: str | Path | None = None,
                   base_model: str | None = None, spec: FamilySpec | None = None) -> Path:
    """Write a clean adapter folder: adapter_config.json, adapter_model.safetensors and a README.md model card.

    ``base_model`` replaces the adapter's ``base_model_name_or_path`` (e.g. a hub id instead of the training
    machine's path). ``run_dir`` (with config.yaml, metrics.json) fills the card's data, metrics and
    hyperparameters. ``spec`` enables the vLLM check; without it the family is read from a local base folder.
    """
    adapter = require_adapter(adapter_dir)
    _refuse_non_empty(out_dir)
    if run_dir is not None and not Path(run_dir).is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    config = json.loads((adapter / "adapter_config.json").read_text())
    original_base = config.get("base_model_name_or_path")
    if base_model:
        config["base_model_name_or_path"] = base_model
    base = config.get("base_model_name_or_path") or ""
    if _is_local_path(base):
        log.warning("export: the adapter names its base by the local path %s; pass --base-model-name "
                    "(e.g. the hub id) so it loads elsewhere", base)
    spec = spec or _family_from_folder(original_base, base)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    shutil.copyfile(adapter / "adapter_model.safetensors", out / "adapter_model.safetensors")
    problems = check_vllm_compatible(out, spec) if spec else None
    if problems is None:
        log.warning("export: vLLM check skipped (no local base folder to read the model family from)")
    for problem in problems or []:
        log.warning("export: vLLM: %s", problem)
    run = Path(run_dir) if run_dir is not None else None
    (out / "README.md").write_text(model_card(config, out.name, run, problems, spec))
    return out


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


def model_card(config: dict[str, Any], name: str, run_dir: Path | None = None, vllm_problems: list[str] | None = None,
               spec: FamilySpec | None = None) -> str:
    """README.md of an exported adapter: hub front matter, data, metrics, hyperparameters, loading and serving."""
    base = config.get("base_model_name_or_path") or "BASE_MODEL"
    run_config = _read(run_dir, "config.yaml", yaml.safe_load)
    metrics = _read(run_dir, "metrics.json", json.loads)
    family = (spec.name if spec else None) or metrics.get("family")
    tags = [f"base_model:adapter:{base}", "lora", "peft", "vlmtune", "image-text-to-text"]
    tags += [family] if family else []
    front = ["---", "library_name: peft", f"base_model: {json.dumps(base)}", "pipeline_tag: image-text-to-text",
             "tags:", *(f"- {json.dumps(tag)}" for tag in tags), "---"]
    rank = max([config.get("r", 8), *(config.get("rank_pattern") or {}).values()])
    return "\n".join([
        *front, "", f"# {name}", "",
        f"LoRA adapter for `{base}`{f' (family `{family}`)' if family else ''}, fine-tuned with vlmtune."
        + (" It adapts the language model only; the vision tower and projector are the base model's."
           if vllm_problems == [] else ""), "",
        "## Training data", "", *_data_lines(run_dir, run_config), "",
        "## Results", "", *_metric_lines(run_dir, metrics), "",
        "## Hyperparameters", "", *_hyperparameter_lines(config, run_config), "",
        "## Load with PEFT", "", "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForImageTextToText, AutoProcessor", "",
        f"base = AutoModelForImageTextToText.from_pretrained({base!r})",
        f"model = PeftModel.from_pretrained(base, {('path/to/' + name)!r})",
        f"processor = AutoProcessor.from_pretrained({base!r})",
        "```", "",
        "## Serve with vLLM", "", "```",
        f"vllm serve {base} --enable-lora --lora-modules {name}=path/to/{name} --max-lora-rank "
        f"{_vllm_rank(rank)}", "```", "",
        "A request names the adapter as its model:", "", "```",
        f"curl http://localhost:8000/v1/chat/completions -H 'Content-Type: application/json' -d '{_request(name)}'",
        "```", "",
        *_vllm_lines(vllm_problems), "",
    ])


def _request(model: str) -> str:
    content = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
               {"type": "text", "text": "Describe the image."}]
    return json.dumps({"model": model, "messages": [{"role": "user", "content": content}]})


def _data_lines(run_dir: Path | None, run_config: dict) -> list[str]:
    data = run_config.get("data") or {}
    if not data:
        return [_not_recorded(run_dir, "config.yaml")]
    lines = [f"- train: `{data.get('train')}`", f"- validation: `{data.get('val') or 'none'}`",
             f"- format: `{data.get('format', 'auto')}`"]
    for key in ("min_pixels", "max_pixels", "max_length"):
        if data.get(key) is not None:
            lines.append(f"- {key}: {data[key]}")
    return lines


def _metric_lines(run_dir: Path | None, metrics: dict) -> list[str]:
    if not metrics:
        return [_not_recorded(run_dir, "metrics.json")]
    rows = [f"| {key} | {f'{value:.4g}' if isinstance(value, float) else value} |" for key, value in metrics.items()]
    return ["| metric | value |", "|---|---|", *rows]


def _hyperparameter_lines(config: dict, run_config: dict) -> list[str]:
    modules = config.get("target_modules") or []
    modules = [modules] if isinstance(modules, str) else modules
    leaves = sorted({m.rsplit(".", 1)[-1] for m in modules})
    lora, train = run_config.get("lora") or {}, run_config.get("train") or {}
    rows = [
        ("LoRA r / alpha / dropout", f"{config.get('r')} / {config.get('lora_alpha')} / {config.get('lora_dropout')}"),
        ("LoRA targets", (f"{lora['targets']} -> " if "targets" in lora else "")
         + f"{len(modules)} modules ({', '.join(leaves)}); exact paths in adapter_config.json"),
    ]
    if train:
        rows += [
            ("method", train.get("method")),
            ("learning rate", f"{train.get('lr')} ({train.get('scheduler')}, warmup {train.get('warmup_steps')})"),
            ("epochs / max steps", f"{train.get('epochs')} / {train.get('max_steps')}"),
            ("batch size per device x grad accum", f"{train.get('batch_size')} x {train.get('grad_accum')}"),
            ("weight decay / max grad norm", f"{train.get('weight_decay')} / {train.get('max_grad_norm')}"),
            ("seed", train.get("seed")),
            ("dtype", (run_config.get("model") or {}).get("dtype")),
        ]
    return ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]


def _vllm_lines(problems: list[str] | None) -> list[str]:
    how = ("Checked by vlmtune's `check_vllm_compatible`, not by running vLLM: every LoRA tensor must adapt a "
           "language-model q/k/v/o/gate/up/down projection (vLLM matches the tensor names by their last component "
           "after mapping `model.language_model.` to its own `language_model.model.`, and never adds LoRA to the "
           "vision tower or projector); no DoRA, no bias, no `modules_to_save`. The tensor names use transformers' "
           "current layout (`model.language_model.layers...`), which the Qwen-VL weight mappers in vLLM's source "
           "translate; a vLLM release older than that mapping would not find the layers.")
    if problems is None:
        return ["vLLM compatibility was not checked (the model family was unknown at export)."]
    if not problems:
        return [how, "", "Result: no problem found."]
    return [how, "", "Problems found:", "", *(f"- {p}" for p in problems)]


def _not_recorded(run_dir: Path | None, file: str) -> str:
    return f"Not recorded (no {file} in {run_dir})." if run_dir else "Not recorded (exported without its run folder)."


def _read(run_dir: Path | None, name: str, parse) -> dict:
    path = run_dir / name if run_dir else None
    return (parse(path.read_text()) or {}) if path and path.is_file() else {}


def _vllm_rank(rank: int) -> int:
    return next((r for r in _VLLM_RANKS if r >= rank), rank)


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


def _check_merged(out: Path, architectures: list[str]) -> None:
    names = _tensor_names(out, "*.safetensors")
    leftovers = [k for k in names if "lora_" in k or ".base_layer." in k]
    if not names:
        raise RuntimeError(f"{out}: no safetensors weights were written")
    if leftovers:
        raise RuntimeError(f"{out}: merged checkpoint still holds adapter tensors, e.g. {leftovers[0]}")
    saved = json.loads((out / "config.json").read_text()).get("architectures")
    if saved != architectures:
        raise RuntimeError(f"{out}: config.json architectures {saved} differ from the base's {architectures}")


def _checkpoint_dtype(model_dir: str | Path) -> torch.dtype:
    dtype = getattr(AutoConfig.from_pretrained(str(model_dir)), "dtype", None)
    dtype = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def _refuse_non_empty(out_dir: str | Path) -> None:
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"output {out} already exists and is not an empty folder")


def _is_local_path(name: str) -> bool:
    return bool(name) and (Path(name).is_absolute() or name.startswith(".") or Path(name).exists())


def _family_from_folder(*candidates: str | None) -> FamilySpec | None:
    # Only local folders: a hub id would mean a network call just for a check.
    for candidate in candidates:
        if candidate and (Path(candidate) / "config.json").is_file():
            return family_of(candidate)
    return None
