"""TLS for MQTT: a small private CA, client contexts with clear errors, secrets, a TLS Mosquitto.

Why here: the edge and the ingestor both connect to the broker with a client certificate whose CN
is their identity (the gateway id; ``plantwire-ingest`` for the ingestor), and the broker's ACL
(``configs/mosquitto/acl``) turns that identity into "may publish only under its own prefix".

- :class:`CertificateAuthority` issues server and client certificates with ``cryptography`` (already
  a dependency); ``plantwire`` tests make theirs at test time, an operator can use it or any PKI.
- :func:`client_context` builds the :class:`ssl.SSLContext` a client hands to paho
  (``client.tls_set_context``): server verified against our CA (hostname included), our certificate
  presented, TLS 1.2 or newer. :func:`explain_tls_error` turns OpenSSL's terse reasons into a
  sentence an operator can act on ("the broker refused our client certificate: it has expired").
- :func:`read_secret` reads a secret from systemd's ``$CREDENTIALS_DIRECTORY`` (``LoadCredential=``)
  or an environment variable (``EnvironmentFile=``), never from a config file.
- :class:`TlsMosquitto` runs a real Mosquitto with the shipped ``configs/mosquitto/plantwire.conf``
  and ``acl`` (paths and port substituted), for tests and for trying the setup on one machine.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from plantwire.services import Mosquitto

__all__ = [
    "CertificateAuthority",
    "IssuedCert",
    "SecretError",
    "TlsMosquitto",
    "TlsRefused",
    "check_tls",
    "client_context",
    "explain_tls_error",
    "read_secret",
]

REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "mosquitto"
#: The paths the shipped broker config names, replaced by :class:`TlsMosquitto`.
SHIPPED_DIR = "/etc/mosquitto/plantwire/"


class SecretError(RuntimeError):
    """A secret named in the config is not where it was said to be."""


class TlsRefused(ConnectionError):
    """The TLS handshake with the broker failed; the message says why in an operator's words."""


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "plantwire"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the start (never world-readable, not even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


@dataclass(frozen=True)
class IssuedCert:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path
    common_name: str


class CertificateAuthority:
    """A self-signed CA (ECDSA P-256) that issues server and client certificates into ``directory``."""

    def __init__(self, directory: Path, common_name: str = "plantwire CA", *, days: int = 3650) -> None:
        """Create a new CA in ``directory`` (``ca.crt``, and ``ca.key`` with mode 0600)."""
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        _write_private(self.directory / "ca.key", self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    @property
    def cert_path(self) -> Path:
        return self.directory / "ca.crt"

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        """Open the CA made earlier in ``directory``, to issue more certificates."""
        directory = Path(directory)
        try:
            key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
        except (OSError, ValueError) as exc:
            raise SecretError(f"no usable CA in {directory}: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise SecretError(f"{directory / 'ca.key'}: not an EC key")
        ca = cls.__new__(cls)
        ca.directory, ca._key, ca.cert = directory, key, cert
        return ca

    def issue(
        self,
        common_name: str,
        *,
        server: bool = False,
        hosts: tuple[str, ...] = (),
        valid_from: dt.datetime | None = None,
        valid_until: dt.datetime | None = None,
        name: str | None = None,
    ) -> IssuedCert:
        """Issue a certificate for ``common_name``; ``hosts`` (DNS names or IPs) go in the SAN of a
        server certificate. ``valid_from``/``valid_until`` let tests make expired certificates."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid_from or now - dt.timedelta(minutes=5))
            .not_valid_after(valid_until or now + dt.timedelta(days=825))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )
        if hosts:
            sans: list[x509.GeneralName] = []
            for h in hosts:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(h)))
                except ValueError:
                    sans.append(x509.DNSName(h))
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        stem = name or common_name
        cert_path, key_path = self.directory / f"{stem}.crt", self.directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
        return IssuedCert(cert_path, key_path, common_name)


def client_context(ca_file: Path, cert_file: Path | None = None, key_file: Path | None = None) -> ssl.SSLContext:
    """A client context that verifies the broker against ``ca_file`` (hostname too) and presents
    our certificate. Missing files raise :class:`SecretError` naming the file, before connecting."""
    for label, path in (("CA certificate", ca_file), ("client certificate", cert_file), ("client key", key_file)):
        if path is not None and not Path(path).is_file():
            raise SecretError(f"{label} {path} not found or not a file")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        ctx.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    return ctx


#: OpenSSL reasons -> what an operator should understand by them.
_REASONS = (
    ("certificate expired", "the broker refused our client certificate: it has expired (or the clock is wrong)"),
    ("unknown ca", "the broker refused our client certificate: it is not signed by the CA the broker trusts"),
    ("bad certificate", "the broker refused our client certificate"),
    ("certificate required", "the broker requires a client certificate and we presented none"),
    ("certificate has expired", "the broker's certificate has expired (or this box's clock is wrong)"),
    ("unable to get local issuer", "the broker's certificate is not signed by our CA (wrong broker or wrong ca_file)"),
    ("self-signed certificate", "the broker's certificate is not signed by our CA (wrong broker or wrong ca_file)"),
    ("hostname mismatch", "the broker's certificate does not name the host we connected to"),
    ("ip address mismatch", "the broker's certificate does not name the address we connected to"),
    ("wrong version number", "the broker port does not speak TLS (plain MQTT listener?)"),
)


def explain_tls_error(exc: BaseException) -> str:
    """One line saying what went wrong in a TLS handshake and what to check, with OpenSSL's reason."""
    text = str(exc)
    reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or ""
    low = f"{reason} {text}".lower()
    for needle, meaning in _REASONS:
        if needle in low:
            return f"{meaning} [{reason or text}]"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return f"the broker closed the connection during the TLS handshake (client certificate refused?) [{text}]"
    return f"TLS handshake failed: {text}"


def check_tls(
    host: str, port: int, ctx: ssl.SSLContext, *, server_hostname: str | None = None, timeout_s: float = 3.0
) -> str:
    """Handshake with ``host:port`` as an MQTT client would and return the TLS version; raises
    :class:`TlsRefused` with :func:`explain_tls_error`'s sentence otherwise.

    Under TLS 1.3 the server judges our certificate after our side of the handshake is done, so a
    refusal only shows on the first read: we wait up to ``timeout_s`` for one (a broker that
    accepted us says nothing until we send CONNECT, so a timeout means accepted).
    ``server_hostname`` is the name the broker's certificate must hold (default ``host``).
    """
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as raw, \
                ctx.wrap_socket(raw, server_hostname=server_hostname or host) as tls:
            version = tls.version() or "?"
            tls.settimeout(min(timeout_s, 1.0))
            try:
                if tls.recv(1) == b"":
                    raise TlsRefused(f"{host}:{port}: the broker closed the connection right after the handshake")
            except TimeoutError:
                pass
            return version
    except TlsRefused:
        raise
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as exc:
        raise TlsRefused(f"{host}:{port}: {explain_tls_error(exc)}") from exc


def read_secret(credential: str | None = None, env: str | None = None) -> str:
    """A secret from ``$CREDENTIALS_DIRECTORY/<credential>`` (systemd ``LoadCredential=``), else from
    the environment variable ``env``; raises :class:`SecretError` saying where it looked."""
    looked: list[str] = []
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if credential:
        if creds:
            path = Path(creds) / credential
            if path.is_file():
                return path.read_text().rstrip("\r\n")
            looked.append(str(path))
        else:
            looked.append(f"credential {credential!r} (no $CREDENTIALS_DIRECTORY: not started by systemd?)")
    if env:
        value = os.environ.get(env)
        if value:
            return value
        looked.append(f"${env}")
    raise SecretError("secret not found; looked in " + ", ".join(looked or ["nowhere (nothing configured)"]))


class TlsMosquitto(Mosquitto):
    """Mosquitto running the shipped ``configs/mosquitto/plantwire.conf`` and ``acl``: TLS listener,
    client certificates required, CN as username, ACL per gateway. ``ca``/``server`` are the CA
    certificate and the broker's own certificate (its SAN must name ``host``)."""

    name = "mosquitto-tls"

    def __init__(
        self,
        state_dir: Path,
        *,
        ca_file: Path,
        server: IssuedCert,
        acl_text: str | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(state_dir, port, host=host)
        self.ca_file = Path(ca_file)
        self.server = server
        self.acl_text = acl_text if acl_text is not None else (REPO_CONFIGS / "acl").read_text()

    def _write_config(self) -> None:
        import pwd

        d = self.state_dir
        (d / "acl").write_text(self.acl_text)
        shipped = (REPO_CONFIGS / "plantwire.conf").read_text()
        files = {"ca.crt": self.ca_file, "server.crt": self.server.cert, "server.key": self.server.key}
        for shipped_name, real in files.items():
            shipped = shipped.replace(SHIPPED_DIR + shipped_name, str(real))
        shipped = shipped.replace(SHIPPED_DIR + "acl", str(d / "acl"))
        if "listener 8883\n" not in shipped or SHIPPED_DIR in shipped:
            raise RuntimeError("configs/mosquitto/plantwire.conf changed shape: update TlsMosquitto")
        shipped = shipped.replace("listener 8883\n", f"listener {self.port} {self.host}\n")
        user = pwd.getpwuid(os.geteuid()).pw_name
        self.config_path.write_text(
            f"# generated by plantwire.tls.TlsMosquitto from configs/mosquitto/plantwire.conf\n"
            f"user {user}\npersistence true\npersistence_location {d}/\n"
            f"log_dest stderr\nlog_type all\nconnection_messages true\n\n{shipped}"
        )

    @property
    def url(self) -> str:
        return f"mqtts://{self.host}:{self.port}"


def main(argv: list[str] | None = None) -> int:
    """``python -m plantwire.tls init DIR`` / ``issue DIR CN [--server HOST ...] [--days N]``: a small
    CA for a small fleet (docs/operations.md, "Trust"). Larger sites use their own PKI."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m plantwire.tls", description=main.__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_init = sub.add_parser("init", help="create a CA (ca.crt, ca.key) in DIR")
    p_init.add_argument("dir", type=Path)
    p_init.add_argument("--name", default="plantwire CA")
    p_issue = sub.add_parser("issue", help="issue CN.crt/CN.key from the CA in DIR")
    p_issue.add_argument("dir", type=Path)
    p_issue.add_argument("cn", help="gateway id, plantwire-ingest, plantwire-operator, or the broker's name")
    p_issue.add_argument("--server", metavar="HOST", action="append", default=[],
                         help="a broker certificate for HOST (repeatable: DNS names and IPs)")
    p_issue.add_argument("--days", type=int, default=825)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "init":
            if (args.dir / "ca.key").exists():
                print(f"{args.dir / 'ca.key'} exists: refusing to replace a CA", file=sys.stderr)
                return 1
            ca = CertificateAuthority(args.dir, args.name)
            print(ca.cert_path)
            return 0
        ca = CertificateAuthority.load(args.dir)
        until = dt.datetime.now(dt.UTC) + dt.timedelta(days=args.days)
        issued = ca.issue(args.cn, server=bool(args.server), hosts=tuple(args.server), valid_until=until)
        print(issued.cert)
        print(issued.key)
        return 0
    except (SecretError, OSError, ValueError) as exc:
        print(f"plantwire.tls: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
