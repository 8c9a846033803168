"""MQTT over TLS with client certificates: a real Mosquitto TLS listener, certificates made by openssl."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from cloud.app import Ingestor
from cloud.config import load_cloud
from plantwire import wire
from plantwire.services import InfluxDB1, Mosquitto
from tests.test_ingest import GW, SITE, batch, expected, running, stored, table_payload, wait_for


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    d = tmp_path_factory.mktemp("pki")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=plantwire test CA",
        cwd=d,
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, cn in (("server", "127.0.0.1"), ("client", "plantwire-ingest")):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={cn}",
            cwd=d,
        )
        extra = ["-extfile", "san.ext"] if name == "server" else []
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "2",
            *extra,
            cwd=d,
        )
    return d


class TlsMosquitto(Mosquitto):
    """The project's Mosquitto with its listener switched to TLS, client certificates required."""

    def __init__(self, state_dir: Path, pki: Path) -> None:
        super().__init__(state_dir)
        self.pki = pki

    def _write_config(self) -> None:
        super()._write_config()
        text = self.config_path.read_text()
        tls = "\n".join(
            [
                f"cafile {self.pki / 'ca.crt'}",
                f"certfile {self.pki / 'server.crt'}",
                f"keyfile {self.pki / 'server.key'}",
                "require_certificate true",
            ]
        )
        listener = f"listener {self.port} {self.host}"
        self.config_path.write_text(text.replace(listener, f"{listener}\n{tls}"))


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Path) -> Iterator[TlsMosquitto]:
    b = TlsMosquitto(tmp_path / "mqtt", pki)
    b.start()
    try:
        yield b
    finally:
        b.stop()


def test_ingest_over_tls_with_a_client_certificate(
    tmp_path: Path, pki: Path, tls_broker: TlsMosquitto, influxdb: InfluxDB1, influx_db: str
) -> None:
    # Relative paths in the file are taken relative to the file's folder.
    for f in ("ca.crt", "client.crt", "client.key"):
        (tmp_path / f).write_bytes((pki / f).read_bytes())
    path = tmp_path / "cloud.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "mqtt": {
                    "host": "127.0.0.1",
                    "port": tls_broker.port,
                    "client_id": "ingest-tls",
                    "tls": {"ca_file": "ca.crt", "cert_file": "client.crt", "key_file": "client.key"},
                },
                "influx": {"url": influxdb.url, "database": influx_db},
                "state_dir": "state",
                "metrics": {"port": 0},
                "ingest": {"linger_ms": 5},
            }
        )
    )
    cfg = load_cloud(path)
    assert cfg.mqtt.tls is not None and cfg.mqtt.tls.ca_file == tmp_path / "ca.crt"
    pub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="pub-tls", protocol=mqtt.MQTTv5)
    pub.tls_set(ca_certs=str(pki / "ca.crt"), certfile=str(pki / "client.crt"), keyfile=str(pki / "client.key"))
    pub.connect("127.0.0.1", tls_broker.port)
    pub.loop_start()
    try:
        pub.publish(wire.topic(SITE, GW, "signals"), table_payload(), qos=1, retain=True).wait_for_publish(10)
        with running(cfg) as ing:
            p, cols = batch(0)
            pub.publish(wire.topic(SITE, GW, "telemetry"), p, qos=1).wait_for_publish(10)
            wait_for(lambda: ing.m_samples.get() == 40 and ing.pending() == 0, what="written over TLS")
        assert stored(influxdb, influx_db) == expected(cols)
    finally:
        pub.disconnect()
        pub.loop_stop()


def test_without_a_client_certificate_the_broker_refuses(
    tmp_path: Path, pki: Path, tls_broker: TlsMosquitto, influxdb: InfluxDB1, influx_db: str
) -> None:
    path = tmp_path / "cloud.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "mqtt": {
                    "host": "127.0.0.1",
                    "port": tls_broker.port,
                    "client_id": "ingest-nocert",
                    "tls": {"ca_file": str(pki / "ca.crt")},
                },
                "influx": {"url": influxdb.url, "database": influx_db},
                "state_dir": "state",
                "metrics": {"port": 0},
            }
        )
    )
    ing = Ingestor(load_cloud(path))
    ing.start()
    try:
        time.sleep(1.5)
        assert not ing.source.connected and ing.health()["status"] == "degraded"
    finally:
        ing.close()
