"""Crash-safe file writes: a reader never sees a half-written checkpoint or pointer file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

import torch


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``.

    A process killed at any point leaves either the old file or the new one, never a truncated
    one (rename is atomic on POSIX file systems).
    """
    def fill(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            write(f)

    atomic_write_file(path, fill)


def atomic_write_file(path: str | os.PathLike, fill: Callable[[Path], None]) -> None:
    """:func:`atomic_write` for writers that take a file name: ``fill(tmp)`` writes the temporary
    file ``tmp`` beside ``path`` (e.g. a framework's own save function), which is then fsynced and
    renamed over ``path``, and the rename made durable."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the mode a plain open() would
        finally:
            os.close(fd)
        fill(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` with :func:`atomic_write`."""
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a small text file (e.g. a ``last_checkpoint`` pointer) atomically."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
