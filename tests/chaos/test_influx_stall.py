"""Chaos: InfluxDB stalled with SIGSTOP under the whole pipeline (issue 13 items 6 and 9).

The dev plant runs through the real simulator, edge, Mosquitto, ingestor and InfluxDB. InfluxDB is
stopped with SIGSTOP (a hung or swapping server: connections are accepted, nothing answers) for
longer than a few batch intervals. The ingestor must report it within seconds on ``influx_up`` and
its health (not after its 30 s write timeout), hold every message unacknowledged meanwhile, report
InfluxDB up again right after SIGCONT, and in the end InfluxDB must hold exactly what the edge
read, signal by signal. The quick version against a bare ingestor runs by default
(tests/test_influx_health.py); this one is ``slow`` (``make test-chaos``).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from chaoslib import account, halt_edge, make_pipeline, wait_cloud_acked_everything, wait_until

from plantwire.pipeline import health, scrape
from tests.test_influx_health import wait_stopped

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DETECT_S = 10.0  # the shipped ping: every 1 s, 2 s timeout; the write timeout is 30 s


@pytest.mark.slow
def test_influxdb_sigstop_is_reported_at_once_and_nothing_is_lost(tmp_path: Path) -> None:
    pipe = make_pipeline(tmp_path / "state")
    started_ns = time.time_ns()
    stalled_pid = 0
    try:
        pipe.start()
        port = pipe.ingest_metrics_port

        def ingest(name: str) -> float:
            return scrape(port).get(name, 0.0)

        wait_until(lambda: ingest("plantwire_ingest_samples_written_total") > 2000, 60, "samples in InfluxDB", pipe)
        assert ingest("plantwire_ingest_influx_up") == 1
        stalled_pid = pipe.influx.pid
        os.kill(stalled_pid, signal.SIGSTOP)
        wait_stopped(stalled_pid)
        t_stop = time.monotonic()
        wait_until(lambda: ingest("plantwire_ingest_influx_up") == 0, DETECT_S, "influx_up 0", pipe)
        detected_s = time.monotonic() - t_stop
        h = health(port)
        assert h["status"] == "degraded" and h["influx_reachable"] == "down", h
        written = ingest("plantwire_ingest_samples_written_total")
        wait_until(lambda: ingest("plantwire_ingest_pending_messages") >= 3, 30, "batches waiting unacked", pipe)
        assert ingest("plantwire_ingest_samples_written_total") == written  # nothing claimed while stalled
        os.kill(stalled_pid, signal.SIGCONT)
        stalled_pid = 0
        t_cont = time.monotonic()
        wait_until(lambda: ingest("plantwire_ingest_influx_up") == 1, DETECT_S, "influx_up 1 again", pipe)
        recovered_s = time.monotonic() - t_cont
        wait_cloud_acked_everything(pipe)
        runs = [halt_edge(pipe)]
        holder: dict[str, str] = {}

        def exact() -> bool:
            v = account(pipe, runs, started_ns)
            holder["report"] = v.report()
            return v.exact

        wait_until(exact, 60, "InfluxDB to hold every sample the edge read")
    finally:
        if stalled_pid:
            os.kill(stalled_pid, signal.SIGCONT)
        pipe.close()
    print(holder["report"])
    print(f"influx_up 0 after {detected_s:.1f} s stalled; 1 again {recovered_s:.1f} s after SIGCONT")
    assert runs[0].samples_read > 2000 and runs[0].dropped_samples == 0, holder["report"]
