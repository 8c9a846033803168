"""Signed model bundles: the one file format the cloud writes and the edge reads (issue 17).

Why a module of its own on the ground floor: the edge must verify and load a bundle without importing
anything that fits models (no scipy, no deep-learning library, not even ``edge.models.machine``), and the
cloud must write exactly what the edge reads. So both import this, and this imports only numpy,
``cryptography`` and the standard library.

A bundle ``NAME.pwbundle`` is a zip archive, every member *stored* (no compression: nothing to inflate, so
no zip bomb), holding exactly three members:

- ``manifest.json``: a JSON object (see ``REQUIRED`` for its keys and ``docs/models.md`` for their meaning),
  including ``arrays_sha256``, the hex sha256 of the ``arrays.npz`` member's bytes;
- ``arrays.npz``: plain arrays (bool, integer, float, fixed-width text), loaded with ``allow_pickle=False``;
- ``manifest.sig``: the 64-byte raw Ed25519 signature over the exact bytes of ``manifest.json``.

The signature covers the manifest, the manifest pins the arrays by hash: one signature check plus one hash
check authenticate the whole bundle. Reading checks, in this order, so that nothing untrusted is parsed
before the signature is known good: size and zip structure, the signing key (by ``key_id``), the signature,
the manifest's JSON and keys, the arrays' hash, then the arrays themselves. Every failure raises
``BundleError`` with a ``Refusal`` reason, which the edge counts per reason
(``model_bundles_refused_total{reason=...}``).

Keys: PEM files, the private key PKCS#8 (kept by the cloud, file mode 0600), the public key
SubjectPublicKeyInfo (the only thing a gateway holds). ``key_id`` is the first 16 hex digits of the sha256 of
the raw 32-byte public key; a gateway may trust several keys at once, which is how a key is rotated.
"""

from __future__ import annotations

import enum
import hashlib
import io
import json
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "ARRAYS",
    "FORMAT",
    "KINDS",
    "MANIFEST",
    "SIGNATURE",
    "SUFFIX",
    "Bundle",
    "BundleError",
    "Refusal",
    "build",
    "key_id",
    "load_private_key",
    "load_public_key",
    "load_public_keys",
    "peek_manifest",
    "read",
    "read_file",
]

FORMAT = "plantwire-bundle/1"
KINDS = ("machine_pca", "rul", "signal_baseline")
MANIFEST, ARRAYS, SIGNATURE = "manifest.json", "arrays.npz", "manifest.sig"
MEMBERS = (MANIFEST, ARRAYS, SIGNATURE)
SUFFIX = ".pwbundle"
SIGNATURE_BYTES = 64
# Array dtypes a bundle may hold: bool, integers, floats and fixed-width text (the RUL model's input names);
# never objects (those would need pickle).
DTYPE_KINDS = "biufSU"
# A bundle for one machine template is kilobytes to a few MiB; 256 MiB bounds what a reader will hold.
MAX_BUNDLE_BYTES = 256 * 1024 * 1024

# Manifest keys every bundle carries, with the JSON types they must have.
REQUIRED: dict[str, tuple[type, ...]] = {
    "format": (str,),
    "kind": (str,),
    "template": (str,),
    "signals": (list,),
    "modes": (list, type(None)),
    "fitted_from_ns": (int,),
    "fitted_to_ns": (int,),
    "rows": (int,),
    "data_sha256": (str,),
    "validation": (dict,),
    "version": (str,),
    "software": (str,),
    "created_ns": (int,),
    "key_id": (str,),
    "arrays_sha256": (str,),
}


class Refusal(enum.StrEnum):
    """Why a bundle was refused; the value is the metric label ``reason``."""

    MALFORMED = "malformed"  # not a zip, truncated, wrong members, compressed members, too large
    UNKNOWN_KEY = "unknown_key"  # signed with a key the reader does not trust
    SIGNATURE = "signature"  # the signature does not match the manifest's bytes
    MANIFEST = "manifest"  # not JSON, a key missing or of the wrong type, unknown format or kind
    ARRAYS_HASH = "arrays_hash"  # arrays.npz is not the one the manifest names
    ARRAYS = "arrays"  # arrays.npz unreadable, pickled objects


