"""OPC-UA secure channel and user identity for the edge client (Basic256Sha256, Sign / SignAndEncrypt).

Commissioning a secured server, step by step (what the operator does once per gateway):

1. Set ``opcua.security`` in the edge config: ``mode: SignAndEncrypt`` (or ``Sign``), and the
   ``certificate`` (DER) and ``private_key`` (PEM) paths, e.g. under the gateway's StateDirectory
   (``/var/lib/plantwire/edge/pki/client.der`` and ``client.pem``).
2. Start the gateway once. When both files are absent it generates a self-signed application
   instance certificate (RSA 2048, SHA-256, one year, application URI ``application_uri`` as a URI
   SubjectAltName and this host's name as DNS SAN) and the key (mode 0600 directory as the
   service user creates it). It never overwrites or "repairs" existing files: a certificate the
   server already trusts must not change behind the operator's back; one file without the other is
   an error.
3. Trust it on the server. The first connection is refused (BadSecurityChecksFailed /
   BadCertificateUntrusted, logged with the certificate's path); most servers then list the
   certificate under "rejected" (Siemens S7-1500: TIA Portal certificate manager; Kepware: OPC UA
   Configuration Manager > Trusted Clients; open62541/UaExpert-style PKI: move it from
   ``pki/rejected/`` to ``pki/trusted/certs/``). Move it to trusted; the gateway's back-off
   retries and connects without a restart.
4. Optionally pin the server: copy the server's certificate to the gateway and set
   ``server_certificate``; otherwise the client takes it from the server's endpoint list
   (trust on first use at every connect).
5. User and password, when the server wants them, come from an environment file
   (``credentials_file``, ``KEY=value`` lines, readable by the service user only, the same file
   systemd's ``EnvironmentFile=`` takes) or from the process environment; ``username_key`` and
   ``password_key`` name the variables. They are never in the config file.

Renewal: delete both files before expiry and repeat steps 2-3.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto import security_policies

from edge.config import OpcuaSecurity, SecurityMode

__all__ = ["SecurityConfigError", "apply_security", "ensure_certificate", "read_credentials", "read_env_file"]

_MODE = {
    SecurityMode.SIGN: ua.MessageSecurityMode.Sign,
    SecurityMode.SIGN_AND_ENCRYPT: ua.MessageSecurityMode.SignAndEncrypt,
}


class SecurityConfigError(ValueError):
    """Security settings that cannot work (missing file, missing credential); names the place."""


def read_env_file(path: Path) -> dict[str, str]:
    """Parse ``KEY=value`` lines (systemd EnvironmentFile subset: comments, blank lines, optional quotes)."""
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise SecurityConfigError(f"{path}:{n}: expected KEY=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def read_credentials(sec: OpcuaSecurity) -> tuple[str, str] | None:
    """(user, password) from the credentials file or the environment; None when none are configured."""
    if sec.username_key is None or sec.password_key is None:
        return None
    if sec.credentials_file is not None:
        try:
            source = read_env_file(sec.credentials_file)
        except OSError as exc:
            raise SecurityConfigError(f"opcua.security.credentials_file: cannot read {sec.credentials_file}: "
                                      f"{exc.strerror}") from None
        where = str(sec.credentials_file)
    else:
        source = dict(os.environ)
        where = "the environment"
    missing = [k for k in (sec.username_key, sec.password_key) if k not in source]
    if missing:
        raise SecurityConfigError(f"opcua.security: {', '.join(missing)} not set in {where}")
    return source[sec.username_key], source[sec.password_key]


async def ensure_certificate(client: Client, sec: OpcuaSecurity) -> tuple[Path, Path]:
    """The client certificate and key paths, generating both on first run (never overwriting one)."""
    cert, key = sec.certificate, sec.private_key
    if cert is None or key is None:
        raise SecurityConfigError("opcua.security: certificate and private_key are required for Sign modes")
    has_cert, has_key = cert.exists(), key.exists()
    if has_cert != has_key:
        present, absent = (cert, key) if has_cert else (key, cert)
        raise SecurityConfigError(f"opcua.security: {present} exists but {absent} does not; restore it or "
                                  "delete both to generate a new pair (and trust the new certificate)")
    if not has_cert:
        await client.setup_self_signed_certificate(key_file=key, cert_file=cert)
        os.chmod(key, 0o600)
    return cert, key


async def apply_security(client: Client, sec: OpcuaSecurity, timeout_s: float) -> None:
    """Configure ``client`` before connect(): secure channel (may fetch the server's endpoints) and user."""
    creds = read_credentials(sec)
    if creds is not None:
        client.set_user(creds[0])
        client.set_password(creds[1])
    if sec.mode is SecurityMode.NONE:
        return
    cert, key = await ensure_certificate(client, sec)
    server_cert = str(sec.server_certificate) if sec.server_certificate is not None else None
    async with asyncio.timeout(timeout_s * 2 + 1):
        await client.set_security(security_policies.SecurityPolicyBasic256Sha256, certificate=str(cert),
                                  private_key=str(key), server_certificate=server_cert, mode=_MODE[sec.mode])
