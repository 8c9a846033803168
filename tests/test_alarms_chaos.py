"""Incidents across ingestor crashes (kill -9, twice) with transitions delivered out of order, duplicated and
replayed after a crash: every transition reaches InfluxDB, and every incident's stored state is its newest."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from plantwire import wire
from plantwire.services import InfluxDB1, Mosquitto
from tests.test_alarms_ingest import events, incident
from tests.test_ingest import GW, SITE, Publisher, make_cfg, wait_for
from tests.test_ingest_errors import _spawn

pytestmark = [pytest.mark.slow, pytest.mark.integration]

N_INCIDENTS = 40
LAST_SEQ = 6


def _history(i: int, t0: int) -> list[dict[str, Any]]:
    """Seq 1..6 of incident i: open, update, ack, shelve, unshelve, clear."""
    start = t0 + i * 10**9
    iid = f"inc-{i:03d}"
    kw: dict[str, Any] = {"machine": f"m{i % 5}", "area": f"hall-{'ab'[i % 2]}"}
    step = [
        ("open", {}), ("update", {"peak": 0.9}), ("ack", {"acked": True, "actor": "alice"}),
        ("shelve", {"acked": True, "shelved_until_ns": start + 10**12}), ("unshelve", {"acked": True}),
        ("clear", {"acked": True, "active": False, "end_ns": start + 60 * 10**9}),
    ]
    return [incident(iid, seq, tr, start + seq * 10**9, start, **{**kw, **extra})
            for seq, (tr, extra) in enumerate(step, start=1)]


def _kill(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def test_incidents_survive_ingestor_kills_in_order(
    tmp_path: Path, mosquitto: Mosquitto, influxdb: InfluxDB1, influx_db: str
) -> None:
    rng = random.Random(16)
    cfg = make_cfg(tmp_path, mosquitto, influxdb.url, influx_db)
    path = tmp_path / "cloud.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    t0 = time.time_ns() - 3600 * 10**9
    docs = [d for i in range(N_INCIDENTS) for d in _history(i, t0)]
    late = [d for d in docs if d["seq"] <= 3 and int(d["id"][4:]) % 2 == 0]  # replayed after the crashes
    early = [d for d in docs if d not in late]
    rng.shuffle(early)  # out of order: a clear may come before its open

    def stored_transitions() -> int:
        rows = influxdb.rows("SELECT count(seq) FROM alarms.incident_transitions", influx_db)
        return int(rows[0]["count"]) if rows else 0

    pub = Publisher(mosquitto)
    topic = wire.topic(SITE, GW, "events")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(_spawn(path))
        port_file = cfg.state_dir / "metrics.port"
        wait_for(port_file.exists, 60, what="metrics port")
        from plantwire.pipeline import health, scrape

        # Its persistent session exists from its first subscription on; the broker queues for it from then.
        wait_for(lambda: health(int(port_file.read_text())).get("mqtt_subscribed"), 30, what="subscribed")
        for k in range(0, len(early), 3):
            pub.pub(topic, events(*early[k : k + 3]))
        wait_for(lambda: stored_transitions() >= len(early) // 2, 60, what="half of the first phase stored")
        _kill(procs[-1])  # crash 1: mid-stream; what was not acknowledged is redelivered
        procs.append(_spawn(path))
        wait_for(lambda: stored_transitions() == len(early), 90, what="first phase stored")
        _kill(procs[-1])  # crash 2: after the newest states were stored
        for d in late:  # the older transitions arrive now, some twice
            pub.pub(topic, events(d, *([d] if rng.random() < 0.3 else [])))
        procs.append(_spawn(path))
        wait_for(lambda: stored_transitions() == len(docs), 90, what="every transition stored")
        port = int(port_file.read_text())
        wait_for(lambda: scrape(port).get("plantwire_ingest_pending_messages", 1) == 0, 60, what="all acked")
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(30)
        pub.close()
    state = influxdb.rows("SELECT id, seq, transition, active, acked FROM alarms.incidents", influx_db)
    assert len(state) == N_INCIDENTS
    assert all((r["seq"], r["transition"], r["active"], r["acked"]) == (LAST_SEQ, "clear", 0, 1) for r in state), [
        r for r in state if r["seq"] != LAST_SEQ]
    hist = influxdb.rows("SELECT id, seq FROM alarms.incident_transitions", influx_db)
    assert sorted((r["id"], r["seq"]) for r in hist) == sorted((d["id"], d["seq"]) for d in docs)
    saved = json.loads((cfg.state_dir / "incident_seqs.json").read_text())
    assert {k.split("\x00")[1]: q for k, q, _ in saved["seqs"]} == {f"inc-{i:03d}": LAST_SEQ
                                                                      for i in range(N_INCIDENTS)}
