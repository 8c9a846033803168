"""A small filesystem of its own for "disk full" tests: a tmpfs mounted under the test's tmp_path.

Mounting needs root (CI and the dev boxes run tests as root); where it is impossible the test is
skipped with the reason. ``fill`` plays the other writer that takes the space the edge wanted.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["fill", "free_bytes", "small_disk"]


@contextlib.contextmanager
def small_disk(path: Path, size_bytes: int) -> Iterator[Path]:
    """Mount a tmpfs of ``size_bytes`` at ``path`` for the duration; skip the test if mounting fails."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0755", "tmpfs", str(path)],
        capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for a full-disk test (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        for _ in range(50):  # a daemon that was just killed may still hold a file open for a moment
            if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode == 0:
                break
            subprocess.run(["sleep", "0.2"], check=False)
        else:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path: Path, leave_bytes: int = 0, name: str = "filler") -> Path:
    """Take all the free space of ``path``'s filesystem but ``leave_bytes``, as another writer would."""
    target = path / name
    chunk = b"\0" * 65536
    with open(target, "ab", buffering=0) as f:
        while True:
            room = free_bytes(path) - leave_bytes
            if room <= 0:
                break
            try:
                f.write(chunk[: min(len(chunk), room)])
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    return target
