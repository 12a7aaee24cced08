"""Files: atomic writes, the shipped ``data/`` directory, and the records read from it.

Every file that lpd writes for a user (results, tuned parameters, checkpoints,
configurations) goes through `atomic_write`, so an interrupted run never leaves a
truncated file behind and never replaces an earlier result unless told to.

What ships with the package (weights, tuned parameters) lives in ``data/`` beside
it (`shipped`), and the JSON records there are read by `read_record`, which
names the file and the command that makes it when one is missing or belongs to
another set-up.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "fsync_dir", "shipped", "read_record"]

_DATA = Path(__file__).resolve().parents[1] / "data"


def shipped(*parts: str) -> Path:
    """``data/<parts...>`` beside the package: where shipped weights and parameters live."""
    return _DATA.joinpath(*parts)


def read_record(path: str | os.PathLike, *, what: str, make: str,
                setup: str | None = None) -> dict[str, Any]:
    """The JSON record at ``path``, checked to exist and (if ``setup``) to be that set-up's.

    Parameters
    ----------
    path : path
    what : str
        What the file holds, for the messages ("tuned classical parameters").
    make : str
        The command that makes the file, given when it is missing.
    setup : str, optional
        The set-up the record must belong to (its ``"setup"`` entry, or that of
        its ``"params"``).

    Raises
    ------
    FileNotFoundError
        If there is no file; the message gives ``make``.
    ValueError
        If the file is not JSON, or holds the record of another set-up.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}; run `{make}` to make them")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a JSON record of {what}: {error}") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path} is not a JSON record of {what}: it holds a "
                         f"{type(record).__name__}")
    if setup is not None:
        owner = record.get("setup", (record.get("params") or {}).get("setup"))
        if owner != setup:
            raise ValueError(f"{path} holds the {what} of set-up {owner!r}, not {setup!r}")
    return record


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
