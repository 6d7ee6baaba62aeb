"""Specs for checkpoints that no registered family describes, read from the checkpoint itself.

Any model ``AutoModelForImageTextToText`` loads can be fine-tuned. Its parts are found from what transformers
exposes, not from module names: the language model is ``get_decoder()``, the head ``get_output_embeddings()``, the
vision tower the sub-model built from a sub-config of the model's config (``vision_config``), and the projector
what is left between them. Where that gives no single answer (two candidate vision towers, weights in no part)
vlmtune stops and names the modules and the run-config key that settles it, instead of guessing. Labels come from
rendering the chat template turn by turn (:mod:`vlmtune.data.render`): no entry says what opens an assistant turn.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForImageTextToText, AutoTokenizer, PretrainedConfig

from ..core.errors import ModelError, UnknownFamilyError
from .registry import family_names
from .spec import COMPONENTS, FamilySpec

log = logging.getLogger("vlmtune")

COMPONENTS_KEY = "model.components"
"""Run-config key that names each component's module prefixes where inference cannot."""


class ComponentsError(ModelError):
    """A model's split into components is not certain (or ``model.components`` names what is not there); the run
    config's ``model.components`` settles it."""


def is_inferred(spec: FamilySpec) -> bool:
    """True for a spec built from a checkpoint rather than taken from the registry."""
    return spec.name not in family_names()


def unregistered_warning(spec: FamilySpec) -> str:
    """The line a dry run and a training log print for an inferred spec."""
    return (f"warning: {spec.name} is not a registered vlmtune family: its components were inferred from the "
            f"module tree ({COMPONENTS_KEY} changes them) and the assistant answers are found by rendering the "
            "chat template turn by turn")


def infer_spec(model_dir: str | Path, config: PretrainedConfig, components: Mapping[str, Sequence[str]] | None = None,
               check_split: bool = True) -> FamilySpec:
    """Spec of a checkpoint whose model_type has no registry entry.

    ``components`` (``model.components``) replaces what would be found for the components it names. With
    ``check_split`` an uncertain split raises :class:`ComponentsError`; without it (prediction, evaluation, data
    checks, which do not need the split) the spec keeps what was found.
    """
    model = skeleton(config)
    found, doubts = find_components(model, components)
    if doubts and check_split:
        raise components_error(config.model_type, found, doubts)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    specials = [*tokenizer.all_special_tokens, *(t.content for t in tokenizer.added_tokens_decoder.values()
                                                  if t.special)]
    eos = tokenizer.eos_token or ""
    spec = FamilySpec(
        name=config.model_type, model_class=type(model).__name__,
        processor_class=_processor_class_name(model_dir, config.model_type), chat_template="",
        template_source=f"the chat template of {model_dir}", special_tokens=tuple(dict.fromkeys(specials)),
        eos_token=eos, pad_token=tokenizer.pad_token or eos, assistant_header=None, turn_end=eos,
        components=found, language_lora_targets=(), tokenizer_class=type(tokenizer).__name__,
        source=f"inferred from {model_dir} (no registered family)")
    linear = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
              if isinstance(module, nn.Linear) and spec.component_of(name) == "language"}
    spec = dataclasses.replace(spec, language_lora_targets=tuple(sorted(linear)))
    log.warning("%s; components: %s", unregistered_warning(spec),
                "; ".join(f"{c} {', '.join(p) or '-'}" for c, p in found.items()))
    return spec


def with_components(spec: FamilySpec, config: PretrainedConfig, components: Mapping[str, Sequence[str]]
                    ) -> FamilySpec:
    """A registered family's spec with ``components`` (``model.components``) replacing the prefixes it names."""
    merged = {**spec.components, **{c: tuple(p) for c, p in components.items()}}
    found, doubts = find_components(skeleton(config), merged)
    if doubts:
        raise components_error(spec.name, found, doubts)
    return dataclasses.replace(spec, components=found)


def skeleton(config: PretrainedConfig) -> nn.Module:
    """The model's module tree without weights (meta device): enough to find its parts, instant at any size."""
    try:
        with torch.device("meta"):
            return AutoModelForImageTextToText.from_config(config)
    except ValueError:
        raise UnknownFamilyError(
            f"model_type={config.model_type!r} has no vlmtune family and is not an image-text-to-text model "
            f"transformers knows (AutoModelForImageTextToText). Known families: {', '.join(family_names())}."
        ) from None