class BundleError(Exception):
    """A bundle that must not be used; ``reason`` is a ``Refusal``, the message says what and where."""

    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: its manifest, its arrays and the sha256 (hex) of the whole file."""

    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray]
    sha256: str

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
        return list(self.manifest["signals"])


# -- keys -----------------------------------------------------------------------------------------


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short stable id of a public key: the first 16 hex digits of sha256 of its raw 32 bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_private_key(path: Path | str) -> Ed25519PrivateKey:
    """The cloud's signing key from a PEM (PKCS#8, unencrypted) file; ``ValueError`` naming the file if not one."""
    path = Path(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not a readable PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key ({type(key).__name__})")
    return key


def load_public_key(path: Path | str) -> Ed25519PublicKey:
    """A trusted public key from a PEM (SubjectPublicKeyInfo) file; ``ValueError`` naming the file if not one."""
    path = Path(path)
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not a readable PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key ({type(key).__name__})")
    return key


def load_public_keys(paths: Iterable[Path | str]) -> dict[str, Ed25519PublicKey]:
    """Trusted keys by ``key_id`` (several during a key rotation)."""
    keys = (load_public_key(p) for p in paths)
    return {key_id(k): k for k in keys}


# -- writing --------------------------------------------------------------------------------------


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    checked = {}
    for name, a in arrays.items():
        arr = np.asarray(a)
        if arr.dtype.kind not in DTYPE_KINDS:
            raise ValueError(f"array {name!r}: dtype {arr.dtype} is not plain data (bool, int, float or text)")
        checked[name] = arr
    np.savez(buf, **checked)
    return buf.getvalue()


def _manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    # Sorted, compact and strict (no NaN/inf: not JSON): the signature covers these exact bytes.
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def build(manifest: Mapping[str, Any], arrays: Mapping[str, np.ndarray], private_key: Ed25519PrivateKey) -> bytes:
    """The bytes of a signed bundle; sets ``format``, ``key_id`` and ``arrays_sha256`` in the manifest.

    Raises ``ValueError`` if the manifest would not pass ``read`` (so a bad bundle is never written).
    """
    npz = _npz_bytes(arrays)
    doc = dict(manifest)
    doc["format"] = FORMAT
    doc["key_id"] = key_id(private_key.public_key())
    doc["arrays_sha256"] = hashlib.sha256(npz).hexdigest()
    try:
        _check_manifest(doc)
    except BundleError as exc:
        raise ValueError(str(exc)) from exc
    man = _manifest_bytes(doc)
    sig = private_key.sign(man)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in ((MANIFEST, man), (ARRAYS, npz), (SIGNATURE, sig)):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # reproducible bytes
            info.compress_type = zipfile.ZIP_STORED
            z.writestr(info, data)
    return buf.getvalue()


# -- reading --------------------------------------------------------------------------------------


def _members(data: bytes, where: str) -> dict[str, bytes]:
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(Refusal.MALFORMED, f"{where}: {len(data)} bytes, more than {MAX_BUNDLE_BYTES}")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            infos = z.infolist()
            names = [i.filename for i in infos]
            if sorted(names) != sorted(MEMBERS):
                raise BundleError(Refusal.MALFORMED, f"{where}: members {names}, expected exactly {list(MEMBERS)}")
            out = {}
            for info in infos:
                if info.compress_type != zipfile.ZIP_STORED:
                    raise BundleError(Refusal.MALFORMED, f"{where}: member {info.filename} is compressed")
                if info.file_size > len(data):
                    raise BundleError(Refusal.MALFORMED, f"{where}: member {info.filename} larger than the file")
                out[info.filename] = z.read(info)  # checks the member's CRC
            return out
    except BundleError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, KeyError) as exc:
        raise BundleError(Refusal.MALFORMED, f"{where}: not a readable zip archive ({exc})") from exc


