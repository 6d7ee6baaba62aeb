"""``vlmtune export``: a run's adapter as a clean adapter folder, or merged into its base."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from ..models import spec_for
from .adapter import export_adapter
from .merge import export_merged
from .settings import SETTINGS_FILE

log = logging.getLogger("vlmtune")


def export_run(model_path: str, adapter: Path, output: str, merge: bool = False, dtype: str | None = None,
               base_model_name: str | None = None, min_pixels: int | None = None, max_pixels: int | None = None,
               image_size: Sequence[int] | None = None) -> str:
    """Write the ``adapter`` trained on ``model_path`` to ``output`` (merged into the base with ``merge``) with the
    image settings the run trained with; returns the line saying what was written."""
    if dtype and not merge:
        log.warning("export: --dtype applies to --merge only; ignored")
    if base_model_name and merge:
        log.warning("export: --base-model-name applies to the adapter export only; ignored with --merge")
    settings = {"min_pixels": min_pixels, "max_pixels": max_pixels, "image_size": image_size}
    if merge:
        # The merged folder's processor shows images as the run trained on them.
        out = export_merged(model_path, adapter, output, dtype, **settings)
        return f"merged model written to {out} (loads with AutoModelForImageTextToText.from_pretrained)"
    # A run directory written by `vlmtune train` holds the adapter next to config.yaml and metrics.json.
    run_dir = adapter.parent if (adapter.parent / "config.yaml").is_file() else None
    model = Path(model_path)
    base = base_model_name or (str(model.resolve()) if model.is_dir() else model_path)
    out = export_adapter(adapter, output, run_dir, base_model=base, spec=spec_for(model_path, check_split=False),
                         **settings)
    written = "README.md" + (f", {SETTINGS_FILE}" if (out / SETTINGS_FILE).is_file() else "")
    return f"adapter written to {out} (adapter_config.json, adapter_model.safetensors, {written})"
