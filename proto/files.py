"""Private files and directories: 0600 and 0700 whatever the process umask.

Every file the node and the client create goes through these helpers (or is
made by SQLite next to a database they created: SQLite gives its ``-wal``,
``-shm`` and ``-journal`` files the database file's mode). The modes are set
at creation (``os.open`` with the mode, then ``fchmod``/``chmod`` so a umask
can neither widen nor narrow them) rather than by a process-wide ``umask``:
the node also runs embedded in the client's process and in tests, where no
program edge owns the umask, and a umask is process-global state that
threads would race on. The program edges (``qpc-node``, ``qpc``) also set
umask 077 as a second line, for files a library makes on its own.

Only what we create is changed: an existing parent directory the user made
keeps its mode; a directory we are asked to use as ours (a profile, the
node's data dir) is tightened to 0700.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO, Any

FILE_MODE = 0o600
DIR_MODE = 0o700
PROGRAM_UMASK = 0o077

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "PROGRAM_UMASK",
    "ensure_private_file",
    "open_private",
    "private_dir",
    "set_program_umask",
    "write_private",
]


def private_dir(path: Path) -> Path:
    """Create ``path`` and any missing parents as 0700, and make ``path`` itself 0700."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, DIR_MODE)
            os.chmod(d, DIR_MODE)  # the umask may have narrowed it
    os.chmod(path, DIR_MODE)
    return path


def ensure_private_file(path: Path) -> Path:
    """Create ``path`` empty if missing; either way make it 0600 (before SQLite opens it)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def open_private(path: Path, mode: str = "w", *, encoding: str | None = None) -> IO[Any]:
    """``open()`` for writing/appending/reading-writing, created 0600.

    ``mode`` is one of ``w``, ``a``, ``r+`` (binary with ``b``); ``w``
    truncates, ``a`` appends, ``r+`` creates without truncating.
    """
    base = mode.replace("b", "")
    flags = {
        "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
        "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
        "r+": os.O_RDWR | os.O_CREAT,
    }[base]
    fd = os.open(path, flags | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        if "b" in mode:
            return os.fdopen(fd, mode)
        return os.fdopen(fd, mode, encoding=encoding or "utf-8")
    except BaseException:
        os.close(fd)
        raise


def write_private(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` (0600), atomically via a temporary file unless ``exclusive``.

    ``exclusive`` creates the file in place and fails if it exists.
    """
    if exclusive:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open_private(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def set_program_umask() -> None:
    """At a program's entry point: new files 0600 and directories 0700 by default."""
    os.umask(PROGRAM_UMASK)
