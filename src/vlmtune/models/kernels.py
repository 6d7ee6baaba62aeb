"""Faster kernels, used when they are installed and apply, never required: FlashAttention 2 or PyTorch SDPA for
attention, Liger's fused Triton kernels (RMSNorm, RoPE, SwiGLU) on CUDA. Each choice is logged once per load."""

from __future__ import annotations

import importlib.util
import logging

import torch
import transformers

log = logging.getLogger("vlmtune")


def attention_implementation(architecture: str | None, dtype: torch.dtype) -> str | None:
    """``attn_implementation`` for ``from_pretrained`` of the model class named ``architecture``.

    FlashAttention 2 on CUDA in bf16/fp16 when ``flash_attn`` is installed and the class supports it; otherwise
    SDPA where the class supports it (CPU included); None (transformers' own default) for classes with neither.
    """
    cls = getattr(transformers, architecture, None) if architecture else None
    if cls is None:
        return None
    half = dtype in (torch.bfloat16, torch.float16)
    if getattr(cls, "_supports_flash_attn", False) and torch.cuda.is_available() and half \
            and importlib.util.find_spec("flash_attn") is not None:
        choice, why = "flash_attention_2", "flash-attn installed"
    elif getattr(cls, "_supports_sdpa", False):
        choice = "sdpa"
        why = ("no CUDA" if not torch.cuda.is_available() else "fp32 weights" if not half
               else "flash-attn not installed")
    else:
        return None
    log.info("attention: %s (%s)", choice, why)
    return choice


def use_liger_kernels() -> bool:
    """Whether the Trainer should patch Liger kernels into the model (``TrainingArguments.use_liger_kernel``)."""
    if not torch.cuda.is_available():
        return False
    if importlib.util.find_spec("liger_kernel") is None:
        log.info("Liger kernels: not installed (pip install liger-kernel for fused RMSNorm/RoPE/SwiGLU on CUDA)")
        return False
    log.info("Liger kernels: on")
    return True
