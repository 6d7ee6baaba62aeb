"""Published dense bf16 tensor-core peaks and memory of common training GPUs (no sparsity), for MFU and the
estimate. Sources: NVIDIA's datasheets for each card."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    name: str
    bf16_tflops: float
    """Dense bf16 peak, TFLOP/s."""
    memory_gib: float


# Variants before the plain name: a device name holding "H100" and "PCIe" is an H100 PCIe.
GPUS = (
    Gpu("B200", 2250, 180), Gpu("H200", 989, 141), Gpu("H100 PCIe", 756, 80), Gpu("H100 NVL", 835, 94),
    Gpu("H100", 989, 80), Gpu("H20", 148, 96), Gpu("A100", 312, 80), Gpu("L40S", 362, 48), Gpu("L40", 181, 48),
    Gpu("L4", 121, 24), Gpu("A10", 125, 24),
)


def find_gpu(name: str) -> Gpu | None:
    """The table entry a device name (``torch.cuda.get_device_name()``, or a short name like ``h100``) matches:
    every word of the entry's name is a word of the device name ("NVIDIA A100-SXM4-80GB" is an A100)."""
    words = set(name.upper().replace("-", " ").replace("_", " ").split())
    return next((gpu for gpu in GPUS if set(gpu.name.upper().split()) <= words), None)


def gpu_names() -> list[str]:
    return [g.name for g in GPUS]
