"""The edge's MQTT publisher over TLS with a client certificate, against a real Mosquitto running the
shipped TLS + ACL config: its own prefix is accepted and acknowledged, the cloud's ack on its own
ack topic reaches it, and a certificate from another CA fails before anything is sent."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import MqttSettings, MqttTlsSettings
from edge.sinks.mqtt import MqttPublisher
from plantwire.tls import CertificateAuthority, IssuedCert, SecretError, TlsMosquitto, client_context

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, IssuedCert | CertificateAuthority]:
    d = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(d / "ca")
    return {
        "ca": ca,
        "server": ca.issue("broker", server=True, hosts=("127.0.0.1", "localhost")),
        "gw": ca.issue("gw-a"),
        "ingest": ca.issue("plantwire-ingest"),
        "rogue": CertificateAuthority(d / "rogue", "someone else").issue("gw-a"),
    }


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, pki: dict) -> Iterator[TlsMosquitto]:
    b = TlsMosquitto(tmp_path_factory.mktemp("mosq"), ca_file=pki["ca"].cert_path, server=pki["server"])
    b.start()
    try:
        yield b
    finally:
        b.stop()


def _settings(broker: TlsMosquitto, pki: dict, cert: IssuedCert) -> MqttSettings:
    tls = MqttTlsSettings(ca_file=pki["ca"].cert_path, cert_file=cert.cert, key_file=cert.key)
    return MqttSettings(host="127.0.0.1", port=broker.port, tls=tls)


def _wait(pred, timeout_s: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_edge_publishes_over_tls_and_receives_its_acks(broker: TlsMosquitto, pki: dict) -> None:
    pub = MqttPublisher(_settings(broker, pki, pki["gw"]), "edge-gw-a")
    got: list[bytes] = []
    pub.subscribe("plantwire/v1/site1/gw-a/ack", lambda topic, payload: got.append(payload))
    pub.start()
    try:
        assert _wait(lambda: pub.connected), "edge did not connect over TLS"
        pub.publish("plantwire/v1/site1/gw-a/telemetry", b"x" * 100, 10)
        assert pub.wait_acked(10), "PUBACK not received over TLS"
        assert pub.stats.samples_acked == 10
        # The ingestor's identity may write acks; the gateway may read its own.
        ing = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ing", protocol=mqtt.MQTTv5)
        ing.tls_set_context(client_context(pki["ca"].cert_path, pki["ingest"].cert, pki["ingest"].key))
        ing.connect("127.0.0.1", broker.port)
        ing.loop_start()
        try:
            # Retry until the edge's subscription is in place (it subscribes on connect).
            assert _wait(lambda: bool(ing.publish("plantwire/v1/site1/gw-a/ack", b"ack", qos=1)) and bool(got), 10)
        finally:
            ing.loop_stop()
            ing.disconnect()
    finally:
        pub.stop()


def test_certificate_from_another_ca_never_connects(broker: TlsMosquitto, pki: dict) -> None:
    pub = MqttPublisher(_settings(broker, pki, pki["rogue"]), "edge-rogue")
    pub.start()
    try:
        assert not _wait(lambda: pub.connected, 3.0), "a certificate from another CA was accepted"
    finally:
        pub.stop()


def test_missing_key_file_is_named_before_connecting(broker: TlsMosquitto, pki: dict, tmp_path: Path) -> None:
    settings = _settings(broker, pki, pki["gw"])
    assert settings.tls is not None
    bad = settings.model_copy(update={"tls": settings.tls.model_copy(update={"key_file": tmp_path / "nope.key"})})
    with pytest.raises(SecretError, match=r"nope\.key"):
        MqttPublisher(bad, "edge-x")
