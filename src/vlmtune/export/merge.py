"""Merge a LoRA adapter into its base and write a plain transformers checkpoint."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoConfig

from ..files import make_readable
from ..models import load_model, load_processor, resolve_dtype, spec_for
from .folders import _refuse_non_empty, require_adapter
from .settings import ImageSettings
from .vllm import _tensor_names

log = logging.getLogger("vlmtune")


def export_merged(model_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path,
                  dtype: str | None = None, *, min_pixels: int | None = None, max_pixels: int | None = None,
                  image_size: Sequence[int] | None = None) -> Path:
    """Merge the adapter into the base and write a plain transformers checkpoint (safetensors, processor with its
    video-processor settings, generation config). ``dtype`` (fp32, bf16, fp16) defaults to the base checkpoint's own.

    ``min_pixels`` / ``max_pixels``: the run's pixel limits, saved in the processor so that plain ``AutoProcessor``
    gives images the training resolution. ``image_size`` cannot be a processor setting: a warning says so. All three
    are also recorded in ``SETTINGS_FILE``."""
    from peft import PeftModel

    adapter = require_adapter(adapter_dir)
    _refuse_non_empty(out_dir)
    spec = spec_for(model_dir, check_split=False)
    base = load_model(model_dir, resolve_dtype(dtype) if dtype else _checkpoint_dtype(model_dir))
    architectures = list(base.config.architectures or [])
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out)  # transformers 5 writes safetensors only (no safe_serialization switch)
    # Our loader, so the processor saves without torchvision with the base's video settings and the real class name.
    load_processor(model_dir, spec, min_pixels, max_pixels).save_pretrained(out)
    image = ImageSettings.of(min_pixels, max_pixels, image_size)
    image.write(out)
    if note := image.stretch_note():
        log.warning("export: %s", note)
    _check_merged(out, architectures)
    make_readable(out)  # safetensors writes the weights 0600
    return out


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
