"""Checkpoints: detector state saved to one ``.npz`` and restored after a restart, so a reboot is warm.

Why .npz: the state is a handful of float arrays; numpy writes and reads them without pickle
(``allow_pickle=False``: a checkpoint is data, never code). A file carries ``__version__`` (layout of
the arrays) and ``__fingerprint__`` (what the state is *about*: number of signals, machine membership,
subspace size). Restoring refuses a file whose version or fingerprint differs, or whose arrays have
other shapes or dtypes, by raising ``CheckpointError``; the owner then starts cold and says so once.
Thresholds and learning rates are deliberately not in the fingerprint: retuning must not cost the
plant a warm-up.

Writes are atomic: a temporary file in the same folder, fsync, rename, fsync of the folder, so a
power cut leaves either the old or the new checkpoint, never half of one. A failed write (a full disk)
removes its temporary file and raises OSError; the owner counts it and retries later.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from edge.statefile import write_atomically


class CheckpointError(Exception):
    """A checkpoint that cannot be used: missing, unreadable, or for another layout or configuration."""


def fingerprint(*parts: bytes | str | int | np.ndarray) -> str:
    """Stable hex digest of the things a state's meaning depends on."""
    h = hashlib.blake2b(digest_size=12)
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(str(p.dtype).encode() + str(p.shape).encode())
            h.update(np.ascontiguousarray(p).tobytes())
        elif isinstance(p, bytes):
            h.update(p)
        else:
            h.update(str(p).encode())
        h.update(b"\x1f")
    return h.hexdigest()


def save(path: Path, version: int, fp: str, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` atomically to ``path`` with the version and fingerprint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a full disk leaves the previous checkpoint as it was (edge.statefile)
    write_atomically(path, lambda f: np.savez(f, __version__=np.int64(version), __fingerprint__=np.str_(fp), **arrays))


def load(path: Path, version: int, fp: str, like: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Read a checkpoint, checking version, fingerprint and that every array matches ``like``."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            got = {k: z[k] for k in z.files}
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: no checkpoint") from exc
    except (OSError, ValueError, EOFError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc})") from exc
    if "__version__" not in got or int(got["__version__"]) != version:
        raise CheckpointError(f"{path}: layout version {got.get('__version__')} is not {version}")
    if str(got.get("__fingerprint__")) != fp:
        raise CheckpointError(f"{path}: saved for another configuration (signals, machines or subspace size)")
    out = {}
    for name, ref in like.items():
        a = got.get(name)
        if a is None or a.shape != ref.shape or a.dtype != ref.dtype:
            raise CheckpointError(f"{path}: array {name!r} missing or of another shape/dtype")
        out[name] = a
    return out
