"""The adapter folder an export reads and the output folder it writes, checked before any work is done."""

from __future__ import annotations

from pathlib import Path

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def require_adapter(adapter_dir: str | Path) -> Path:
    """The adapter folder, or FileNotFoundError naming what is missing from it."""
    adapter = Path(adapter_dir)
    missing = [name for name in ADAPTER_FILES if not (adapter / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{adapter}: not a PEFT adapter folder (no {', '.join(missing)})")
    return adapter


def _refuse_non_empty(out_dir: str | Path) -> None:
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"output {out} already exists and is not an empty folder")
