"""The bundle store: a directory of signed ``.pwbundle`` files, one per fitted model version.

Why a plain directory: bundles are immutable, named by slot and version
(``{kind}__{template}__{version}.pwbundle``), so the store is easy to back up, diff and copy, and "the
latest bundle of a slot" is the last name in sorted order (versions sort by creation). Files are written
atomically (temporary name, fsync, rename) so a crash never leaves half a bundle under a real name.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from plantwire import bundle


def software_version() -> str:
    """The installed plantwire's version (what made the bundle)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("plantwire")
    except PackageNotFoundError:
        return "unknown"


def new_version(created_ns: int) -> str:
    """Unique and sortable by creation: UTC time to the microsecond, then 6 random hex digits."""
    secs, ns = divmod(created_ns, 1_000_000_000)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(secs))
    return f"{stamp}.{ns // 1000:06d}Z-{secrets.token_hex(3)}"


def file_name(kind: str, template: str, version: str) -> str:
    return f"{kind}__{template}__{version}{bundle.SUFFIX}"


def make(kind: str, template: str, signals: list[str], arrays: dict[str, Any], extra: dict[str, Any], *,
         fitted_from_ns: int, fitted_to_ns: int, rows: int, data_sha256: str, validation: dict[str, Any],
         key: Ed25519PrivateKey, created_ns: int | None = None) -> tuple[bytes, dict[str, Any]]:
    """A signed bundle's bytes and its manifest (``extra`` holds the kind-specific keys)."""
    created = created_ns if created_ns is not None else time.time_ns()
    manifest = {**extra, "kind": kind, "template": template, "signals": list(signals),
                "modes": extra.get("modes"), "fitted_from_ns": int(fitted_from_ns), "fitted_to_ns": int(fitted_to_ns),
                "rows": int(rows), "data_sha256": data_sha256, "validation": validation,
                "version": new_version(created), "software": software_version(), "created_ns": created}
    data = bundle.build(manifest, arrays, key)
    return data, bundle.read(data, key.public_key()).manifest


def write(store: Path, data: bytes, manifest: dict[str, Any]) -> Path:
    """Store a bundle atomically; returns its path."""
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    path = store / file_name(manifest["kind"], manifest["template"], manifest["version"])
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return path


def latest(store: Path) -> dict[tuple[str, str], Path]:
    """The newest bundle file per (kind, template) slot."""
    out: dict[tuple[str, str], Path] = {}
    for p in sorted(Path(store).glob(f"*{bundle.SUFFIX}")):
        parts = p.name[: -len(bundle.SUFFIX)].split("__")
        if len(parts) == 3:
            out[(parts[0], parts[1])] = p
    return out
