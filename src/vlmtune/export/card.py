"""README.md model card of an exported adapter: hub front matter, data, metrics, hyperparameters, loading, serving."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import yaml

from ..models import FamilySpec
from .settings import ImageSettings
from .vllm import _VLLM_RANKS


def model_card(config: dict[str, Any], name: str, run_dir: Path | None = None, vllm_problems: list[str] | None = None,
               spec: FamilySpec | None = None, image: ImageSettings | None = None) -> str:
    """README.md of an exported adapter: hub front matter, data, metrics, hyperparameters, the image settings it was
    trained with (``image``; None: not recorded), loading and serving."""
    base = config.get("base_model_name_or_path") or "BASE_MODEL"
    kwargs = image.processor_kwargs() if image else {}
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
        "## Image settings", "",
        *(image.card_lines(base) if image else [_not_recorded(run_dir, "config.yaml")]), "",
        "## Load with PEFT", "", "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForImageTextToText, AutoProcessor", "",
        f"base = AutoModelForImageTextToText.from_pretrained({base!r})",
        f"model = PeftModel.from_pretrained(base, {('path/to/' + name)!r})",
        f"processor = AutoProcessor.from_pretrained({base!r}{''.join(f', {k}={v}' for k, v in kwargs.items())})",
        "```", "",
        "## Serve with vLLM", "", "```",
        # Quoted for the shell: a copied command must keep a base path or name with spaces or quotes whole.
        f"vllm serve {shlex.quote(base)} --enable-lora --lora-modules {shlex.quote(f'{name}=path/to/{name}')} "
        f"--max-lora-rank {_vllm_rank(rank)}"
        + (f" --mm-processor-kwargs {shlex.quote(json.dumps(kwargs))}" if kwargs else ""), "```", "",
        "A request names the adapter as its model:", "", "```",
        "curl http://localhost:8000/v1/chat/completions -H 'Content-Type: application/json' -d "
        + shlex.quote(_request(name)),
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
    for key in ("min_pixels", "max_pixels", "image_size", "max_length"):
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
            ("learning rate", f"{train.get('lr')} ({train.get('scheduler')}, warmup "
             + (f"{train['warmup_ratio']:.0%} of the steps)" if train.get("warmup_ratio")
                else f"{train.get('warmup_steps')} steps)")),
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
