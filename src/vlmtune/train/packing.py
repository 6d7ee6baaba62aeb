"""``train.packing``: which families can pack, the position ids of a packed sample, and the model-side part.

A family packs when its spec says so (``FamilySpec.packing``, set where a packed row was measured to give every
sample its own loss and gradients): its image features are computed per image and put in place by token order, and
its language model reads the sample boundaries from restarting position ids. Qwen-VL families take 3-D M-RoPE
positions that depend on each image's grid; they are computed per sample by the model's own ``get_rope_index``, as
the model would for the sample alone, and prefixed by a text row restarting at 0 that marks the boundaries
(transformers' convention for packed Qwen-VL input: ``position_ids`` of shape (4, 1, L)).

Layers that mix tokens without an attention mask (Qwen3.5's Gated DeltaNet linear attention and its causal
convolution, whose state would flow from one sample into the next) are listed in
``FamilySpec.packing_per_sample_modules``; :func:`split_per_sample` makes them run on each sample's span alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from ..config import Config
from ..core.errors import ConfigError
from ..data.pack import PackingCollator, Positions, text_positions
from ..models import FamilySpec

log = logging.getLogger("vlmtune")


def check_packing(cfg: Config, spec: FamilySpec) -> None:
    """Refuse ``train.packing`` for a family that cannot pack, in one line saying why."""
    if cfg.train.packing and not spec.packing:
        raise ConfigError(f"train.packing: {spec.name} cannot pack samples into one row (its attention "
                          "does not keep packed samples apart); set train.packing: false")


def packing_collator(model: torch.nn.Module, spec: FamilySpec,
                     placeholder_image: dict[str, torch.Tensor] | None = None) -> PackingCollator:
    """The collator of packed batches for ``model``, whose per-sample modules (``spec``) are made to run on each
    sample's span (:func:`split_per_sample`)."""
    split = split_per_sample(model, spec.packing_per_sample_modules)
    if split:
        log.info("packing: %d token-mixing layers without an attention mask run on each sample separately", split)
    return PackingCollator(model_positions(model), placeholder_image)


def model_positions(model: torch.nn.Module) -> Positions:
    """Per-sample position ids for ``model``: M-RoPE rows (text, temporal, height, width) from the module that
    owns ``get_rope_index``; plain 0 .. length - 1 for a model without one."""
    owner = next((m for m in model.modules() if hasattr(m, "get_rope_index")), None)
    if owner is None:
        return text_positions
    return _MropePositions(owner.get_rope_index)


class _MropePositions:
    """``get_rope_index`` on one sample alone (no padding, no mask), its text row 0 .. length - 1 put first."""

    def __init__(self, rope_index: Callable[..., tuple[torch.Tensor, torch.Tensor]]):
        self.rope_index = rope_index

    def __call__(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = features["input_ids"]
        text = torch.arange(len(ids))[None]
        types = features.get("mm_token_type_ids")
        if types is None:  # a text-only sample: the model's own default, the same position on every axis
            return text.expand(4, -1)
        # Qwen2.5-VL spaces a video's temporal positions by its seconds per grid step, as the unpacked forward does.
        timing = {"second_per_grid_ts": features["second_per_grid_ts"]} if "second_per_grid_ts" in features else {}
        rope, _ = self.rope_index(ids[None], types[None], image_grid_thw=features.get("image_grid_thw"),
                                  video_grid_thw=features.get("video_grid_thw"), **timing)
        return torch.cat([text, rope[:, 0].to(text.dtype)])


def split_per_sample(model: torch.nn.Module, class_names: tuple[str, ...]) -> int:
    """Make the modules of ``model`` whose class is named in ``class_names`` run on each packed sample's span of a
    row separately; returns how many were changed.

    Each such module is the token mixer of a decoder layer; the layer's text position ids (restarting at 0 per
    sample) say where the spans are. Rows that are not packed run as before.
    """
    changed = 0
    for layer in model.modules():
        mixers = [(name, child) for name, child in layer.named_children() if type(child).__name__ in class_names]
        if not mixers:
            continue
        spans = _Spans()
        layer.register_forward_pre_hook(spans.read, with_kwargs=True)
        for _name, mixer in mixers:
            mixer.forward = _per_span(mixer.forward, spans)
            changed += 1
    return changed


class _Spans:
    """The sample spans of the current forward, read from the decoder layer's ``position_ids`` keyword."""

    def __init__(self):
        self.lengths: list[int] | None = None

    def read(self, _module: torch.nn.Module, _args: tuple, kwargs: dict[str, Any]) -> None:
        positions = kwargs.get("position_ids")
        self.lengths = None
        if positions is None or positions.dim() != 2 or positions.shape[0] != 1 or kwargs.get("cache") is not None:
            return
        starts = (positions[0] == 0).nonzero().squeeze(1).tolist()
        if len(starts) > 1 and starts[0] == 0:
            self.lengths = [b - a for a, b in zip(starts, [*starts[1:], positions.shape[1]], strict=True)]


def _per_span(forward: Callable[..., torch.Tensor], spans: _Spans) -> Callable[..., torch.Tensor]:
    def run(hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        lengths = spans.lengths
        if lengths is None or hidden_states.shape[:2] != (1, sum(lengths)):
            return forward(hidden_states, *args, **kwargs)
        return torch.cat([forward(part, *args, **kwargs) for part in hidden_states.split(lengths, dim=1)], dim=1)

    return run
