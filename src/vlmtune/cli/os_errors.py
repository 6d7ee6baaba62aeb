"""One line for the file-system errors a command meets writing its output: a full disk, a read-only or
forbidden folder, a file where a folder should be."""

from __future__ import annotations

import argparse
import errno
from pathlib import Path

# What libraries that write through their own I/O layer (safetensors, torch) say of a full disk.
_NO_SPACE = ("No space left on device", "os error 28")


def describe_error(error: BaseException, args: argparse.Namespace | None = None) -> str | None:
    """:func:`describe_os_error` for an OSError; for another error whose message (or cause) says the disk is
    full, the no-space line; None otherwise."""
    if isinstance(error, OSError):
        return describe_os_error(error, args)
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno is not None:
            return describe_os_error(cause, args)
        if any(s in str(cause) for s in _NO_SPACE):
            return describe_os_error(OSError(errno.ENOSPC, "No space left on device"), args)
        # Only explicit causes (raise ... from e): an error raised while another was handled may be a bug of its own.
        cause = cause.__cause__
    return None


def describe_os_error(error: OSError, args: argparse.Namespace | None = None) -> str | None:
    """The line for an OSError the operating system raised (one with an errno), naming the path; None for
    other errors (the caller lets them through). ``args``: the command's arguments, whose output folder names
    the place where the error itself carries no path (a failed ``write``)."""
    code = error.errno
    if code is None:
        return None
    path = error.filename or _output_of(args)
    where = f" {path}" if path else ""
    if code == errno.ENOSPC:
        return f"no space left on{where or ' the device'} (the disk is full); free some space and run again"
    if code == errno.EDQUOT:
        return f"disk quota exceeded writing{where}; free some space and run again"
    if code == errno.EROFS:
        return f"cannot write{where}: the file system is read-only; choose an output folder on a writable one"
    if code in (errno.EACCES, errno.EPERM):
        return f"permission denied on{where or ' a file'}; check its permissions, or choose an output folder you " \
               "can write to"
    if code == errno.ENOTDIR and error.filename:
        return f"cannot use{where}: part of that path is a file, not a folder"
    if code == errno.EEXIST and error.filename and Path(error.filename).exists() \
            and not Path(error.filename).is_dir():
        return f"{path} is a file, where a folder is needed"
    return None


def _output_of(args: argparse.Namespace | None) -> str | None:
    """The output folder or file a command was given, where it has one."""
    if args is None:
        return None
    for name in ("output_dir", "output"):
        value = getattr(args, name, None)
        if value:
            return str(value)
    if getattr(args, "command", None) == "train" and getattr(args, "config", None):
        try:  # the run folder is the config's train.output_dir
            from ..config import load_config

            return str(load_config(args.config, args.overrides).train.output_dir)
        except Exception:
            return None
    return None
