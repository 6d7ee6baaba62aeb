"""Where ``model.path`` points: a local checkpoint folder or a hub id. Checked before transformers reads it, so
that a missing folder or an unreachable hub is one line naming the key, not a traceback from deep in the hub client.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..core.errors import ModelError

KEY = "model.path"
"""The config key every command's model resolves to (``--model`` overrides it)."""

# A hub id is ``name`` or ``org/name``; anything else that is not on disk is a missing folder.
HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


class ModelPathError(ModelError, FileNotFoundError):
    """``model.path`` names no checkpoint this machine can read."""


def check_model_path(model: str | Path) -> None:
    """Raise :class:`ModelPathError` where ``model`` is neither a checkpoint folder nor a hub id that may load:
    a local path that does not exist, a file, a folder without ``config.json``, or (offline) an id not cached."""
    text = str(model)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelPathError(f"{KEY}: folder {text} has no config.json, so it is not a model checkpoint")
        return
    if path.exists():
        raise ModelPathError(f"{KEY}: {text} is a file; give the checkpoint's folder")
    if text.startswith((".", "/", "~")) or not HUB_ID.match(text):
        raise ModelPathError(f"{KEY}: folder {text} does not exist (and is not a hub id like org/name)")
    if hub_offline() and not in_hub_cache(text):
        raise ModelPathError(unreachable(text))


def hub_offline() -> bool:
    """Whether the hub client is told not to use the network (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("TRANSFORMERS_OFFLINE", "").upper() in ("1", "TRUE", "YES")


def in_hub_cache(repo_id: str) -> bool:
    """Whether the hub cache holds ``repo_id``'s config.json (a download that at least began)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def unreachable(repo_id: str) -> str:
    """The line for a hub id that is neither a local folder nor cached, on a machine that cannot download it."""
    from huggingface_hub import constants

    why = "HF_HUB_OFFLINE is set" if hub_offline() else "this machine cannot reach the hub (offline)"
    return (f"{KEY}: {repo_id} is not a local folder and not in the hub cache ({constants.HF_HUB_CACHE}), and "
            f"{why}: download it where there is network (`hf download {repo_id}`) into that cache, or set "
            f"{KEY} to a local checkpoint folder")


def load_error(model: str | Path, error: OSError) -> ModelPathError:
    """The one-line error for an OSError transformers raised reading ``model``'s config."""
    text = str(model)
    cause: BaseException | None = error
    while cause is not None:
        # The hub client's "not cached and no connection" (offline mode or a failed request).
        if type(cause).__name__ in ("LocalEntryNotFoundError", "OfflineModeIsEnabled") \
                or "couldn't connect" in str(cause):
            return ModelPathError(unreachable(text))
        cause = cause.__cause__ or cause.__context__
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ModelPathError(f"{KEY}: cannot read {text}: {first}")
