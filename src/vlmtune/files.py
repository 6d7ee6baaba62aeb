"""Files vlmtune writes get the permissions of any file the process creates: ``0o666 & ~umask``.

safetensors writes its files (weights of exports, checkpoints, merged folders, adapters; the rendered-sample cache)
with mode 0600, and ``tempfile`` creates 0600 files: a server running as another user could not read an export.
Every writer of such files passes what it wrote through :func:`make_readable`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def umask() -> int:
    """The process's umask, without changing it (Linux reports it in /proc; elsewhere it is set and restored)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # not thread-safe for that instant, hence /proc first
    os.umask(mask)
    return mask


def make_readable(path: str | Path) -> None:
    """Give a file, or every file under a folder, the permission bits ``0o666 & ~umask`` allows that it lacks.

    Bits are only added, never removed; files that vanish meanwhile (a checkpoint rotated away by another
    process) or belong to another user are left as they are."""
    allowed = 0o666 & ~umask()
    root = Path(path)
    files = [root] if not root.is_dir() else [Path(d) / f for d, _, names in os.walk(root) for f in names]
    for file in files:
        try:
            mode = file.lstat().st_mode
            if stat.S_ISREG(mode) and (mode & allowed) != allowed:
                os.chmod(file, stat.S_IMODE(mode) | allowed)
        except (FileNotFoundError, PermissionError):
            continue
