"""The family registry: ``model_type`` -> :class:`FamilySpec`."""

from __future__ import annotations

import importlib

from ..core.errors import UnknownFamilyError
from .spec import FamilySpec

_BY_MODEL_TYPE: dict[str, FamilySpec] = {}


def register_family(spec: FamilySpec) -> FamilySpec:
    if spec.name in _BY_MODEL_TYPE:
        raise ValueError(f"family {spec.name!r} registered twice")
    _BY_MODEL_TYPE[spec.name] = spec
    return spec


def get_family(model_type: str) -> FamilySpec:
    """Return the spec registered for a transformers ``model_type``."""
    _load_builtin_families()
    try:
        return _BY_MODEL_TYPE[model_type]
    except KeyError:
        raise UnknownFamilyError(
            f"No vlmtune family handles model_type={model_type!r}. Known: {', '.join(family_names())}."
        ) from None


def family_names() -> list[str]:
    _load_builtin_families()
    return sorted(_BY_MODEL_TYPE)


# One module per family group; importing a module registers its families.
FAMILY_MODULES = ("qwen_vl", "qwen3_5", "llava", "gemma3", "idefics3", "internvl")


def _load_builtin_families() -> None:
    # Done lazily to keep `import vlmtune` cheap.
    for module in FAMILY_MODULES:
        importlib.import_module(f"{__package__}.{module}")
