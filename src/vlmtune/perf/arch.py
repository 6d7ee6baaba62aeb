"""Model architectures without their weights: a config from the checkpoint or from a ``config.json`` of a bigger
sibling (e.g. Qwen2.5-VL-7B's, in ``benchmarks/``), built with random weights for benchmarks (speed and memory do
not depend on the values) or on the meta device for counting."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForImageTextToText

from ..config import Config, Method
from ..core.errors import ConfigError
from ..models import resolve_dtype
from ..models.kernels import fast_kernels
from ..train.model import build_model


def random_model(cfg: Config, spec, architecture: str | bool = True, kernels: bool = True) -> torch.nn.Module:
    """``cfg``'s model built from a config with random weights, prepared for its training method (``kernels``:
    with vlmtune's kernel choices, as ``load_model`` makes them)."""
    config = architecture_config(cfg.model.path, None if architecture is True else architecture)
    dtype = resolve_dtype(cfg.model.dtype)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # a 7B model initialises in seconds on GPU
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    return build_model(cfg, spec, base=fast_kernels(model, dtype) if kernels else model)


def architecture_config(model_path: str, architecture: str | None = None):
    """The config of ``model_path``, or ``architecture``'s (a config.json or a folder) with ``model_path``'s
    special-token ids, so the processor's image tokens are the ones the model looks for."""
    own = AutoConfig.from_pretrained(model_path)
    if architecture is None:
        return own
    config = AutoConfig.from_pretrained(architecture)
    if config.model_type != own.model_type:
        raise ConfigError(f"architecture {architecture} is a {config.model_type} config, but {model_path} is "
                          f"{own.model_type}: the processor must be of the same family")
    for key, value in own.to_diff_dict().items():
        if key.endswith(("_token_id", "_token_index")):
            setattr(config, key, value)
    return config


def meta_model(cfg: Config, spec, config, dtype: torch.dtype, method: Method) -> torch.nn.Module:
    """The model as ``method`` trains it, on the meta device: shapes and counts only, no memory, no weights."""
    with torch.device("meta"):
        base = AutoModelForImageTextToText.from_config(config, dtype=dtype)
        run = cfg.model_copy(update={"train": cfg.train.model_copy(update={"method": method})})
        return build_model(run, spec, base=base)
