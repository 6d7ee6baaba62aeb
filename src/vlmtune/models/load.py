"""Load a model and its processor from a hub id or a local folder; the same code for a tiny or a 7B model."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForImageTextToText

from ..core.errors import ModelError, UnknownFamilyError
from .infer import infer_spec, with_components
from .kernels import fast_kernels
from .locate import check_model_path, load_error
from .processor_compat import carry_video_settings, processor_class
from .registry import get_family
from .spec import FamilySpec

# The dtype names a config may give (model.dtype, quantization.compute_dtype), besides auto.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def spec_for(model: str | Path, components: Mapping[str, Sequence[str]] | None = None,
             check_split: bool = True) -> FamilySpec:
    """The spec of a checkpoint (hub id or folder): its family's, by the ``config.json`` model_type
    (:func:`~vlmtune.models.registry.get_family`), or for a model_type with no registry entry a spec read from the
    checkpoint itself (:mod:`vlmtune.models.infer`). The one way from a model path to a spec.

    ``components`` (the run config's ``model.components``) replaces the module prefixes of the components it
    names. ``check_split``: refuse an unregistered model whose split into components is uncertain, rather than
    guess it, as training must; prediction, evaluation, export and serving pass False."""
    config = model_config(model)
    try:
        spec = get_family(config.model_type)
    except UnknownFamilyError:
        return infer_spec(model, config, components, check_split)
    return with_components(spec, config, components) if components else spec


def model_config(model: str | Path) -> Any:
    """The checkpoint's transformers config; :class:`~vlmtune.models.locate.ModelPathError` (one line naming
    model.path) where ``model`` is no checkpoint this machine can read."""
    check_model_path(model)
    try:
        return AutoConfig.from_pretrained(str(model))
    except OSError as e:
        raise load_error(model, e) from None


def resolve_dtype(name: str) -> torch.dtype:
    """``auto`` -> bf16 on a GPU that supports it, else fp32 (CPU and older GPUs train in fp32)."""
    if name == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use one of auto, {', '.join(DTYPES)}") from None


def load_processor(model: str | Path, spec: FamilySpec, min_pixels: int | None = None,
                   max_pixels: int | None = None) -> Any:
    """Load the checkpoint's processor, with the image pixel limits overridden where given."""
    kwargs: dict[str, Any] = {}
    if (min_pixels is not None or max_pixels is not None) and not spec.resizes_within_pixel_range:
        # Tiling families size images by tiles (size / max_image_size); a pixel cap would be silently ignored.
        raise ModelError(f"data.min_pixels / data.max_pixels do not apply to family {spec.name}: its processor "
                         "sizes images by tiles; leave them unset and set the image size in the checkpoint's "
                         "preprocessor_config.json")
    if min_pixels is not None:
        kwargs["min_pixels"] = min_pixels
    if max_pixels is not None:
        kwargs["max_pixels"] = max_pixels
    # With the model's config, transformers falls back to the image processor it now maps the model_type to where the
    # folder names a class it no longer has (older Qwen2.5-VL folders: Qwen2_5_VLImageProcessor); the folder's own
    # settings (its pixel limits) still apply.
    config = model_config(model)
    processor = processor_class(spec.processor_class).from_pretrained(str(model), config=config, **kwargs)
    return carry_video_settings(processor, model, spec.video_processor_class, min_pixels, max_pixels)


def load_model(model: str | Path, dtype: torch.dtype = torch.float32, quantization_config: Any = None,
               device_map: Any = None) -> torch.nn.Module:
    """Load the checkpoint's model with the generic image-text-to-text auto class (``quantization_config``: e.g.
    bitsandbytes 4-bit for QLoRA, placed on the GPU). ``device_map``: where the weights load (transformers' own
    argument, e.g. :func:`inference_device_map`); None: the CPU. Attention (FlashAttention 2 or SDPA) and patch
    embeddings as :func:`.kernels.fast_kernels` picks for the machine."""
    if quantization_config is not None:
        return fast_kernels(AutoModelForImageTextToText.from_pretrained(
            str(model), dtype=dtype, quantization_config=quantization_config,
            device_map={"": int(os.environ.get("LOCAL_RANK", "0"))}), dtype)  # each data-parallel process on its GPU
    placed = {"device_map": device_map} if device_map is not None else {}
    return fast_kernels(AutoModelForImageTextToText.from_pretrained(str(model), dtype=dtype, **placed), dtype)


def inference_device_map() -> str | None:
    """``device_map`` for evaluation and prediction: the GPUs where there are any (a model larger than one GPU
    is split over them), else None (the CPU)."""
    return "auto" if torch.cuda.is_available() else None


def load_for_inference(model_path: str, dtype: str, adapter: str | None = None):
    """The model (with ``adapter``) as a run holds it: ``model.dtype`` resolved as training resolves it, on the
    GPU where there is one."""
    model = load_model(model_path, resolve_dtype(dtype), device_map=inference_device_map())
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    return model
