"""Load a model and its processor from a hub id or a local folder; the same code for a tiny or a 7B model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForImageTextToText

from .processor_compat import processor_class
from .registry import get_family
from .spec import FamilySpec

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def family_of(model: str | Path) -> FamilySpec:
    """Spec of the family a checkpoint belongs to, from its ``config.json`` model_type."""
    return get_family(AutoConfig.from_pretrained(str(model)).model_type)


def resolve_dtype(name: str) -> torch.dtype:
    """``auto`` -> bf16 on a GPU that supports it, else fp32 (CPU and older GPUs train in fp32)."""
    if name == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use one of auto, {', '.join(_DTYPES)}") from None


def load_processor(model: str | Path, spec: FamilySpec, min_pixels: int | None = None,
                   max_pixels: int | None = None) -> Any:
    """Load the checkpoint's processor, with the image pixel limits overridden where given."""
    kwargs: dict[str, Any] = {}
    if min_pixels is not None:
        kwargs["min_pixels"] = min_pixels
    if max_pixels is not None:
        kwargs["max_pixels"] = max_pixels
    return processor_class(spec.processor_class).from_pretrained(str(model), **kwargs)


def load_model(model: str | Path, dtype: torch.dtype = torch.float32, quantization_config: Any = None
               ) -> torch.nn.Module:
    """Load the checkpoint's model with the generic image-text-to-text auto class (``quantization_config``: e.g.
    bitsandbytes 4-bit for QLoRA, placed on the GPU)."""
    if quantization_config is not None:
        return AutoModelForImageTextToText.from_pretrained(
            str(model), dtype=dtype, quantization_config=quantization_config, device_map={"": 0})
    return AutoModelForImageTextToText.from_pretrained(str(model), dtype=dtype)
