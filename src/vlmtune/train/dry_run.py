"""``vlmtune train --dry-run``: what a config would train, without training: the trainable parameters per component
and one sample of ``data.train`` as the model sees it."""

from __future__ import annotations

import torch

from ..config import Config
from ..data.show import dry_run_sample
from ..models import spec_for
from ..models.infer import is_inferred, unregistered_warning
from .lora import check_targets, format_table, parameter_table
from .model import build_model


def dry_run_report(cfg: Config) -> str:
    """The model, its method and the table of trainable parameters, one sample of ``data.train``, and for a model
    of no registered family the warning that its spec was read from the checkpoint."""
    spec = spec_for(cfg.model.path, cfg.model.components)
    method, note = cfg.train.method, ""
    if method.quantized and not torch.cuda.is_available():
        # Same modules, same trainable counts: only the frozen weights' storage differs.
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"method": method.unquantized})})
        note = " (no CUDA here: counted without 4-bit quantisation, which changes no trainable count)"
    check_targets(cfg, spec)
    model = build_model(cfg, spec)
    shown = spec.components if is_inferred(spec) or cfg.model.components else None
    parts = [f"{cfg.model.path} (family {spec.name}), method {method}{note}\n"
             + format_table(parameter_table(model, spec), shown), dry_run_sample(cfg, spec)]
    if is_inferred(spec):
        parts.append(unregistered_warning(spec))
    return "\n".join(parts)
