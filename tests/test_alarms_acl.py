"""The command topics under the shipped ACL, on a real TLS Mosquitto: only ``plantwire-operator`` publishes
commands; a gateway reads its own and no other's, and may publish none (not even its own), but answers
on its own ``cmdresult`` lane."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from plantwire.tls import CertificateAuthority, TlsMosquitto
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
        try:
            yield broker, ca.cert_path, clients
        finally:
            for c in clients.values():
                c.client.loop_stop()
                c.client.disconnect()


def test_only_the_operator_publishes_commands(setup: tuple[TlsMosquitto, Path, dict[str, Client]]) -> None:
    broker, _, c = setup
    op, a, b, ingest = c["plantwire-operator"], c["gw-a"], c["gw-b"], c["plantwire-ingest"]
    cmd_a = f"plantwire/cmd/v1/{SITE}/gw-a/alarms"
    cmd_b = f"plantwire/cmd/v1/{SITE}/gw-b/alarms"
    assert a.subscribe(f"plantwire/cmd/v1/{SITE}/gw-a/#") == 1
    b.subscribe("plantwire/cmd/v1/#")  # granted, but the read ACL lets only gw-b's own through
    assert op.publish(cmd_a, b"op-to-a") == 0
    assert op.publish(cmd_b, b"op-to-b") == 0
    assert a.publish(cmd_b, b"a-as-operator-to-b") == NOT_AUTHORIZED  # another gateway's commands
    assert a.publish(cmd_a, b"a-to-itself") == NOT_AUTHORIZED  # nor its own
    assert ingest.publish(cmd_a, b"ingest-to-a") == NOT_AUTHORIZED  # the ingestor is not the operator
    assert a.wait(lambda: a.messages) and b.wait(lambda: b.messages)
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
