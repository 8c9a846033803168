"""MQTT over TLS with client certificates and the shipped ACL, against a real Mosquitto.

The test makes its own CA and certificates, runs Mosquitto with ``configs/mosquitto/plantwire.conf``
and ``configs/mosquitto/acl`` as shipped (paths and port substituted), and proves what the issue asks:
gateway A cannot publish under gateway B's prefix while it can under its own, the ingestor's
identity reads everything, and a wrong, expired or missing certificate is refused with a clear error.
"""

from __future__ import annotations

import datetime as dt
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from plantwire.tls import (
    CertificateAuthority,
    IssuedCert,
    SecretError,
    TlsMosquitto,
    TlsRefused,
    check_tls,
    client_context,
    read_secret,
)

pytestmark = pytest.mark.integration

SITE = "site1"


@dataclass
class Pki:
    ca: CertificateAuthority
    server: IssuedCert
    gw_a: IssuedCert
    gw_b: IssuedCert
    ingest: IssuedCert
    rogue_a: IssuedCert  # CN gw-a, but from another CA
    expired_a: IssuedCert
    rogue_ca: CertificateAuthority


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(d / "ca")
    rogue = CertificateAuthority(d / "rogue", "someone else's CA")
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    return Pki(
        ca=ca,
        server=ca.issue("broker", server=True, hosts=("127.0.0.1", "localhost")),
        gw_a=ca.issue("gw-a"),
        gw_b=ca.issue("gw-b"),
        ingest=ca.issue("plantwire-ingest"),
        rogue_a=rogue.issue("gw-a"),
        expired_a=ca.issue("gw-a", valid_from=past - dt.timedelta(days=1), valid_until=past, name="gw-a-expired"),
        rogue_ca=rogue,
    )


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TlsMosquitto]:
    b = TlsMosquitto(tmp_path_factory.mktemp("mosq-tls"), ca_file=pki.ca.cert_path, server=pki.server)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@dataclass
