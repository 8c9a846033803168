"""The command topics under the shipped ACL, on a real TLS Mosquitto: only ``plantwire-operator`` publishes
commands; a gateway reads its own and no other's, and may publish none (not even its own), but answers
on its own ``cmdresult`` lane."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from plantwire.tls import CertificateAuthority, IssuedCert, TlsMosquitto
from tests.test_acl_tls import NOT_AUTHORIZED, SITE, Client, connect

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TlsMosquitto, Path, dict[str, Client]]]:
    d = tmp_path_factory.mktemp("pki-cmd")
    ca = CertificateAuthority(d / "ca")
    server = ca.issue("broker", server=True, hosts=("127.0.0.1", "localhost"))
    with TlsMosquitto(tmp_path_factory.mktemp("mosq-cmd"), ca_file=ca.cert_path, server=server) as broker:
        clients = {cn: connect(broker, ca.cert_path, ca.issue(cn))
                   for cn in ("plantwire-operator", "gw-a", "gw-b", "plantwire-ingest")}
        ca.issue("plantwire-operator", name="operator-cli")
        try:
            yield broker, ca.cert_path, clients
        finally:
            for c in clients.values():
                c.client.disconnect()
                c.client.loop_stop()


def test_only_the_operator_publishes_commands(setup: tuple[TlsMosquitto, Path, dict[str, Client]]) -> None:
    broker, _, c = setup
    op, a, b, ingest = c["plantwire-operator"], c["gw-a"], c["gw-b"], c["plantwire-ingest"]
    cmd_a = f"plantwire/cmd/v1/{SITE}/gw-a/alarms"
    cmd_b = f"plantwire/cmd/v1/{SITE}/gw-b/alarms"
    assert a.subscribe(f"plantwire/cmd/v1/{SITE}/gw-a/#") == 1
    b.subscribe("plantwire/cmd/v1/#")  # granted, but the read ACL lets only gw-b's own through
    assert op.publish(cmd_a, b"op-to-a") == 0
    assert op.publish(cmd_b, b"op-to-b") == 0
    # Received before the refusals below: Mosquitto drops a connection after refusing its publication.
    assert a.wait(lambda: a.messages) and b.wait(lambda: b.messages)
    assert a.publish(cmd_b, b"a-as-operator-to-b") == NOT_AUTHORIZED  # another gateway's commands
    assert a.publish(cmd_a, b"a-to-itself") == NOT_AUTHORIZED  # nor its own
    assert ingest.publish(cmd_a, b"ingest-to-a") == NOT_AUTHORIZED  # the ingestor is not the operator
    time.sleep(0.3)  # anything wrongly routed would have arrived by now
    assert set(a.messages) == {(cmd_a, b"op-to-a")}
    assert set(b.messages) == {(cmd_b, b"op-to-b")}
    assert "Denied PUBLISH from gw-a" in broker.log_tail(400)


def test_gateway_answers_on_its_own_cmdresult_lane(setup: tuple[TlsMosquitto, Path, dict[str, Client]]) -> None:
    _, _, c = setup
    op, a = c["plantwire-operator"], c["gw-a"]
    assert op.subscribe("plantwire/v1/+/+/cmdresult") == 1
    assert a.publish(f"plantwire/v1/{SITE}/gw-a/cmdresult", b"r-1 applied") == 0
    assert a.publish(f"plantwire/v1/{SITE}/gw-b/cmdresult", b"forged for b") == NOT_AUTHORIZED
    assert op.wait(lambda: (f"plantwire/v1/{SITE}/gw-a/cmdresult", b"r-1 applied") in op.messages)
    time.sleep(0.3)
    assert not [m for m in op.messages if m[1] == b"forged for b"]


def test_cli_commands_as_the_operator_and_refused_as_a_gateway(
    setup: tuple[TlsMosquitto, Path, dict[str, Client]]
) -> None:
    """cloud.alarms.cli.send_command over TLS: the operator's command reaches gw-a, whose answer comes back;
    the same command sent with a gateway's certificate is refused by the broker, and said so."""
    import json

    from cloud.alarms.cli import Broker, BrokerError, send_command

    broker, ca_file, _ = setup
    ca_dir = ca_file.parent
    # A fresh gw-a: Mosquitto drops a connection after refusing its publication (the tests above did that).
    a = connect(broker, ca_file, IssuedCert(ca_dir / "gw-a.crt", ca_dir / "gw-a.key", "gw-a"))
    answered = threading.Event()
    cmd_topic = f"plantwire/cmd/v1/{SITE}/gw-a/alarms"
    assert a.subscribe(cmd_topic) == 1

    def answer() -> None:  # the stand-in gateway: answers the first command it reads
        assert a.wait(lambda: any(t == cmd_topic for t, _ in a.messages), 15)
        doc = json.loads(next(p for t, p in a.messages if t == cmd_topic))
        res = {"id": doc["id"], "service": "alarms", "action": doc["action"], "outcome": "applied", "detail": ""}
        assert a.publish(f"plantwire/v1/{SITE}/gw-a/cmdresult", json.dumps(res).encode()) == 0
        answered.set()

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    op = Broker(broker.host, broker.port, ca_file=ca_file, cert_file=ca_dir / "operator-cli.crt",
                key_file=ca_dir / "operator-cli.key")
    doc = {"id": "req-tls-1", "actor": "alice", "ts_ns": time.time_ns(), "action": "ack", "incident": "inc-1",
           "reason": ""}
    out = send_command(op, SITE, "gw-a", doc, timeout_s=15)
    t.join(15)
    assert answered.is_set() and out.result is not None and out.result["outcome"] == "applied"
    as_gw = Broker(broker.host, broker.port, ca_file=ca_file, cert_file=ca_dir / "gw-b.crt",
                   key_file=ca_dir / "gw-b.key")
    try:
        with pytest.raises(BrokerError, match="refused the command"):
            send_command(as_gw, SITE, "gw-a", {**doc, "id": "req-tls-2"}, timeout_s=15)
    finally:
        a.client.disconnect()
        a.client.loop_stop()
