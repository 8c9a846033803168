"""Durable replacement of a state file: the edge's checkpoints (detectors, incidents, model slots).

A state file is written beside itself, flushed to disk, renamed over the old one and its folder synced,
so a kill or power loss at any moment leaves either the old file or the new one, never a torn one.
A failed write (a full disk) removes its partial temporary file, so it does not keep the space a retry or
the write-ahead log needs; the previous file stays as it was.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["write_atomically"]


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Replace ``path`` with what ``write`` puts into the open file, durably (see the module docstring)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
