"""Incident and audit documents through the real ingestor (Mosquitto + InfluxDB 1.6): stored in order per
incident whatever the delivery order, replays harmless across an ingestor restart, unknown document types
dead-lettered alone, alarm documents' model version and contributors kept."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from plantwire import wire
from plantwire.services import InfluxDB1, Mosquitto
from tests.test_ingest import GW, SITE, Publisher, make_cfg, running, wait_for


def incident(id_: str, seq: int, transition: str, ts_ns: int, start_ns: int, **kw: Any) -> dict[str, Any]:
    """An incident document as contracts.md defines it (defaults: an active, unacknowledged machine incident)."""
    doc: dict[str, Any] = {
        "type": "incident", "id": id_, "seq": seq, "ts_ns": ts_ns, "start_ns": start_ns, "end_ns": None,
        "transition": transition, "machine": "m1", "area": "hall-a", "priority": "high",
        "active": True, "acked": False, "shelved_until_ns": None, "out_of_service": False,
        "suppressed_by": None, "chattering": False, "flood_count": None,
        "kinds": ["level"], "signals": ["m1.temp", "m1.press"], "peak": 0.8, "actor": None, "reason": None,
    }
    doc.update(kw)
    return doc


def events(*docs: dict[str, Any]) -> bytes:
    return json.dumps({"v": 1, "gateway": GW, "boot_epoch_ns": 1_000, "events": list(docs)}).encode()


def test_incidents_in_order_audit_and_unknown_types(
    tmp_path: Path, mosquitto: Mosquitto, influxdb: InfluxDB1, influx_db: str
) -> None:
    cfg = make_cfg(tmp_path, mosquitto, influxdb.url, influx_db)
    topic = wire.topic(SITE, GW, "events")
    t = time.time_ns() - 600 * 10**9
    start = t
    opened = incident("inc-1", 0, "open", t, start)
    acked = incident("inc-1", 1, "ack", t + 10**9, start, acked=True, actor="alice", reason="seen")
    cleared = incident("inc-1", 2, "clear", t + 5 * 10**9, start, active=False, acked=True, end_ns=t + 5 * 10**9)
    # A second incident of the same machine starting in the same nanosecond: two points, not one merged.
    twin = incident("inc-2", 0, "open", t, start, priority="critical", signals=["m1.speed"])
    audit = {"type": "audit", "ts_ns": t + 10**9, "request_id": "r-1", "actor": "alice", "source": "mqtt",
             "service": "alarms", "action": "ack", "target": "inc-1", "reason": "seen", "outcome": "applied",
             "detail": ""}
    alarm = {"type": "alarm", "state": "open", "kind": "machine", "machine": "m1", "signal": "m1.temp",
             "start_ns": t, "end_ns": None, "peak": 0.9, "model_version": "pca-2026-12-01",
             "contributors": ["m1.temp", "m1.press", "weird,id"]}
    pub = Publisher(mosquitto)
    try:
        with running(cfg) as ing:
            # Delivery out of order: the clear arrives first, then the open and the ack (an edge replaying
            # its log behind live data); an unknown type rides in the same message and goes alone.
            pub.pub(topic, events(cleared))
            pub.pub(topic, events(opened, {"type": "bogus", "x": 1}, acked, twin, audit, alarm))
            pub.pub(wire.topic(SITE, GW, "cmdresult"), b'{"id": "r-1", "outcome": "applied"}')
            pub.pub(wire.topic(SITE, GW, "incidents"), json.dumps({**opened, "site": SITE, "gateway": GW}).encode())
            # A command the edge could not parse is refused and audited with whatever action it carried.
            refused = {**audit, "ts_ns": t + 2 * 10**9, "request_id": None, "actor": "unknown", "action": "",
                       "target": "", "reason": "", "outcome": "refused", "detail": "payload: not JSON"}
            odd = {**refused, "ts_ns": t + 3 * 10**9, "action": "Drop Table", "detail": "action: not one of ..."}
            pub.pub(topic, events(refused, odd))
            wait_for(lambda: ing.pending() == 0 and ing.m_incidents.total() == 4, what="incident transitions stored")
            assert ing.m_incidents.get(result="stale") == 2  # open and ack came after the clear
            assert ing.m_dead.get(reason="unknown_type") == 1
            wait_for(lambda: ing.pending() == 0 and ing.m_audit.get() == 3, what="audit records stored")
            assert ing.m_dead.total() == 1  # the cmdresult and incidents lanes are not dead letters
        (entry,) = _dead_entries(cfg.state_dir)
        assert entry["kind"] == "unknown_type" and "events[1].type: 'bogus'" in entry["reason"]
        state = influxdb.rows("SELECT * FROM alarms.incidents", influx_db)
        assert sorted(r["id"] for r in state) == ["inc-1", "inc-2"]
        one = next(r for r in state if r["id"] == "inc-1")
        assert (one["seq"], one["transition"], one["state"], one["active"], one["acked"], one["open"]) == (
            2, "clear", "normal", 0, 1, 0)
        assert one["end_ms"] == (t + 5 * 10**9) // 10**6 and one["duration_s"] == 5.0
        assert one["area"] == "hall-a" and one["machine"] == "m1" and one["priority"] == "high"
        assert json.loads(one["signals"]) == ["m1.temp", "m1.press"]
        hist = influxdb.rows("SELECT * FROM alarms.incident_transitions WHERE id = 'inc-1'", influx_db)
        assert [(r["seq"], r["transition"]) for r in hist] == [(0, "open"), (1, "ack"), (2, "clear")]
        assert hist[1]["actor"] == "alice" and hist[1]["reason"] == "seen"
        a = influxdb.rows("SELECT * FROM audit.audit", influx_db)
        assert [(r["service"], r["action"], r["outcome"], r["actor"], r["target"], r["request_id"]) for r in a] == [
            ("alarms", "ack", "applied", "alice", "inc-1", "r-1"), ("alarms", "invalid", "refused", "unknown", "", ""),
            ("alarms", "invalid", "refused", "unknown", "", "")]
        assert [r["detail"] for r in a[1:]] == ["action '': payload: not JSON",
                                                "action 'Drop Table': action: not one of ..."]
        # incidents and audit records live in their own retention policies (cloud.retention), not with the samples
        assert not influxdb.rows("SELECT * FROM incidents", influx_db) and not influxdb.rows("SELECT * FROM audit",
                                                                                              influx_db)
        rps = {r["name"]: r["duration"] for r in influxdb.rows(f'SHOW RETENTION POLICIES ON "{influx_db}"', influx_db)}
        assert rps["alarms"] == "8760h0m0s" and rps["audit"] == "26280h0m0s"
        ev = influxdb.rows("SELECT model, contributors FROM events", influx_db)
        assert ev[0]["model"] == "pca-2026-12-01"
        assert json.loads(ev[0]["contributors"]) == ["m1.temp", "m1.press", "weird,id"]

        # A new ingestor process gets the whole log replayed (the edge re-sends; duplicates and an older
        # transition): the stored state stays the newest, the history keeps one point per transition.
        with running(cfg) as ing:
            assert len(ing.incident_order) == 2
            pub.pub(topic, events(acked, opened, acked))
            wait_for(lambda: ing.pending() == 0 and ing.m_incidents.total() == 3, what="replay handled")
            assert ing.m_incidents.get(result="stale") == 3
        one = next(r for r in influxdb.rows("SELECT * FROM alarms.incidents", influx_db) if r["id"] == "inc-1")
        assert (one["seq"], one["transition"], one["active"]) == (2, "clear", 0)
        assert len(influxdb.rows("SELECT seq FROM alarms.incident_transitions", influx_db)) == 4
    finally:
        pub.close()


def test_malformed_incident_is_dead_lettered_with_its_key(
    tmp_path: Path, mosquitto: Mosquitto, influxdb: InfluxDB1, influx_db: str
) -> None:
    cfg = make_cfg(tmp_path, mosquitto, influxdb.url, influx_db)
    t = time.time_ns() - 60 * 10**9
    pub = Publisher(mosquitto)
    pub.client.subscribe(wire.topic(SITE, GW, "evack"), qos=1)
    try:
        with running(cfg) as ing:
            pub.pub(wire.topic(SITE, GW, "events"), wire.stamp_events_seq(events(
                incident("x", 0, "explode", t, t),  # not a transition of the contract
                incident("y", "1", "open", t, t),  # seq not an integer
                incident("z", 0, "open", t, t, priority="urgent"),
                incident("ok", 0, "open", t, t),
                incident("ok", 10**30, "clear", t, t),  # would make every later transition look stale
            ), 7))
            wait_for(lambda: ing.pending() == 0 and ing.m_dead.get(reason="schema") == 4, what="dead letters")
            # the events ack names the message's seq once it is stored (dead letters included): the edge frees it
            wait_for(lambda: any(a.ranges == ((7, 7),) and a.boot_epoch_ns == 1_000 for a in pub.acks),
                     what="events ack")
            assert ing.m_incidents.total() == 1
            reasons = [e["reason"] for e in _dead_entries(cfg.state_dir)]
            assert any("events[0]: transition: expected one of" in r for r in reasons), reasons
            assert any("events[1]: seq: expected an integer" in r for r in reasons), reasons
            assert any("events[2]: priority:" in r for r in reasons), reasons
            assert any("events[4]: seq: 10000" in r and "outside" in r for r in reasons), reasons
        assert [r["id"] for r in influxdb.rows("SELECT id FROM alarms.incidents", influx_db)] == ["ok"]
    finally:
        pub.close()


def _dead_entries(state_dir: Path) -> list[dict[str, Any]]:
    path = state_dir / "deadletter.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
