"""The model a run trains: loaded (QLoRA: its language model in 4 bits), with LoRA adapters or made fully
trainable, the frozen components frozen, and under a ZeRO-3 launch loaded straight into its shards or whole."""

from __future__ import annotations

import contextlib
import logging

import torch

from ..config import Config
from ..models import FamilySpec, load_model, resolve_dtype, spec_for
from ..models.load import DTYPES
from .lora import apply_lora, format_table, parameter_table, prepare_full

log = logging.getLogger("vlmtune")



def training_model(cfg: Config, spec: FamilySpec, world_size: int) -> torch.nn.Module:
    """:func:`build_model` for a run, after its TrainingArguments; logs the trainable parameters.

    Under a ZeRO-3 launch the arguments make transformers load each weight straight into its shards (zero.Init),
    so no process holds the whole model. Not for full fine-tuning: transformers 5.24 saves a model loaded that way
    under other weight names (model.model.layers...), which would not load.
    """
    with zero3_init_off() if cfg.train.method == "full" else contextlib.nullcontext():
        model = build_model(cfg, spec)
    if any(hasattr(p, "ds_numel") for p in model.parameters()):
        log.info("weights partitioned over the %d processes as they loaded (ZeRO-3)", world_size)
    log.info("trainable parameters (%s, family %s):\n%s", cfg.train.method, spec.name,
             format_table(parameter_table(model, spec)))
    return model


def build_model(cfg: Config, spec: FamilySpec | None = None, base: torch.nn.Module | None = None) -> torch.nn.Module:
    """The model with exactly the weights ``cfg`` trains left trainable (QLoRA: the language model in 4 bits).

    ``base``: an already built model to prepare instead of loading ``cfg.model.path`` (random-init benchmarks).
    """
    spec = spec or spec_for(cfg.model.path, cfg.model.components)
    method = cfg.train.method
    quantization = quantization_config(cfg, spec) if method == "qlora" else None
    model = base if base is not None else load_model(cfg.model.path, resolve_dtype(cfg.model.dtype), quantization)
    if method == "full":
        return prepare_full(model, spec, cfg.freeze)
    if quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, cfg.train.gradient_checkpointing)
    model = continued_adapter(model, cfg.model.adapter) if cfg.model.adapter else \
        apply_lora(model, spec, cfg.lora, method, cfg.freeze)
    if cfg.train.gradient_checkpointing:
        # Frozen embeddings give activations without grad; checkpointed blocks need their inputs to carry one.
        model.enable_input_require_grads()
    return model


def continued_adapter(model: torch.nn.Module, adapter: str) -> torch.nn.Module:
    """``model`` with the LoRA adapter saved in folder ``adapter`` loaded as trainable weights (``model.adapter``:
    a run that continues another's adapter, e.g. reinforcement fine-tuning after supervised fine-tuning)."""
    from pathlib import Path

    from peft import PeftModel

    from ..config import ConfigError

    if not (Path(adapter) / "adapter_config.json").is_file():
        raise ConfigError(f"model.adapter: {adapter} is not an adapter folder (no adapter_config.json in it); "
                          "point it at RUN/adapter of a LoRA run")
    return PeftModel.from_pretrained(model, adapter, is_trainable=True)


def quantization_config(cfg: Config, spec: FamilySpec):
    """bitsandbytes 4-bit config for QLoRA: the language model quantised, the vision tower, projector and head
    kept in full precision (quantising the small vision tower saves little memory and costs accuracy)."""
    from transformers import BitsAndBytesConfig

    q = cfg.quantization
    kept = [c for c in ("vision", "projector") if c not in q.components] + ["lm_head"]
    keep = [prefix for c in kept for prefix in spec.components.get(c, ())]
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=q.quant_type, bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=DTYPES[q.compute_dtype], llm_int8_skip_modules=keep)


def dtype_name(model: torch.nn.Module) -> str:
    """The model's parameter dtypes, e.g. ``float32`` or ``bfloat16/uint8`` (QLoRA)."""
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
    return "/".join(dtypes)


def zero3_enabled() -> bool:
    """Whether this process runs under a DeepSpeed ZeRO-3 config (weights sharded over the processes)."""
    from transformers.integrations import deepspeed

    return deepspeed.is_deepspeed_zero3_enabled()


@contextlib.contextmanager
def zero3_init_off():
    """Models loaded in the block are whole, even in a ZeRO-3 run: transformers would otherwise partition them
    at load (``zero.Init``), and outside a DeepSpeed engine nothing gathers the pieces back for a forward."""
    from transformers.integrations import deepspeed

    if not zero3_enabled():
        yield
        return
    ref = deepspeed._hf_deepspeed_config_weak_ref
    deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        deepspeed._hf_deepspeed_config_weak_ref = ref
