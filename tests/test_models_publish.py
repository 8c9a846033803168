"""``plantwire models publish/status`` against a real Mosquitto running the shipped TLS config and ACL.

One broker for the module. A bundle larger than one chunk (256 KiB) is published as ``plantwire-models``,
reassembled by a gateway from the retained messages alone and verified; a gateway (not the models user)
is refused by the ACL; ``--clear`` empties the slot; ``status`` lists what a gateway's health reports.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from cloud.config import MqttSettings, TlsSettings
from cloud.models import publish
from cloud.models.cli import main
from cloud.models.mqtt import Session
from plantwire import bundle
from plantwire.tls import CertificateAuthority, IssuedCert, TlsMosquitto, client_context

pytestmark = pytest.mark.integration

SITE = "site1"


@dataclass
class Env:
    broker: TlsMosquitto
    ca: CertificateAuthority
    models: IssuedCert
    gw_a: IssuedCert
    ingest: IssuedCert
    key: Ed25519PrivateKey
    pub_path: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    d = tmp_path_factory.mktemp("models-pki")
    ca = CertificateAuthority(d / "ca")
    server = ca.issue("broker", server=True, hosts=("127.0.0.1", "localhost"))
    key = Ed25519PrivateKey.generate()
    pub_path = d / "models.pub"
    pub_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
    broker = TlsMosquitto(tmp_path_factory.mktemp("mosq-models"), ca_file=ca.cert_path, server=server)
    broker.start()
    try:
        yield Env(broker, ca, ca.issue("plantwire-models"), ca.issue("gw-a"), ca.issue("plantwire-ingest"), key,
                  pub_path)
    finally:
        broker.stop()


def _cli(env: Env, cert: IssuedCert, *args: str) -> int:
    return main([*args, "--broker", f"{env.broker.host}:{env.broker.port}", "--ca", str(env.ca.cert_path),
                 "--cert", str(cert.cert), "--key", str(cert.key), "--timeout-s", "20"])


def _settings(env: Env, cert: IssuedCert) -> MqttSettings:
    return MqttSettings(host=env.broker.host, port=env.broker.port,
                        tls=TlsSettings(ca_file=env.ca.cert_path, cert_file=cert.cert, key_file=cert.key))


class Gateway:
    """A gateway's MQTT client (its own certificate) that keeps the latest message per topic."""

    def __init__(self, env: Env, cert: IssuedCert) -> None:
        self.cond = threading.Condition()
        self.msgs: dict[str, bytes] = {}
        self.c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                             client_id=f"{cert.common_name}-{time.time_ns()}", protocol=mqtt.MQTTv5)
        self.c.tls_set_context(client_context(env.ca.cert_path, cert.cert, cert.key))
        connected = threading.Event()
        self.c.on_connect = lambda *a, **k: connected.set()
        self.c.on_message = self._on_message
        self.c.connect(env.broker.host, env.broker.port)
        self.c.loop_start()
        assert connected.wait(20), env.broker.log_tail()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.msgs[msg.topic] = bytes(msg.payload)
            self.cond.notify_all()

    def wait(self, pred: object, timeout_s: float = 20.0) -> bool:
        with self.cond:
            return self.cond.wait_for(pred, timeout_s)  # type: ignore[arg-type]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _big_bundle(key: Ed25519PrivateKey, version: str) -> bytes:
    rng = np.random.default_rng(3)
    manifest = {"kind": "machine_pca", "template": "press", "signals": [f"s{i}" for i in range(40)], "modes": None,
                "fitted_from_ns": 1, "fitted_to_ns": 2, "rows": 10, "data_sha256": "00" * 32, "validation": {},
                "version": version, "software": "test", "created_ns": 3}
    return bundle.build(manifest, {"m0_loadings": rng.normal(size=(400, 200))}, key)  # 640 KB: 3 chunks


