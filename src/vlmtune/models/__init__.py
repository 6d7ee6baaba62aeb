"""Model families: the registry of per-family facts, loading, and tiny offline models."""

from .load import family_of, load_model, load_processor, resolve_dtype, spec_for
from .registry import UnknownFamilyError, family_names, get_family
from .spec import COMPONENTS, FamilySpec

__all__ = [
    "COMPONENTS", "FamilySpec", "UnknownFamilyError", "family_names", "family_of", "get_family", "load_model",
    "load_processor", "resolve_dtype", "spec_for",
]
