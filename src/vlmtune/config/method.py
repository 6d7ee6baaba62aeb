"""``train.method``: how a run trains, and what that means for what it saves and how its weights load again.

Code elsewhere asks a :class:`Method` what it needs (``trains_adapter``, ``quantized``, ``dora``, ...) and never
compares the name: a new method is then one member here with its answers, not a hunt for string tests.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path


class Method(StrEnum):
    """A training method. The members are strings, so YAML, ``train.method=...`` overrides and the config.yaml a
    run writes keep reading and writing ``lora``, ``dora``, ``qlora`` and ``full``."""

    LORA = "lora"
    """Low-rank adapters on ``lora.targets``; the base weights stay frozen."""
    DORA = "dora"
    """Weight-decomposed LoRA: LoRA plus a trained magnitude per output of each adapted layer."""
    QLORA = "qlora"
    """LoRA over a base whose language model is loaded in 4 bits (bitsandbytes, CUDA only)."""
    FULL = "full"
    """Every weight of the components not frozen trains; no adapter."""

    @property
    def trains_adapter(self) -> bool:
        """Whether the run trains a PEFT adapter, saved as ``RUN/adapter``. Evaluating, predicting with or exporting
        it loads the base checkpoint (``model.path``) and the adapter folder on top; otherwise ``RUN/model`` is a
        whole checkpoint that loads alone."""
        return self is not Method.FULL

    @property
    def quantized(self) -> bool:
        """Whether the base's language model is loaded in 4 bits (needs bitsandbytes and a CUDA GPU)."""
        return self is Method.QLORA

    @property
    def dora(self) -> bool:
        """Whether the adapters are weight-decomposed (PEFT's ``use_dora``)."""
        return self is Method.DORA

    @property
    def weights_folder(self) -> str:
        """The folder of the run directory the trained weights are saved to: ``adapter`` or ``model``."""
        return "adapter" if self.trains_adapter else "model"

    @property
    def separate_base(self) -> bool:
        """Whether comparing with the base model loads the starting checkpoint a second time: a full fine-tune
        changed the weights themselves, while an adapter is simply switched off to give the base."""
        return not self.trains_adapter

    @property
    def unquantized(self) -> Method:
        """The same method on full-precision weights: the same modules train and the same counts come out, only the
        storage of the frozen weights differs (used where no CUDA GPU can load 4-bit weights)."""
        return Method.LORA if self.quantized else self

    def weights_dir(self, run_dir: Path) -> Path:
        """Where a run in ``run_dir`` saves what it trained."""
        return run_dir / self.weights_folder

    def adapter_dir(self, run_dir: Path) -> Path | None:
        """The run's adapter folder, or None for a method that trains no adapter."""
        return self.weights_dir(run_dir) if self.trains_adapter else None