class Client:
    """A paho MQTT 5 client over TLS that records messages, PUBACK and SUBACK reason codes."""

    cert: IssuedCert
    client: mqtt.Client
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    pubacks: dict[int, int] = field(default_factory=dict)
    subacks: dict[int, list[int]] = field(default_factory=dict)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def wait(self, pred: object, timeout_s: float = 5.0) -> bool:
        with self.cond:
            return self.cond.wait_for(pred, timeout_s)  # type: ignore[arg-type]

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish at QoS 1 and return the PUBACK reason code."""
        info = self.client.publish(topic, payload, qos=1)
        assert self.wait(lambda: info.mid in self.pubacks), f"no PUBACK for {topic}"
        return self.pubacks[info.mid]

    def subscribe(self, topic: str) -> int:
        _, mid = self.client.subscribe(topic, qos=1)
        assert self.wait(lambda: mid in self.subacks), f"no SUBACK for {topic}"
        return self.subacks[mid][0]


def connect(broker: TlsMosquitto, ca: Path, cert: IssuedCert) -> Client:
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"{cert.common_name}-{time.time_ns()}",
                    protocol=mqtt.MQTTv5)
    c.tls_set_context(client_context(ca, cert.cert, cert.key))
    wrap = Client(cert, c)
    connected = threading.Event()

    def on_connect(client: mqtt.Client, userdata: object, flags: object, rc: object, props: object = None) -> None:
        connected.set()

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with wrap.cond:
            wrap.messages.append((msg.topic, msg.payload))
            wrap.cond.notify_all()

    def on_publish(client: mqtt.Client, userdata: object, mid: int, rc: object, props: object = None) -> None:
        with wrap.cond:
            wrap.pubacks[mid] = int(getattr(rc, "value", rc))  # type: ignore[arg-type]
            wrap.cond.notify_all()

    def on_subscribe(client: mqtt.Client, userdata: object, mid: int, rcs: list[object], props: object = None) -> None:
        with wrap.cond:
            wrap.subacks[mid] = [int(getattr(r, "value", r)) for r in rcs]  # type: ignore[call-overload]
            wrap.cond.notify_all()

    c.on_connect, c.on_message, c.on_publish, c.on_subscribe = on_connect, on_message, on_publish, on_subscribe
    c.connect(broker.host, broker.port)
    c.loop_start()
    assert connected.wait(5), f"{cert.common_name} did not connect:\n{broker.log_tail()}"
    return wrap


@pytest.fixture
def clients(broker: TlsMosquitto, pki: Pki) -> Iterator[dict[str, Client]]:
    made = {name: connect(broker, pki.ca.cert_path, cert)
            for name, cert in (("a", pki.gw_a), ("b", pki.gw_b), ("ingest", pki.ingest))}
    try:
        yield made
    finally:
        for c in made.values():
            c.client.loop_stop()
            c.client.disconnect()


NOT_AUTHORIZED = 135  # MQTT 5 reason code 0x87


def test_gateway_publishes_only_under_its_own_prefix(clients: dict[str, Client], broker: TlsMosquitto) -> None:
    a, b, ingest = clients["a"], clients["b"], clients["ingest"]
    assert ingest.subscribe("plantwire/v1/#") == 1  # granted QoS 1: the ingestor reads everything
    own_a = f"plantwire/v1/{SITE}/gw-a/telemetry"
    own_b = f"plantwire/v1/{SITE}/gw-b/telemetry"
    assert a.publish(own_a, b"a-own") == 0
    assert a.publish(own_b, b"a-as-b") == NOT_AUTHORIZED  # refused, and A is told so
    assert a.publish(f"plantwire/v1/{SITE}/gw-b/health", b"a-as-b-health") == NOT_AUTHORIZED
    assert a.publish("plantwire/v1/other-site/gw-b/events", b"a-as-b-elsewhere") == NOT_AUTHORIZED
    assert a.publish("elsewhere/gw-a", b"off-tree") == NOT_AUTHORIZED
    assert b.publish(own_b, b"b-own") == 0
    assert ingest.wait(lambda: len(ingest.messages) >= 2)
    time.sleep(0.3)  # anything wrongly routed would have arrived by now
    assert sorted(ingest.messages) == [(own_a, b"a-own"), (own_b, b"b-own")]
    assert "Denied PUBLISH from gw-a" in broker.log_tail(400)


def test_acks_reach_only_their_gateway(clients: dict[str, Client]) -> None:
    a, b, ingest = clients["a"], clients["b"], clients["ingest"]
    assert a.subscribe(f"plantwire/v1/{SITE}/gw-a/ack") == 1
    # Mosquitto grants a wildcard subscription and applies the read ACL to each message it would
    # deliver: A may subscribe to B's subtree but receives nothing of it.
    a.subscribe(f"plantwire/v1/{SITE}/gw-b/#")
    a.subscribe("plantwire/v1/#")
    assert ingest.publish(f"plantwire/v1/{SITE}/gw-a/ack", b"wm-a") == 0
    assert ingest.publish(f"plantwire/v1/{SITE}/gw-b/ack", b"wm-b") == 0
    assert b.publish(f"plantwire/v1/{SITE}/gw-b/telemetry", b"b-data") == 0
    assert a.wait(lambda: a.messages)
    time.sleep(0.3)
    # Overlapping subscriptions may deliver it more than once (MQTT 5 allows that); nothing of B's.
    assert set(a.messages) == {(f"plantwire/v1/{SITE}/gw-a/ack", b"wm-a")}
    # Only the ingestor may write acks for a gateway other than itself.
    assert b.publish(f"plantwire/v1/{SITE}/gw-a/ack", b"forged") == NOT_AUTHORIZED


def test_good_certificate_handshakes(broker: TlsMosquitto, pki: Pki) -> None:
    version = check_tls(broker.host, broker.port, client_context(pki.ca.cert_path, pki.gw_a.cert, pki.gw_a.key))
    assert version in ("TLSv1.2", "TLSv1.3")


@pytest.mark.parametrize(
    ("which", "expected"),
    [
        ("rogue", "not signed by the CA the broker trusts"),
        ("expired", "it has expired"),
        ("none", "requires a client certificate"),
        ("untrusted-broker", "broker's certificate is not signed by our CA"),
        ("wrong-host", "does not name the host"),
    ],
)
def test_bad_certificates_are_refused_with_a_clear_error(broker: TlsMosquitto, pki: Pki, which: str,
                                                         expected: str) -> None:
    ca, name = pki.ca.cert_path, None
    ctx: ssl.SSLContext
    if which == "rogue":
        ctx = client_context(ca, pki.rogue_a.cert, pki.rogue_a.key)
    elif which == "expired":
        ctx = client_context(ca, pki.expired_a.cert, pki.expired_a.key)
    elif which == "none":
        ctx = client_context(ca)
    elif which == "untrusted-broker":
        ctx = client_context(pki.rogue_ca.cert_path, pki.gw_a.cert, pki.gw_a.key)
    else:
        ctx = client_context(ca, pki.gw_a.cert, pki.gw_a.key)
        name = "broker.wrong.example"  # a stale name in a client's config: not in the certificate's SAN
    with pytest.raises(TlsRefused, match=expected) as info:
        check_tls(broker.host, broker.port, ctx, server_hostname=name)
    assert str(info.value).startswith(f"{broker.host}:{broker.port}: ")


def test_refused_client_never_gets_to_publish(broker: TlsMosquitto, pki: Pki, clients: dict[str, Client]) -> None:
    """An expired certificate: paho does not connect, and nothing it tried reaches the ingestor."""
    ingest = clients["ingest"]
    assert ingest.subscribe("plantwire/v1/#") == 1
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="gw-a-expired", protocol=mqtt.MQTTv5)
    c.tls_set_context(client_context(pki.ca.cert_path, pki.expired_a.cert, pki.expired_a.key))
    connected = threading.Event()
    c.on_connect = lambda *args: connected.set()
    try:
        c.connect(broker.host, broker.port)
        c.loop_start()
        c.publish(f"plantwire/v1/{SITE}/gw-a/telemetry", b"from-expired", qos=1)
    except (ssl.SSLError, OSError):
        pass  # TLS 1.2: refused during connect()
    finally:
        time.sleep(1.0)
        c.loop_stop()
    assert not connected.is_set()
    assert not [m for m in ingest.messages if m[1] == b"from-expired"]


def test_secrets_come_from_credentials_or_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setenv("PW_TEST_SECRET", "from-env")
    assert read_secret("mqtt-password", "PW_TEST_SECRET") == "from-env"
    (tmp_path / "mqtt-password").write_text("from-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert read_secret("mqtt-password", "PW_TEST_SECRET") == "from-credential"
    monkeypatch.delenv("PW_TEST_SECRET")
    with pytest.raises(SecretError, match=r"mqtt-token.*\$PW_TEST_SECRET"):
        read_secret("mqtt-token", "PW_TEST_SECRET")
    with pytest.raises(SecretError, match=r"client key .*nope\.key not found"):
        client_context(tmp_path / "mqtt-password", tmp_path / "mqtt-password", tmp_path / "nope.key")


def test_operator_ca_cli_issues_certificates_the_broker_accepts(tmp_path: Path) -> None:
    """The trust step of docs/operations.md: `python -m plantwire.tls init/issue`, then a handshake."""
    import stat
    import subprocess
    import sys

    def tls_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "plantwire.tls", *args], capture_output=True, text=True,
                              timeout=60, check=False)

    ca_dir = tmp_path / "ca"
    assert tls_cli("init", str(ca_dir)).returncode == 0
    assert stat.S_IMODE((ca_dir / "ca.key").stat().st_mode) == 0o600
    again = tls_cli("init", str(ca_dir))
    assert again.returncode == 1 and "refusing to replace" in again.stderr
    assert tls_cli("issue", str(ca_dir), "broker", "--server", "127.0.0.1", "--server", "localhost").returncode == 0
    out = tls_cli("issue", str(ca_dir), "gw-line1-01", "--days", "30")
    assert out.returncode == 0 and out.stdout.split() == [str(ca_dir / "gw-line1-01.crt"),
                                                         str(ca_dir / "gw-line1-01.key")]
    assert stat.S_IMODE((ca_dir / "gw-line1-01.key").stat().st_mode) == 0o600
    missing = tls_cli("issue", str(tmp_path / "nowhere"), "gw")
    assert missing.returncode == 1 and "no usable CA" in missing.stderr

    server = IssuedCert(ca_dir / "broker.crt", ca_dir / "broker.key", "broker")
    with TlsMosquitto(tmp_path / "mosq", ca_file=ca_dir / "ca.crt", server=server) as broker:
        ctx = client_context(ca_dir / "ca.crt", ca_dir / "gw-line1-01.crt", ca_dir / "gw-line1-01.key")
        assert check_tls(broker.host, broker.port, ctx) in ("TLSv1.2", "TLSv1.3")
