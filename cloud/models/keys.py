"""Signing keys for model bundles: ``plantwire models keygen``.

Why Ed25519: small keys and signatures (32 and 64 bytes), fast verification on a gateway, no parameters to
get wrong; ``cryptography`` is already a dependency (TLS). The private key stays with the cloud (PKCS#8 PEM,
file mode 0600, written atomically and never over an existing key); gateways get only the public key
(SubjectPublicKeyInfo PEM), configured beside their TLS credentials.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from plantwire.bundle import key_id


def generate(private_path: Path, public_path: Path | None = None) -> tuple[Path, Path, str]:
    """Write a new key pair; returns (private path, public path, key id). Refuses to replace a private key."""
    private_path = Path(private_path)
    public_path = Path(public_path) if public_path is not None else private_path.with_suffix(".pub")
    if private_path.exists():
        raise FileExistsError(f"{private_path} exists: refusing to replace a signing key (move it away first)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL with mode 0600 from the start: the key is never readable by others, not even for an instant.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = public_path.with_name(public_path.name + ".tmp")
    tmp.write_bytes(pub)
    tmp.replace(public_path)
    return private_path, public_path, key_id(key.public_key())
