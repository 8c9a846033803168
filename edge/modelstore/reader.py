"""A bundle's bytes -> its verified manifest and arrays; the one place the edge reads the bundle format.

Why one function: the format (contracts.md, ``docs/models.md``) is owned by the cloud side's
``plantwire/bundle.py``; this module adapts it to the edge's refusal reasons, so a change there is a
change here only. Nothing in the archive is trusted before the signature over ``manifest.json`` has
verified and ``arrays.npz`` hashes to the manifest's ``arrays_sha256``; arrays load with
``allow_pickle=False``. Only numpy, zipfile and cryptography are imported -- no fitting library.
"""

from __future__ import annotations

import binascii
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.modelstore.reasons import BundleRefused, Refusal

FORMAT = "plantwire-bundle/1"
MEMBERS = {"manifest.json", "arrays.npz", "manifest.sig"}
KINDS = ("machine_pca", "rul", "signal_baseline")
_REQUIRED = {"format": str, "kind": str, "template": str, "signals": list, "version": str, "arrays_sha256": str}


@dataclass(frozen=True)
class Bundle:
    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray]
    sha256: str  # hex of the whole file

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])

    @property
    def template(self) -> str:
        return str(self.manifest["template"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def signals(self) -> list[str]:
        return [str(s) for s in self.manifest["signals"]]


def load_public_key(path: Path) -> Ed25519PublicKey:
    """PEM (SubjectPublicKeyInfo), 32 raw bytes, or 64 hex characters; raises ValueError naming the file."""
    raw = Path(path).read_bytes()
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(raw)
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError("not an Ed25519 public key")
            return key
        text = raw.strip()
        if len(text) == 64:
            return Ed25519PublicKey.from_public_bytes(binascii.unhexlify(text))
        if len(raw) == 32:
            return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"{path}: {exc}") from None
    raise ValueError(f"{path}: expected an Ed25519 public key (PEM, 32 raw bytes or 64 hex characters)")


def read_verified(data: bytes, key: Ed25519PublicKey | None) -> Bundle:
    """Verify and open a bundle; raises ``BundleRefused`` with the first reason it is unusable."""
    if key is None:
        raise BundleRefused(Refusal.NO_KEY, "models.public_key_file is not loaded")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = z.namelist()
            if set(names) != MEMBERS or len(names) != len(MEMBERS):
                raise BundleRefused(Refusal.BAD_ARCHIVE, f"members {sorted(names)}, expected {sorted(MEMBERS)}")
            man_bytes, sig, npz = z.read("manifest.json"), z.read("manifest.sig"), z.read("arrays.npz")
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise BundleRefused(Refusal.BAD_ARCHIVE, f"not a readable zip ({exc})") from None
    if len(sig) != 64:
        raise BundleRefused(Refusal.BAD_SIGNATURE, f"manifest.sig is {len(sig)} bytes, not 64")
    try:
        key.verify(sig, man_bytes)
    except InvalidSignature:
        raise BundleRefused(Refusal.BAD_SIGNATURE, "signature does not verify with the configured key") from None
    try:
        manifest = json.loads(man_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleRefused(Refusal.BAD_MANIFEST, f"manifest.json is not JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise BundleRefused(Refusal.BAD_MANIFEST, "manifest.json is not an object")
    for k, typ in _REQUIRED.items():
        if not isinstance(manifest.get(k), typ):
            raise BundleRefused(Refusal.BAD_MANIFEST, f"manifest.{k}: {typ.__name__} expected")
    if manifest["format"] != FORMAT:
        raise BundleRefused(Refusal.UNSUPPORTED_FORMAT, f"manifest.format {manifest['format']!r}, expected {FORMAT!r}")
    if hashlib.sha256(npz).hexdigest() != manifest["arrays_sha256"].lower():
        raise BundleRefused(Refusal.ARRAYS_SHA256_MISMATCH, "arrays.npz does not hash to manifest.arrays_sha256")
    try:
        with np.load(io.BytesIO(npz), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise BundleRefused(Refusal.BAD_ARRAYS, f"arrays.npz unreadable ({exc})") from None
    return Bundle(manifest, arrays, hashlib.sha256(data).hexdigest())
