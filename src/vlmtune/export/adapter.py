"""Write a clean PEFT adapter folder (config, weights, model card), checked for vLLM when the family is known."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

from ..files import make_readable
from ..models import FamilySpec, spec_for
from .card import model_card
from .folders import ADAPTER_FILES, _refuse_non_empty, require_adapter
from .settings import ImageSettings
from .vllm import check_vllm_compatible

__all__ = ["ADAPTER_FILES", "export_adapter", "require_adapter"]

log = logging.getLogger("vlmtune")


def export_adapter(adapter_dir: str | Path, out_dir: str | Path, run_dir: str | Path | None = None,
                   base_model: str | None = None, spec: FamilySpec | None = None, *, min_pixels: int | None = None,
                   max_pixels: int | None = None, image_size: Sequence[int] | None = None) -> Path:
    """Write a clean adapter folder: adapter_config.json, adapter_model.safetensors, a README.md model card and
    the image settings the run trained with (``SETTINGS_FILE``, when known).

    ``base_model`` replaces the adapter's ``base_model_name_or_path`` (e.g. a hub id instead of the training
    machine's path). ``run_dir`` (with config.yaml, metrics.json) fills the card's data, metrics and
    hyperparameters. ``spec`` enables the vLLM check; without it the family is read from a local base folder.
    ``min_pixels``, ``max_pixels``, ``image_size``: the run's data settings (None: the base processor's own), in the
    card and the settings file, which is written when ``run_dir`` or a setting is given; the CLI reads them from
    the run folder.
    """
    adapter = require_adapter(adapter_dir)
    _refuse_non_empty(out_dir)
    if run_dir is not None and not Path(run_dir).is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    config = json.loads((adapter / "adapter_config.json").read_text())
    original_base = config.get("base_model_name_or_path")
    if base_model:
        config["base_model_name_or_path"] = base_model
    base = config.get("base_model_name_or_path") or ""
    if _is_local_path(base):
        log.warning("export: the adapter names its base by the local path %s; pass --base-model-name "
                    "(e.g. the hub id) so it loads elsewhere", base)
    spec = spec or _family_from_folder(original_base, base)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    shutil.copyfile(adapter / "adapter_model.safetensors", out / "adapter_model.safetensors")
    problems = check_vllm_compatible(out, spec) if spec else None
    if problems is None:
        log.warning("export: vLLM check skipped (no local base folder to read the model family from)")
    for problem in problems or []:
        log.warning("export: vLLM: %s", problem)
    run = Path(run_dir) if run_dir is not None else None
    image = None
    if run is not None or any(v is not None for v in (min_pixels, max_pixels, image_size)):
        image = ImageSettings.of(min_pixels, max_pixels, image_size)
        image.write(out)
    (out / "README.md").write_text(model_card(config, out.name, run, problems, spec, image))
    make_readable(out)
    return out


def _is_local_path(name: str) -> bool:
    return bool(name) and (Path(name).is_absolute() or name.startswith(".") or Path(name).exists())


def _family_from_folder(*candidates: str | None) -> FamilySpec | None:
    # Only local folders: a hub id would mean a network call just for a check.
    for candidate in candidates:
        if candidate and (Path(candidate) / "config.json").is_file():
            return spec_for(candidate, check_split=False)
    return None
