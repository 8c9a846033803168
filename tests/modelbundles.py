"""Test-only helpers: a machine model fitted with the project's own fitter, packed into a signed bundle
with the shared writer (``plantwire.bundle.build``), and its MQTT delivery as contracts.md describes."""

from __future__ import annotations

import hashlib
import json
import math
import time
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.models import machine as mm
from plantwire import bundle as pb

CHUNK_BYTES = 256 * 1024


def machine_arrays(model: mm.MachineModel) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """The model's .npz arrays (as ``edge.models.machine.save`` names them) and its per-mode scalars."""
    arrays = {f"m{j}_{a}": np.asarray(getattr(mo, a)) for j, mo in enumerate(model.modes)
              for a in ("mean", "scale", "centroid", "mode_scale", "loadings", "eigenvalues")}
    modes = [{"t2_ref": mo.t2_ref, "spe_ref": mo.spe_ref, "limit": mo.limit, "ewma": mo.ewma, "init": mo.init,
              "rows": int(mo.rows), "components": int(mo.eigenvalues.shape[0])} for mo in model.modes]
    return arrays, modes


def machine_bundle(model: mm.MachineModel, template: str, version: str, key: Ed25519PrivateKey, *,
                   signals: list[str] | None = None, kind: str = "machine_pca") -> bytes:
    arrays, modes = machine_arrays(model)
    manifest = {"kind": kind, "template": template, "signals": signals or list(model.signals), "modes": modes,
                "lags": model.lags, "fitted_from_ns": 0, "fitted_to_ns": 1, "rows": sum(m["rows"] for m in modes),
                "data_sha256": hashlib.sha256(model.data_hash.encode()).hexdigest(), "validation": {},
                "version": version, "software": "test", "created_ns": time.time_ns()}
    # A bundle's JSON cannot hold inf: a constant feature's scale (inf) travels as an array, which may.
    return pb.build(manifest, arrays, key)


def fit_template(rng: np.random.Generator, signals: list[str], rows: int = 600, lags: int = 1,
                 shift: float = 0.0) -> mm.MachineModel:
    """A model of ``signals`` on correlated normal data (``shift`` moves its mean: another fit, other numbers)."""
    d = len(signals)
    base = rng.normal(size=(rows, 2))
    mix = rng.normal(size=(2, d))
    x = base @ mix + 0.3 * rng.normal(size=(rows, d)) + shift
    return mm.fit(x, signals, mm.FitSettings(lags=lags), name="test")


def deliveries(data: bytes, version: str, chunk_bytes: int = CHUNK_BYTES) -> tuple[bytes, list[bytes]]:
    """(head payload, chunk payloads) for one bundle."""
    sha = hashlib.sha256(data).digest()
    n = max(1, math.ceil(len(data) / chunk_bytes))
    chunks = [sha + data[i * chunk_bytes:(i + 1) * chunk_bytes] for i in range(n)]
    head = json.dumps({"version": version, "sha256": sha.hex(), "size": len(data), "chunks": n,
                       "chunk_bytes": chunk_bytes}).encode()
    return head, chunks