def test_publish_chunked_reassemble_clear_and_acl(env: Env, tmp_path: Path) -> None:
    data = _big_bundle(env.key, "20261203T000000.000000Z-aaaaaa")
    assert len(data) > 2 * publish.CHUNK_BYTES
    path = tmp_path / "press.pwbundle"
    path.write_bytes(data)
    base = f"plantwire/models/v1/{SITE}/gw-a/machine_pca/press"

    # A gateway that is not the models user cannot publish a bundle, not even to its own slot.
    assert _cli(env, env.gw_a, "publish", str(path), "--site", SITE, "--gateway", "gw-a") == 1
    assert _cli(env, env.ingest, "publish", str(path), "--site", SITE, "--gateway", "gw-a") == 1

    assert _cli(env, env.models, "publish", str(path), "--site", SITE, "--gateway", "gw-a",
                "--public-key", str(env.pub_path)) == 0
    # The gateway connects afterwards and gets everything from retained messages alone.
    gw = Gateway(env, env.gw_a)
    try:
        gw.c.subscribe(f"plantwire/models/v1/{SITE}/gw-a/#", qos=1)
        n = 3
        assert gw.wait(lambda: f"{base}/head" in gw.msgs and all(f"{base}/chunk/{i}" in gw.msgs for i in range(n)))
        head = json.loads(gw.msgs[f"{base}/head"])
        assert head["chunks"] == n and head["size"] == len(data) and head["version"].endswith("aaaaaa")
        chunks = {i: gw.msgs[f"{base}/chunk/{i}"] for i in range(n)}
        assert all(len(c) <= publish.DIGEST_BYTES + publish.CHUNK_BYTES for c in chunks.values())
        got = publish.reassemble(head, chunks)
        assert got == data
        assert bundle.read(got, env.key.public_key()).version == head["version"]

        # A smaller new bundle replaces it: one chunk, and the surplus old chunks are cleared.
        small = bundle.build({**bundle.read(data, env.key.public_key()).manifest,
                              "version": "20261203T000001.000000Z-bbbbbb"}, {"a": np.zeros(3)}, env.key)
        path.write_bytes(small)
        assert _cli(env, env.models, "publish", str(path), "--site", SITE, "--gateway", "gw-a") == 0
        assert gw.wait(lambda: json.loads(gw.msgs[f"{base}/head"] or b"{}").get("chunks") == 1
                       and gw.msgs.get(f"{base}/chunk/1") == b"" and gw.msgs.get(f"{base}/chunk/2") == b"")
        assert publish.reassemble(json.loads(gw.msgs[f"{base}/head"]), {0: gw.msgs[f"{base}/chunk/0"]}) == small

        # --clear empties the slot: chunks and head.
        assert _cli(env, env.models, "publish", "--clear", "machine_pca/press", "--site", SITE,
                    "--gateway", "gw-a") == 0
        assert gw.wait(lambda: gw.msgs.get(f"{base}/head") == b"" and gw.msgs.get(f"{base}/chunk/0") == b"")
    finally:
        gw.close()
    # Nothing retained under the slot any more (the snapshot waits for a probe behind the retained messages).
    with Session(_settings(env, env.models), timeout_s=20) as s:
        assert s.retained(f"{base}/#") == {}


def test_status_lists_versions_from_health(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    gw = Gateway(env, env.gw_a)
    try:
        doc = {"status": "online", "model_refusals_total": 2,
               "models": {"machine_pca/press": {"active": "v2", "shadow": "v3", "previous": "v1"}}}
        info = gw.c.publish(f"plantwire/v1/{SITE}/gw-a/health", json.dumps(doc).encode(), qos=1, retain=True)
        info.wait_for_publish(20)
    finally:
        gw.close()
    capsys.readouterr()
    assert _cli(env, env.models, "status", "--json", "--settle-s", "0.5") == 0
    rows = json.loads(capsys.readouterr().out)
    mine = [r for r in rows if r["gateway"] == "gw-a"]
    assert mine and mine[0]["online"] and mine[0]["refusals"] == 2
    assert mine[0]["slots"] == [{"slot": "machine_pca/press", "active": "v2", "shadow": "v3", "previous": "v1"}]
