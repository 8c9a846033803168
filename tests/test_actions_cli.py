"""``plantwire actions`` against a real broker: the command goes out on the gateway's actions topic as the
operator asked, a gateway that does not answer is exit 3 (not a success), a broker that is not there exit 4.
The answered outcomes (applied, dry run, refused) are checked end to end in tests/test_actions_e2e.py."""

from __future__ import annotations

import json
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cloud.actions_cli import main
from plantwire.ports import free_port
from plantwire.services import Mosquitto


def test_request_is_published_and_no_answer_or_no_broker_is_not_success(mosquitto: Mosquitto, capsys) -> None:
    got: list[dict] = []
    subscribed, seen = threading.Event(), threading.Event()
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="gw-quiet")
    c.on_subscribe = lambda *_a: subscribed.set()
    c.on_message = lambda _c, _u, m: (got.append({"topic": m.topic, **json.loads(m.payload)}), seen.set())
    c.connect("127.0.0.1", mosquitto.port)
    c.subscribe("plantwire/cmd/v1/site-a/gw-quiet/#", qos=1)
    c.loop_start()
    try:
        assert subscribed.wait(10)
        rc = main(["--broker", f"127.0.0.1:{mosquitto.port}", "--timeout", "1", "--actor", "ann", "request",
                   "leak01.hold", "1", "--site", "site-a", "--gateway", "gw-quiet", "--reason", "seal check"])
        assert rc == 3 and "no answer from gateway gw-quiet" in capsys.readouterr().err
        assert seen.wait(10)
        doc = got[0]
        assert doc["topic"] == "plantwire/cmd/v1/site-a/gw-quiet/actions"
        assert (doc["action"], doc["target"], doc["value"], doc["actor"], doc["reason"]) == (
            "write", "leak01.hold", 1, "ann", "seal check") and doc["id"] and doc["ts_ns"] > 0
    finally:
        c.loop_stop()
        c.disconnect()
    rc = main(["--broker", f"127.0.0.1:{free_port()}", "--timeout", "2", "request", "x", "1", "--site", "s",
               "--gateway", "g"])
    assert rc == 4 and "plantwire actions: broker" in capsys.readouterr().err


def test_list_reads_the_audit_trail_from_influxdb_and_quotes_its_filters(influxdb, influx_db: str, capsys) -> None:
    """``plantwire actions list`` on a real InfluxDB: actions only, newest first, within --hours, per gateway;
    a gateway name with a quote in it is a name (it matches that gateway), not InfluxQL."""
    import time
    import urllib.request

    from cloud.alarms.store import audit_line

    now = time.time_ns()
    docs = [("gw-a", {"service": "actions", "action": "write", "outcome": "applied", "target": "leak01.hold",
                      "actor": "ann", "reason": "seal", "detail": "", "request_id": "r1", "ts_ns": now - 60 * 10**9,
                      "source": "mqtt"}),
            ("gw-a", {"service": "actions", "action": "write", "outcome": "refused", "target": "x", "actor": "bob",
                      "detail": "not_listed", "request_id": "r2", "ts_ns": now - 30 * 10**9, "source": "mqtt"}),
            ("gw'b", {"service": "actions", "action": "write", "outcome": "dry_run", "target": "light", "actor": "cy",
                      "detail": "", "request_id": "r3", "ts_ns": now - 20 * 10**9, "source": "cli"}),
            ("gw-a", {"service": "alarms", "action": "ack", "outcome": "applied", "target": "inc-1", "actor": "ann",
                      "detail": "", "request_id": "r4", "ts_ns": now - 10 * 10**9, "source": "mqtt"}),
            ("gw-a", {"service": "actions", "action": "write", "outcome": "applied", "target": "old", "actor": "ann",
                      "detail": "", "request_id": "r5", "ts_ns": now - 50 * 3600 * 10**9, "source": "mqtt"})]
    from cloud import retention

    body = "\n".join(audit_line("site-a", gw, doc) for gw, doc in docs).encode()
    retention.ensure_policies(influxdb.url, influx_db, alter=False)  # the audit trail lives in its own policy
    req = urllib.request.Request(f"{influxdb.url}/write?db={influx_db}&rp={retention.RP_AUDIT}", data=body,
                                 method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 204
    base = ["--influx", influxdb.url, "--database", influx_db, "list", "--json"]

    def listed(*extra: str) -> list[str]:
        assert main([*base, *extra]) == 0
        return [r["request_id"] for r in json.loads(capsys.readouterr().out)]

    assert listed() == ["r3", "r2", "r1"]  # actions of the last 24 h, newest first: no alarms ack, not r5
    assert listed("--hours", "72") == ["r3", "r2", "r1", "r5"]
    assert listed("--gateway", "gw'b") == ["r3"]
    assert listed("--gateway", "gw-a' OR \"service\" = 'alarms") == []  # a name, not a clause
    assert listed("--gateway", "gw-a", "--site", "site-a") == ["r2", "r1"]
    assert main([*base[:-1], "--gateway", "gw-a"]) == 0  # the table
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("time (UTC)") and "refused" in table[1] and "not_listed" in table[1]
    assert main(["--influx", "http://127.0.0.1:9", "--database", influx_db, "list"]) == 4
    assert "plantwire actions:" in capsys.readouterr().err
