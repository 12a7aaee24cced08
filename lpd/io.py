"""Atomic file writes: a file is either its old self or complete, never half written.

Every file that lpd writes for a user (results, tuned parameters, checkpoints,
configurations) goes through `atomic_write`, so an interrupted run never leaves a
truncated file behind and never replaces an earlier result unless told to.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "fsync_dir"]


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory entry to disk (best effort: not every file system allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, content: str | bytes | Callable[[IO[Any]], None],
                 *, overwrite: bool = False) -> Path:
    """Write ``content`` to ``path`` through a temporary file in the same directory.

    Parameters
    ----------
    path : path
        The file to write; its directory is created if needed.
    content : str, bytes or callable
        Text, bytes, or a function that writes into the (binary) file object it
        is given, e.g. ``lambda f: numpy.savez(f, **arrays)``.
    overwrite : bool
        Replace an existing file. Without it an existing ``path`` raises, and a
        file that appears at ``path`` while this one is written is never replaced.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is not set.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists; refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(content, str):
                f.write(content.encode("utf-8"))
            elif isinstance(content, bytes | bytearray):
                f.write(content)
            else:
                content(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file readable by its owner only; give it the
        # permissions that a plain open() would have given.
        os.chmod(tmp, 0o666 & ~_umask())
        if overwrite:
            os.replace(tmp, path)
        else:
            # link() fails where the name exists, unlike replace().
            os.link(tmp, path)
        fsync_dir(path.parent)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
