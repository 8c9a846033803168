"""``plantwire alarms`` against real InfluxDB and Mosquitto: list, commands answered by a stand-in gateway
(the edge's command handler is tested on its own side), a clear message when no answer comes, the report."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud import retention
from cloud.alarms.cli import main
from cloud.alarms.store import incident_points
from plantwire.services import InfluxDB1, Mosquitto
from tests.test_alarms_ingest import incident

pytestmark = pytest.mark.integration

SITE, GW = "plant1", "gw-a"


def _write(influx: InfluxDB1, db: str, docs: list[dict[str, Any]]) -> None:
    lines = []
    for d in docs:
        p = incident_points(SITE, GW, d)
        lines += [p.state_line, p.transition_line]
    body = ("\n".join(lines) + "\n").encode()
    retention.ensure_policies(influx.url, db, alter=False)  # incidents live in the alarms retention policy
    req = urllib.request.Request(f"{influx.url}/write?db={db}&rp={retention.RP_ALARMS}&precision=ns", data=body,
                                 method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 204


class StandInGateway:
    """Answers alarms commands on its cmd topic like the edge does: cmdresult with the request's id."""

    def __init__(self, broker: Mosquitto, outcome: str = "applied") -> None:
        self.received: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="standin-gw-a",
                             protocol=mqtt.MQTTv5)

        def on_message(c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
            doc = json.loads(m.payload)
            self.received.append(doc)
            res = {"id": doc["id"], "service": "alarms", "action": doc["action"], "outcome": outcome, "detail": ""}
            c.publish(f"plantwire/v1/{SITE}/{GW}/cmdresult", json.dumps(res), qos=1)

        self.c.on_message = on_message
        self.c.on_subscribe = lambda *a: self.ready.set()
        self.c.connect(broker.host, broker.port)
        self.c.subscribe(f"plantwire/cmd/v1/{SITE}/{GW}/#", qos=1)
        self.c.loop_start()
        assert self.ready.wait(10)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def filled(influxdb: InfluxDB1, influx_db: str) -> Iterator[int]:
    now = time.time_ns()
    ten_min = 600 * 10**9
    t = (now - 3600 * 10**9) // ten_min * ten_min + ten_min // 2  # mid-bucket: both opens in one 10 minutes
    old = now - 30 * 3600 * 10**9
    _write(influxdb, influx_db, [
        incident("inc-open", 1, "open", t, t, signals=["m1.temp", "m1.press"]),
        incident("inc-done", 1, "open", t + 10**9, t + 10**9, machine="m2"),
        incident("inc-done", 2, "clear", t + 5 * 10**9, t + 10**9, machine="m2", active=False, acked=True,
                 end_ns=t + 5 * 10**9),
        incident("inc-standing", 1, "open", old, old, machine="m3", area="hall-b", priority="critical"),
    ])
    yield now


def test_list_shows_open_incidents_with_their_signals(
    tmp_path: Path, influxdb: InfluxDB1, influx_db: str, filled: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--influx", influxdb.url, "--database", influx_db, "list"]) == 0
    out = capsys.readouterr().out
    assert "inc-open" in out and "m1.temp, m1.press" in out and "active_unacked" in out and "hall-a" in out
    assert "inc-standing" in out and "critical" in out
    assert "inc-done" not in out  # cleared and acknowledged: nothing for the operator
    assert main(["--influx", influxdb.url, "--database", influx_db, "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == ["inc-open", "inc-standing"]
    assert main(["--influx", influxdb.url, "--database", influx_db, "list", "--json", "--area", "hall-b"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == ["inc-standing"]
    assert main(["--influx", influxdb.url, "--database", influx_db, "list", "--json", "--priority", "high"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == ["inc-open"]
    cfg = tmp_path / "ingest.yaml"  # the ingestor's own config names the database
    cfg.write_text(f"influx: {{url: '{influxdb.url}', database: {influx_db}}}\nstate_dir: state\n")
    assert main(["--config", str(cfg), "list", "--json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == ["inc-open", "inc-standing"]
    cfg.write_text("influx: {api: v9}\n")
    assert main(["--config", str(cfg), "list"]) == 2
    assert "influx.api" in capsys.readouterr().err


def test_commands_reach_the_gateway_and_its_answer_is_printed(
    mosquitto: Mosquitto, influxdb: InfluxDB1, influx_db: str, filled: int, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--influx", influxdb.url, "--database", influx_db, "--broker", f"{mosquitto.host}:{mosquitto.port}",
            "--actor", "alice", "--timeout", "15"]
    gw = StandInGateway(mosquitto)
    try:
        assert main([*base, "ack", "inc-open", "--reason", "seen it"]) == 0
        assert "ack inc-open on gw-a: applied" in capsys.readouterr().out
        assert main([*base, "shelve", "inc-open", "--minutes", "30", "--reason", "sensor swap"]) == 0
        assert main([*base, "oos", "inc-standing", "--reason", "decommissioned"]) == 0
        assert main([*base, "maintenance", "m2", "--reason", "bearing change"]) == 0  # gateway found by machine
        assert main([*base, "shelve", "m1", "--machine", "--minutes", "5"]) == 0
    finally:
        gw.close()
    ack, shelve, oos, maint, shelve_m = gw.received
    assert (maint["action"], maint["machine"], maint["reason"]) == ("maintenance", "m2", "bearing change")
    assert "incident" not in maint and (shelve_m["machine"], shelve_m["minutes"]) == ("m1", 5.0)
    assert (ack["action"], ack["incident"], ack["actor"], ack["reason"]) == ("ack", "inc-open", "alice", "seen it")
    assert isinstance(ack["id"], str) and ack["id"] and isinstance(ack["ts_ns"], int)
    assert (shelve["action"], shelve["minutes"]) == ("shelve", 30.0)
    assert (oos["action"], oos["reason"]) == ("oos", "decommissioned")
    assert len({ack["id"], shelve["id"], oos["id"]}) == 3


def test_no_answer_and_unknown_incident_are_said_plainly(
    mosquitto: Mosquitto, influxdb: InfluxDB1, influx_db: str, filled: int, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--influx", influxdb.url, "--database", influx_db, "--broker", f"{mosquitto.host}:{mosquitto.port}"]
    t0 = time.monotonic()
    assert main([*base, "--timeout", "1", "unshelve", "inc-open"]) == 3
    assert time.monotonic() - t0 < 10
    err = capsys.readouterr().err
    assert "no answer from gateway gw-a (site plant1) within 1 s" in err
    assert main([*base, "ack", "no-such-incident"]) == 2
    assert "incident 'no-such-incident' not found" in capsys.readouterr().err
    assert main([*base, "maintenance-end", "no-such-machine"]) == 2
    assert "machine 'no-such-machine' not found" in capsys.readouterr().err
    assert main(["--influx", "http://127.0.0.1:9", "list"]) == 4
    assert "InfluxDB not reachable" in capsys.readouterr().err


def test_report_prints_the_eemua_figures(
    influxdb: InfluxDB1, influx_db: str, filled: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--influx", influxdb.url, "--database", influx_db, "report", "--since", "24h", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["annunciated"] == 2  # the standing one opened 30 h ago, before the window
    assert [(a["area"], a["alarms"], a["peak_per_10min"]) for a in rep["areas"]] == [("hall-a", 2, 2)]
    assert rep["standing"] == ["gw-a/inc-standing"]
    assert rep["priorities"]["high"]["alarms"] == 2
    assert main(["--influx", influxdb.url, "--database", influx_db, "report"]) == 0
    text = capsys.readouterr().out
    assert "alarm performance (EEMUA 191)" in text and "standing incidents (active > 24 h): 1" in text


def test_report_from_influxdb_equals_the_pure_figures(influxdb: InfluxDB1, influx_db: str) -> None:
    """The query layer loses nothing on the way: the same figures as kpi.report over the documents themselves
    (simulated plant: a flood, chattering, a standing incident, shelved and out-of-service ones)."""
    from cloud.alarms import kpi, query
    from cloud.grafana.simdata import simulated_incident_docs, simulated_incident_lines, write_v1

    end = time.time_ns()
    start = end - 8 * 3600 * 10**9
    machines = ["gw-a.m0", "gw-a.m1", "gw-a.m2"]
    write_v1(influxdb.url, influx_db, ("\n".join(
        simulated_incident_lines(SITE, GW, machines, start, 8 * 3600, burst=True)) + "\n").encode())
    # Stored times differ from ts_ns below the microsecond (schema.incident_point_ns): no document at the edges.
    lo, hi = start + 10**9, end - 10**9
    got = query.report(query.InfluxQL(influxdb.url, influx_db), lo, hi)
    rows = kpi.docs_rows(GW, simulated_incident_docs(machines, start, 8 * 3600, burst=True))
    want = kpi.report(kpi.Transitions.from_rows(rows), lo, hi, standing_ids=[f"{GW}/gw-a.m0-standing"])
    for a, b in zip(got.areas, want.areas, strict=True):
        assert a.flood_pct == pytest.approx(b.flood_pct, rel=1e-6)
    rounded = [replace(a, flood_pct=round(a.flood_pct, 3)) for a in got.areas]
    assert replace(got, areas=rounded) == replace(want, areas=[replace(a, flood_pct=round(a.flood_pct, 3))
                                                               for a in want.areas])
    assert any(a.flood_pct > 0 for a in got.areas) and got.chattering and got.standing
