"""Faster kernels, used when they are installed and apply, never required: FlashAttention 2 or PyTorch SDPA for
attention, Liger's fused Triton kernels (RMSNorm, RoPE, SwiGLU) on CUDA, patch-embedding convolutions as one
matrix multiply. Each choice is logged once per load."""

from __future__ import annotations

import importlib.util
import logging
import types

import torch
from torch import nn

log = logging.getLogger("vlmtune")


def fast_kernels(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """:func:`fast_attention` and :func:`patch_convs_as_matmuls` on ``model``, in place; returns it."""
    patched = patch_convs_as_matmuls(model)
    if patched:
        log.info("patch embedding: %d convolution(s) run as one matrix multiply", patched)
    return fast_attention(model, dtype)


def fast_attention(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Switch ``model`` to FlashAttention 2 on CUDA in bf16/fp16 when ``flash_attn`` is installed and every part of
    the model supports it; otherwise it keeps what transformers chose at load (SDPA where supported, CPU included).
    """
    current = getattr(model.config, "_attn_implementation", None)
    why = ("no CUDA" if not torch.cuda.is_available() else "fp32 weights" if dtype not in _HALF
           else "flash-attn not installed" if importlib.util.find_spec("flash_attn") is None else None)
    if why is None:
        try:
            model.set_attn_implementation("flash_attention_2")
            log.info("attention: flash_attention_2")
            return model
        except (ValueError, ImportError) as e:  # a part of the model without FlashAttention support
            why = f"FlashAttention not applicable: {str(e).splitlines()[0]}"
    log.info("attention: %s (%s)", current, why)
    return model


_HALF = (torch.bfloat16, torch.float16)


def patch_convs_as_matmuls(model: torch.nn.Module) -> int:
    """Make each convolution whose stride equals its kernel (a patch embedding) compute as a single matrix multiply
    when its input is exactly one kernel in size, and return how many were changed.

    Qwen-VL vision towers (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) hand their ``Conv3d`` pre-cut patches of exactly that
    size: the convolution is then ``patches x (C*T*P*P)`` times the flattened kernel, the same sums in another
    order, but Conv3d kernels are slow for it (on CPU; and on CUDA in some cuDNN versions, e.g. torch 2.9's).
    Inputs of any other size (a whole image under a ViT's Conv2d) take the convolution as before.
    """
    count = 0
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Conv3d) and module.stride == module.kernel_size and module.groups == 1 \
                and not any(module.padding) and set(module.dilation) == {1} and module.padding_mode == "zeros":
            module.forward = types.MethodType(_patch_forward, module)
            count += 1
    return count


def _patch_forward(self: nn.Conv2d | nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    if tuple(x.shape[2:]) != tuple(self.kernel_size):
        return type(self).forward(self, x)
    out = nn.functional.linear(x.reshape(x.shape[0], -1), self.weight.reshape(self.out_channels, -1), self.bias)
    return out.view(x.shape[0], self.out_channels, *[1] * len(self.kernel_size))


def use_liger_kernels() -> bool:
    """Whether the Trainer should patch Liger kernels into the model (``TrainingArguments.use_liger_kernel``)."""
    if not torch.cuda.is_available():
        return False
    if importlib.util.find_spec("liger_kernel") is None:
        log.info("Liger kernels: not installed (pip install liger-kernel for fused RMSNorm/RoPE/SwiGLU on CUDA)")
        return False
    log.info("Liger kernels: on")
    return True