def find_components(model: nn.Module, given: Mapping[str, Sequence[str]] | None = None
                    ) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """Component -> module prefixes of ``model``, and the doubts that keep them from being used (none: certain).

    ``given`` names the prefixes of some components outright; the others are found.
    """
    found = {c: tuple(p) for c, p in (given or {}).items()}
    doubts = [f"{COMPONENTS_KEY}.{c}: no module or parameter is called {p!r}"
              for c, prefixes in found.items() for p in prefixes if not _exists(model, p)]
    names = {id(module): name for name, module in model.named_modules()}
    towers = _sub_models(model)
    if "lm_head" not in found:
        head = model.get_output_embeddings()
        found["lm_head"] = (names[id(head)],) if head is not None else ()
    if "language" not in found:
        decoder = names.get(id(model.get_decoder()), "")
        # Models with no separate decoder answer with themselves or their base model, which holds the tower too.
        usable = decoder and not any(_covered(t, [decoder]) for t in towers)
        found["language"] = (decoder,) if usable else ()
    if "vision" not in found:
        found["vision"] = tuple(towers)
        if len(towers) > 1:
            doubts.append("several sub-models could be the vision tower: "
                          + ", ".join(f"{name} (built from {key})" for name, key in towers.items()))
    if "projector" not in found:
        # A tower may hold its projector (Qwen-VL's merger), which no config marks; otherwise the projector is
        # the one module left between the parts found.
        nested = [f"{tower}.{child}" for tower in found["vision"] if _is_module(model, tower)
                  for child, _ in model.get_submodule(tower).named_children() if "merger" in child]
        left = _uncovered(model, [p for ps in found.values() for p in ps] + nested)
        found["projector"] = tuple(nested + left) if len(left) == 1 else tuple(nested)
    doubts += [f"no {c} found" for c in ("vision", "language", "lm_head") if not found[c]]
    left = _uncovered(model, [p for ps in found.values() for p in ps])
    if left:
        doubts.append(f"parameters in no component: {', '.join(left)}")
    return {c: found[c] for c in COMPONENTS}, doubts


def components_error(name: str, found: Mapping[str, Sequence[str]], doubts: list[str]) -> ComponentsError:
    example = "".join(f"      {c}: [{', '.join(found.get(c, ()))}]\n" for c in COMPONENTS)
    return ComponentsError(
        f"cannot tell the components of {name} apart without guessing (it is not a registered vlmtune family):\n"
        + "".join(f"  - {d}\n" for d in doubts)
        + f"Name each component's module prefixes in the run config ({COMPONENTS_KEY}; the longest matching "
        f"prefix wins); found so far:\n  model:\n    components:\n{example}")


def _sub_models(model: nn.Module) -> dict[str, str]:
    """Outermost modules built from a sub-config of the model's config other than the text one -> its key."""
    config = model.config
    subs = {key: getattr(config, key, None) for key in getattr(config, "sub_configs", {})}
    subs = {key: sub for key, sub in subs.items()
            if isinstance(sub, PretrainedConfig) and sub is not config.get_text_config()}
    towers: dict[str, str] = {}
    for name, module in model.named_modules():
        key = next((k for k, sub in subs.items() if getattr(module, "config", None) is sub), None)
        if key and name and not _covered(name, list(towers)):
            towers[name] = key
    return towers


def _uncovered(model: nn.Module, prefixes: Sequence[str]) -> list[str]:
    """Outermost modules (or parameters) holding parameters under none of ``prefixes``."""
    roots: list[str] = []
    for name, _ in model.named_parameters():
        if _covered(name, prefixes):
            continue
        parts = name.split(".")
        root = name
        for i in range(1, len(parts) + 1):
            root = ".".join(parts[:i])
            if not any(p.startswith(root + ".") for p in prefixes):  # no component lives inside it
                break
        if root not in roots:
            roots.append(root)
    return roots


def _covered(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _is_module(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
        return True
    except AttributeError:
        return False


def _exists(model: nn.Module, name: str) -> bool:
    return _is_module(model, name) or any(n == name for n, _ in model.named_parameters())


def _processor_class_name(model_dir: str | Path, model_type: str) -> str:
    """The processor class the checkpoint names, else the one transformers maps its model_type to."""
    for file in ("processor_config.json", "preprocessor_config.json"):
        path = Path(model_dir) / file
        if path.is_file() and (name := json.loads(path.read_text()).get("processor_class")):
            return name
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    name = PROCESSOR_MAPPING_NAMES.get(model_type)
    if not name:
        raise UnknownFamilyError(f"model_type={model_type!r}: no processor class named by {model_dir} or known to "
                                 "transformers for it")
    return name
