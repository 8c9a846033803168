"""Model bundles (plantwire.bundle): a round trip, and every way a bundle must be refused, with its reason."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from plantwire import bundle
from plantwire.bundle import BundleError, Refusal


def _manifest() -> dict:
    return {
        "kind": "machine_pca", "template": "press", "signals": ["oil_temp", "pressure", "speed"], "modes": None,
        "fitted_from_ns": 1_000, "fitted_to_ns": 2_000, "rows": 500, "data_sha256": "ab" * 32,
        "validation": {"false_alarm_rate": 0.01}, "version": "20261203T104500Z-000001", "software": "0.1.0",
        "created_ns": 3_000,
    }


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"m0_mean": rng.normal(size=9), "m0_loadings": rng.normal(size=(9, 3)), "count": np.arange(4),
            "names": np.array(["oil_temp", "pressure"])}


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def data(key: Ed25519PrivateKey) -> bytes:
    return bundle.build(_manifest(), _arrays(), key)


def _members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist()}


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as z:
        for name, payload in members.items():
            z.writestr(name, payload)
    return buf.getvalue()


def _refused(data: bytes, key, reason: Refusal) -> BundleError:
    with pytest.raises(BundleError) as err:
        bundle.read(data, key)
    assert err.value.reason is reason, str(err.value)
    return err.value


def test_round_trip(key: Ed25519PrivateKey, data: bytes, tmp_path) -> None:
    path = tmp_path / f"press{bundle.SUFFIX}"
    path.write_bytes(data)
    got = bundle.read_file(path, key.public_key())
    assert got.kind == "machine_pca" and got.template == "press" and got.signals == ["oil_temp", "pressure", "speed"]
    assert got.manifest["format"] == bundle.FORMAT
    assert got.manifest["key_id"] == bundle.key_id(key.public_key())
    assert got.sha256 == hashlib.sha256(data).hexdigest()
    for name, a in _arrays().items():
        np.testing.assert_array_equal(got.arrays[name], a)
        assert got.arrays[name].dtype == a.dtype
    # Stored, not compressed; exactly three members; the same inputs give the same bytes.
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert sorted(z.namelist()) == sorted(bundle.MEMBERS)
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
    assert bundle.build(_manifest(), _arrays(), key) == data


def test_several_trusted_keys_pick_by_key_id(key: Ed25519PrivateKey, data: bytes) -> None:
    other = Ed25519PrivateKey.generate().public_key()
    trusted = {bundle.key_id(other): other, bundle.key_id(key.public_key()): key.public_key()}
    assert bundle.read(data, trusted).version == "20261203T104500Z-000001"


def test_keys_from_pem_files(key: Ed25519PrivateKey, data: bytes, tmp_path) -> None:
    from cryptography.hazmat.primitives import serialization

    pub = tmp_path / "models.pub"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    keys = bundle.load_public_keys([pub])
    assert bundle.read(data, keys).kind == "machine_pca"
    with pytest.raises(ValueError, match="not-a-key"):
        (tmp_path / "not-a-key").write_text("hello")
        bundle.load_public_key(tmp_path / "not-a-key")


def test_wrong_key_is_refused(data: bytes) -> None:
    _refused(data, Ed25519PrivateKey.generate().public_key(), Refusal.UNKNOWN_KEY)


def test_manifest_signed_under_a_forged_key_id_is_refused(key, data: bytes) -> None:
    # The attacker claims the trusted key's id but cannot sign: the signature check refuses it.
    forger = Ed25519PrivateKey.generate()
    forged = bundle.build(_manifest(), _arrays(), forger)
    m = _members(forged)
    doc = json.loads(m[bundle.MANIFEST])
    doc["key_id"] = bundle.key_id(key.public_key())
    m[bundle.MANIFEST] = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    m[bundle.SIGNATURE] = forger.sign(m[bundle.MANIFEST])
    _refused(_zip(m), key.public_key(), Refusal.SIGNATURE)


def test_tampered_manifest_is_refused(key, data: bytes) -> None:
    m = _members(data)
    m[bundle.MANIFEST] = m[bundle.MANIFEST].replace(b'"rows":500', b'"rows":501')
    assert b'"rows":501' in m[bundle.MANIFEST]
    _refused(_zip(m), key.public_key(), Refusal.SIGNATURE)


def test_tampered_arrays_are_refused(key, data: bytes) -> None:
    m = _members(data)
    arrays = _arrays()
    arrays["m0_mean"][0] += 1e-9
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    m[bundle.ARRAYS] = buf.getvalue()
    _refused(_zip(m), key.public_key(), Refusal.ARRAYS_HASH)


def test_truncated_zip_is_refused(key, data: bytes) -> None:
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        _refused(data[:cut], key.public_key(), Refusal.MALFORMED)


def test_wrong_members_or_compression_are_refused(key, data: bytes) -> None:
    m = _members(data)
    _refused(_zip({**m, "extra.txt": b"x"}), key.public_key(), Refusal.MALFORMED)
    _refused(_zip({k: v for k, v in m.items() if k != bundle.SIGNATURE}), key.public_key(), Refusal.MALFORMED)
    _refused(_zip(m, zipfile.ZIP_DEFLATED), key.public_key(), Refusal.MALFORMED)


def test_pickle_in_npz_is_refused_even_when_signed(key: Ed25519PrivateKey) -> None:
    # A correctly signed and hashed bundle whose npz holds an object array: the reader must not unpickle it.
    buf = io.BytesIO()
    np.savez(buf, evil=np.array([{"a": 1}], dtype=object))
    npz = buf.getvalue()
    doc = {**_manifest(), "format": bundle.FORMAT, "key_id": bundle.key_id(key.public_key()),
           "arrays_sha256": hashlib.sha256(npz).hexdigest()}
    man = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    data = _zip({bundle.MANIFEST: man, bundle.ARRAYS: npz, bundle.SIGNATURE: key.sign(man)})
    _refused(data, key.public_key(), Refusal.ARRAYS)


def test_build_refuses_what_read_would_refuse(key) -> None:
    with pytest.raises(ValueError, match="kind"):
        bundle.build({**_manifest(), "kind": "deep_net"}, _arrays(), key)
    with pytest.raises(ValueError, match="rows"):
        bundle.build({k: v for k, v in _manifest().items() if k != "rows"}, _arrays(), key)
    with pytest.raises(ValueError, match="not plain data"):
        bundle.build(_manifest(), {"objects": np.array([{"a": 1}], dtype=object)}, key)
    with pytest.raises(ValueError):
        bundle.build({**_manifest(), "validation": {"x": float("nan")}}, _arrays(), key)


def test_signed_manifest_missing_a_key_is_refused(key) -> None:
    npz_buf = io.BytesIO()
    np.savez(npz_buf, a=np.zeros(3))
    npz = npz_buf.getvalue()
    doc = {**_manifest(), "format": bundle.FORMAT, "key_id": bundle.key_id(key.public_key()),
           "arrays_sha256": hashlib.sha256(npz).hexdigest()}
    del doc["signals"]
    man = json.dumps(doc).encode()
    err = _refused(_zip({bundle.MANIFEST: man, bundle.ARRAYS: npz, bundle.SIGNATURE: key.sign(man)}),
                   key.public_key(), Refusal.MANIFEST)
    assert "signals" in str(err)


def test_peek_manifest_names_a_bundle_without_trusting_it(key, data: bytes) -> None:
    m = _members(data)
    m[bundle.SIGNATURE] = bytes(64)  # a broken signature: peek still names it, read refuses it
    broken = _zip(m)
    assert bundle.peek_manifest(broken)["version"] == "20261203T104500Z-000001"
    _refused(broken, key.public_key(), Refusal.SIGNATURE)
    with pytest.raises(BundleError) as err:
        bundle.peek_manifest(b"not a zip")
    assert err.value.reason is Refusal.MALFORMED