def _check_manifest(doc: Any, where: str = "manifest.json") -> None:
    if not isinstance(doc, dict):
        raise BundleError(Refusal.MANIFEST, f"{where}: not a JSON object")
    for key, types in REQUIRED.items():
        if key not in doc:
            raise BundleError(Refusal.MANIFEST, f"{where}: key {key!r} missing")
        value = doc[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise BundleError(Refusal.MANIFEST, f"{where}: {key} has type {type(value).__name__}")
    if doc["format"] != FORMAT:
        raise BundleError(Refusal.MANIFEST, f"{where}: format {doc['format']!r}, this reader knows {FORMAT!r}")
    if doc["kind"] not in KINDS:
        raise BundleError(Refusal.MANIFEST, f"{where}: kind {doc['kind']!r} not one of {list(KINDS)}")
    if not doc["version"] or not doc["template"]:
        raise BundleError(Refusal.MANIFEST, f"{where}: empty version or template")
    signals = doc["signals"]
    if not signals or not all(isinstance(s, str) and s for s in signals) or len(set(signals)) != len(signals):
        raise BundleError(Refusal.MANIFEST, f"{where}: signals must be distinct non-empty names")


def _load_arrays(npz: bytes, where: str) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(npz), allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        # numpy raises ValueError for an object (pickled) array when allow_pickle is False.
        raise BundleError(Refusal.ARRAYS, f"{where}: arrays.npz unreadable ({exc})") from exc
    for name, a in arrays.items():
        if a.dtype.kind not in DTYPE_KINDS:
            raise BundleError(Refusal.ARRAYS, f"{where}: array {name!r} has dtype {a.dtype}, not plain data")
    return arrays


def read(data: bytes, trusted: Mapping[str, Ed25519PublicKey] | Ed25519PublicKey, *,
         where: str = "bundle") -> Bundle:
    """Verify and open a bundle's bytes; ``trusted`` is one public key or keys by ``key_id``.

    Raises ``BundleError`` (with its ``Refusal`` reason) for anything that must not be used; ``where``
    names the bundle (a file, a topic) in the message.
    """
    keys = {key_id(trusted): trusted} if isinstance(trusted, Ed25519PublicKey) else dict(trusted)
    members = _members(data, where)
    man, npz, sig = members[MANIFEST], members[ARRAYS], members[SIGNATURE]
    if len(sig) != SIGNATURE_BYTES:
        raise BundleError(Refusal.SIGNATURE, f"{where}: manifest.sig has {len(sig)} bytes, not {SIGNATURE_BYTES}")
    # The key is chosen by the id the (still unverified) manifest claims; a wrong claim fails the signature.
    try:
        claimed = json.loads(man).get("key_id")
    except (ValueError, AttributeError):
        claimed = None
    key = keys.get(claimed) if isinstance(claimed, str) else None
    if key is None:
        if len(keys) != 1:
            raise BundleError(Refusal.UNKNOWN_KEY, f"{where}: signed by key {claimed!r}, trusted {sorted(keys)}")
        key = next(iter(keys.values()))
        if claimed is not None and claimed != next(iter(keys)):
            raise BundleError(Refusal.UNKNOWN_KEY, f"{where}: signed by key {claimed!r}, trusted {sorted(keys)}")
    try:
        key.verify(sig, man)
    except InvalidSignature as exc:
        raise BundleError(Refusal.SIGNATURE, f"{where}: signature does not match manifest.json") from exc
    try:
        doc = json.loads(man)
    except ValueError as exc:
        raise BundleError(Refusal.MANIFEST, f"{where}: manifest.json is not JSON ({exc})") from exc
    _check_manifest(doc, f"{where}: manifest.json")
    if hashlib.sha256(npz).hexdigest() != doc["arrays_sha256"]:
        raise BundleError(Refusal.ARRAYS_HASH, f"{where}: arrays.npz does not match the manifest's arrays_sha256")
    arrays = _load_arrays(npz, where)
    return Bundle(doc, arrays, hashlib.sha256(data).hexdigest())


def peek_manifest(data: bytes, *, where: str = "bundle") -> dict[str, Any]:
    """The manifest **without** checking the signature: only to name a bundle (its slot, its version) before
    it is verified, never to trust it. Raises ``BundleError`` (``MALFORMED``/``MANIFEST``) like ``read``."""
    man = _members(data, where)[MANIFEST]
    try:
        doc = json.loads(man)
    except ValueError as exc:
        raise BundleError(Refusal.MANIFEST, f"{where}: manifest.json is not JSON ({exc})") from exc
    _check_manifest(doc, f"{where}: manifest.json")
    return dict(doc)


def read_file(path: Path | str, trusted: Mapping[str, Ed25519PublicKey] | Ed25519PublicKey) -> Bundle:
    """``read`` on a file; an unreadable file is ``Refusal.MALFORMED`` naming the path."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BUNDLE_BYTES:
            raise BundleError(Refusal.MALFORMED, f"{path}: {size} bytes, more than {MAX_BUNDLE_BYTES}")
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError(Refusal.MALFORMED, f"{path}: unreadable ({exc})") from exc
    return read(data, trusted, where=str(path))
