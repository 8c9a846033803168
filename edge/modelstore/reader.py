"""A bundle's bytes -> its verified manifest and arrays, through the shared reader ``plantwire.bundle``.

Why an adapter: the format is owned by ``plantwire/bundle.py`` (the cloud writes with it, the edge reads
with it); this maps its refusals onto the edge's vocabulary (``reasons.Refusal``, the metric label) and
loads the trusted key the way the edge config names it. Nothing in the archive is trusted before the
signature over ``manifest.json`` has verified and ``arrays.npz`` hashes to the manifest's
``arrays_sha256``; arrays load with ``allow_pickle=False``.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.modelstore.reasons import BundleRefused, Refusal
from plantwire import bundle as pb

Bundle = pb.Bundle
KINDS = pb.KINDS

_MAP = {
    pb.Refusal.MALFORMED: Refusal.BAD_ARCHIVE,
    pb.Refusal.UNKNOWN_KEY: Refusal.UNKNOWN_KEY,
    pb.Refusal.SIGNATURE: Refusal.BAD_SIGNATURE,
    pb.Refusal.MANIFEST: Refusal.BAD_MANIFEST,
    pb.Refusal.ARRAYS_HASH: Refusal.ARRAYS_SHA256_MISMATCH,
    pb.Refusal.ARRAYS: Refusal.BAD_ARRAYS,
}


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The cloud signer's public key (PEM, as ``plantwire models keygen`` writes it); ValueError naming the file."""
    return pb.load_public_key(path)


def read_verified(data: bytes, key: Ed25519PublicKey | None, where: str = "bundle") -> Bundle:
    """Verify and open a bundle; raises ``BundleRefused`` with the first reason it is unusable."""
    if key is None:
        raise BundleRefused(Refusal.NO_KEY, "models.public_key_file is not loaded")
    try:
        return pb.read(data, key, where=where)
    except pb.BundleError as exc:
        raise BundleRefused(_MAP.get(exc.reason, Refusal.BAD_ARCHIVE), str(exc)) from None
