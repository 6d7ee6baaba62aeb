"""Which server runs: vlmtune's own (transformers) or ``vllm serve``, and the ``vllm serve`` command line."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ConfigError

# Architectures (config.json "architectures") of the families vlmtune knows that vLLM's model list implements, with
# LoRA on the language model. vLLM is not run here; a family missing from this set is served by transformers.
VLLM_ARCHITECTURES = frozenset({
    "Gemma3ForConditionalGeneration", "Idefics3ForConditionalGeneration", "InternVLForConditionalGeneration",
    "LlavaForConditionalGeneration", "LlavaOnevisionForConditionalGeneration", "Qwen2VLForConditionalGeneration",
    "Qwen2_5_VLForConditionalGeneration", "Qwen3VLForConditionalGeneration", "Qwen3_5ForConditionalGeneration",
    "SmolVLMForConditionalGeneration",
})
_VLLM_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@dataclass(frozen=True)
class Choice:
    backend: str
    """``transformers`` or ``vllm``."""
    reason: str

    def line(self) -> str:
        return f"backend: {self.backend} ({self.reason})"


@dataclass(frozen=True)
class VllmPlan:
    """What ``vllm serve`` is asked to serve, and what it cannot reproduce of the run's settings."""

    model: str
    served_name: str
    adapters: dict[str, str]
    architectures: tuple[str, ...]
    dtype: str
    processor_kwargs: dict[str, int]
    adapter_problems: dict[str, list[str]]
    differences: list[str]
    """Settings the transformers backend honours and vLLM would not (data.system, data.image_size)."""


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def choose(requested: str, plan: VllmPlan) -> Choice:
    """The backend for ``--backend requested``; ``vllm`` where it cannot serve ``plan`` is a :class:`ConfigError`."""
    if requested == "transformers":
        return Choice("transformers", "--backend transformers")
    problems = _vllm_problems(plan)
    if requested == "vllm":
        if problems:
            raise ConfigError(f"--backend vllm: {problems[0]}")
        return Choice("vllm", "--backend vllm")
    if problems:
        return Choice("transformers", problems[0])
    return Choice("vllm", "vllm is installed and serves this model family")


def _vllm_problems(plan: VllmPlan) -> list[str]:
    problems = []
    if not vllm_installed():
        problems.append("vllm is not installed")
    if not VLLM_ARCHITECTURES.intersection(plan.architectures):
        problems.append(f"vLLM does not serve {'/'.join(plan.architectures) or 'this model'} with LoRA")
    for name, found in plan.adapter_problems.items():
        problems.append(f"vLLM cannot serve adapter {name!r} as trained: {found[0]}")
    problems += [f"vLLM would not apply {d}" for d in plan.differences]
    return problems


def vllm_command(plan: VllmPlan, host: str, port: int, api_key: str | None = None,
                 local_root: str | Path | None = None, max_batch_size: int | None = None) -> list[str]:
    """The ``vllm serve`` argv for ``plan``."""
    from ..export.card import _vllm_rank

    argv = [_vllm_executable(), "serve", plan.model, "--served-model-name", plan.served_name,
            "--host", host, "--port", str(port)]
    if plan.adapters:
        rank = max(_lora_rank(path) for path in plan.adapters.values())
        argv += ["--enable-lora", "--lora-modules", *(f"{n}={p}" for n, p in plan.adapters.items()),
                 "--max-loras", str(len(plan.adapters)), "--max-lora-rank", str(_vllm_rank(rank))]
    if plan.dtype in _VLLM_DTYPES:
        argv += ["--dtype", _VLLM_DTYPES[plan.dtype]]
    if plan.processor_kwargs:
        argv += ["--mm-processor-kwargs", json.dumps(plan.processor_kwargs)]
    if local_root:
        argv += ["--allowed-local-media-path", str(Path(local_root).resolve())]
    if max_batch_size:
        argv += ["--max-num-seqs", str(max_batch_size)]
    if api_key:
        argv += ["--api-key", api_key]
    return argv


def _vllm_executable() -> str:
    # The environment's own `vllm` first: the one installed beside this Python.
    beside = Path(sys.executable).parent / "vllm"
    return str(beside) if beside.is_file() else shutil.which("vllm") or "vllm"


def _lora_rank(adapter: str) -> int:
    config = json.loads((Path(adapter) / "adapter_config.json").read_text())
    return max([config.get("r", 8), *(config.get("rank_pattern") or {}).values()])
