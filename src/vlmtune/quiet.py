"""Silence the third-party notices that tell a vlmtune user nothing they can act on, and nothing else.

Each filter names one message of one library, so every other warning (vlmtune's own included) still shows:

- DeepSpeed, imported by accelerate on any machine that has it, announces on stdout that it falls back to the CPU
  accelerator where there is no GPU; vlmtune says what it runs on itself.
- bitsandbytes, imported by PEFT, warns that an optional CPU kernel package for 4-bit matmuls is missing; vlmtune
  runs 4-bit (QLoRA) on CUDA only.
- transformers warns that an image processor falls back to its PIL backend without torchvision; vlmtune supports
  that backend (``models/processor_compat.py``), with the same processing.
- PEFT reads ``model.is_gradient_checkpointing``, which transformers 5 deprecated: a FutureWarning on every
  adapter, raised inside PEFT, not fixable by the caller.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

_LOG_NOISE = {
    "DeepSpeed": "Setting accelerator to CPU",
    "bitsandbytes.backends.cpu.ops": "Failed to load CPU gemm_4bit_forward",
    "transformers.utils.import_utils": "requires torchvision (not installed); falling back to",
}


class _DropMessage(logging.Filter):
    def __init__(self, fragment: str):
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in str(record.msg)


def quiet_third_party() -> None:
    """Install the filters above (idempotent). Loggers need not exist yet: a library that creates one later gets
    the same logger object, filter included."""
    for name, fragment in _LOG_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessage) and f.fragment == fragment for f in logger.filters):
            logger.addFilter(_DropMessage(fragment))
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def quiet_progress_bars() -> None:
    """No progress bars from transformers and the hub client (loading weights, writing shards) where the user asked
    for none (``--no-progress``, ``train.progress: false``): logs and CI output stay one line per fact."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read when the hub client is imported
    if "transformers" in sys.modules:  # already imported: switch its bars off directly
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
