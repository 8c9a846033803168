"""Chaos on the whole pipeline (issue 6 item 7): the dev plant (1,000 signals at 1 Hz) runs through the
real simulator, edge, Mosquitto, ingestor and InfluxDB while components are killed with SIGKILL at
seeded random moments; afterwards InfluxDB must hold exactly the samples each edge run read, signal
by signal, minus the drops the edge counted. How runs are told apart and what a killed run "read":
tests/chaos/chaoslib.py.

The default run keeps one short scenario that needs every safety net at once: the ingestor dies (the
broker queues for it, nothing is acked), then the broker dies (its unsaved in-memory queue is gone),
then the edge dies while the broker is down (what it logged since exists only in its write-ahead
log). Everything is restarted; only a replayed log, re-sends and cloud acks bring the data home.
The rest is ``@pytest.mark.slow``: ``pytest tests/chaos -m "slow or not slow"``.
Set ``PLANTWIRE_CHAOS_SEED`` to replay a run's random moments.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest
from chaoslib import (
    Run,
    account,
    edge_metric,
    halt_edge,
    kill_edge_between_flushes,
    make_pipeline,
    restart_edge,
    sleep_random,
    wait_cloud_acked_everything,
    wait_until,
)

from edge.spool import FILE_HEADER, RECORD_HEADER, Lane
from plantwire.pipeline import Pipeline, health

SEED = int(os.environ.get("PLANTWIRE_CHAOS_SEED", str(time.time_ns() % 100_000)))

pytestmark = pytest.mark.integration


@pytest.fixture
def rng() -> random.Random:
    print(f"PLANTWIRE_CHAOS_SEED={SEED}")
    return random.Random(SEED)


def _settle(pipe: Pipeline, runs: list[Run], started_ns: int, timeout_s: float = 30.0) -> str:
    """Wait until InfluxDB holds what the last (cleanly stopped) run's log still had, then account."""
    holder: dict[str, str] = {}

    def good() -> bool:
        v = account(pipe, runs, started_ns)
        holder["report"] = v.report()
        return v.exact

    try:
        wait_until(good, timeout_s, "InfluxDB to hold every sample each edge run read")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nseed {SEED}\n{holder.get('report')}") from None
    return holder["report"]


def test_ingestor_broker_and_edge_killed_nothing_lost(tmp_path: Path, rng: random.Random) -> None:
    pipe = make_pipeline(tmp_path / "state")
    runs: list[Run] = []
    started_ns = time.time_ns()
    try:
        pipe.start()
        sleep_random(rng, 2.0, 4.0)
        pipe.kill("ingest")  # the broker queues for its persistent session; nothing is acked
        sleep_random(rng, 2.0, 3.0)
        pipe.kill("mosquitto")  # the unsaved in-memory queue is gone (autosave is every 30 s)
        sleep_random(rng, 2.0, 3.0)  # the edge logs while the broker is down
        runs.append(kill_edge_between_flushes(pipe))
        pipe.restart("mosquitto")
        pipe.restart("ingest")
        restart_edge(pipe)
        spool = health(pipe.edge_metrics_port)["spool"]  # computed live (metrics lag a flush behind)
        assert spool["wal_recovered_records"] > 0, f"the log was not reopened: {spool}"
        sleep_random(rng, 2.0, 4.0)
        wait_cloud_acked_everything(pipe)
        runs.append(halt_edge(pipe))
        report = _settle(pipe, runs, started_ns)
    finally:
        pipe.close()
    print(report)
    killed, clean = runs
    assert killed.samples_read > 3000 and killed.dropped_samples == 0, report
    assert clean.samples_read > 1000 and clean.dropped_samples == 0, report


@pytest.mark.slow
def test_influxdb_and_ingestor_killed_at_random_moments(tmp_path: Path, rng: random.Random) -> None:
    pipe = make_pipeline(tmp_path / "state")
    started_ns = time.time_ns()
    try:
        pipe.start()
        for _ in range(2):
            sleep_random(rng, 2.0, 6.0)
            pipe.kill("influxdb")  # the ingestor must hold its acks and retry, not drop
            sleep_random(rng, 1.0, 5.0)
            pipe.restart("influxdb")
            sleep_random(rng, 1.0, 4.0)
            pipe.kill("ingest")
            sleep_random(rng, 0.5, 3.0)
            pipe.restart("ingest")
        sleep_random(rng, 2.0, 4.0)
        wait_cloud_acked_everything(pipe)
        runs = [halt_edge(pipe)]
        report = _settle(pipe, runs, started_ns)
    finally:
        pipe.close()
    print(report)
    assert runs[0].samples_read > 10_000 and runs[0].dropped_samples == 0, report


@pytest.mark.slow
def test_broker_stopped_for_60_s(tmp_path: Path) -> None:
    pipe = make_pipeline(tmp_path / "state")
    started_ns = time.time_ns()
    try:
        pipe.start()
        time.sleep(3.0)
        pipe.halt("mosquitto")
        time.sleep(60.0)
        logged = edge_metric(pipe, "plantwire_edge_spool_wal_samples")
        assert logged >= 50_000, f"the edge should hold the outage in its log, holds {logged}"
        pipe.restart("mosquitto")
        wait_cloud_acked_everything(pipe, timeout_s=120.0)
        runs = [halt_edge(pipe)]
        report = _settle(pipe, runs, started_ns)
    finally:
        pipe.close()
    print(report)
    assert runs[0].samples_read > 60_000 and runs[0].dropped_samples == 0, report


@pytest.mark.slow
def test_full_log_quota_drops_oldest_counted(tmp_path: Path) -> None:
    """A 64 KiB log (about 20 s of the dev plant) and a broker down for 40 s: the oldest records go,
    counted; nothing else is lost. Records already in flight when the broker died may still arrive
    after being dropped from the log (paho re-sends them), so stored may exceed read - dropped by a
    few batches, never fall below it."""
    pipe = make_pipeline(tmp_path / "state", spool={"max_bytes": 65536, "segment_bytes": 16384})
    started_ns = time.time_ns()
    try:
        pipe.start()
        time.sleep(3.0)
        pipe.kill("mosquitto")
        wait_until(lambda: edge_metric(pipe, "plantwire_edge_spool_dropped_samples_total") >= 5000, 90.0,
                   "the log's bound to drop records", pipe)
        time.sleep(3.0)
        pipe.restart("mosquitto")
        wait_cloud_acked_everything(pipe, timeout_s=120.0)
        time.sleep(2.0)
        run = halt_edge(pipe)
        time.sleep(3.0)
        stored = pipe.influx_counts(started_ns, run.ended_ns)
    finally:
        pipe.close()
    total = sum(stored.values())
    over = {sid: (n, stored.get(sid, 0)) for sid, n in run.read_per_signal.items() if stored.get(sid, 0) > n}
    assert not over, f"more stored than read: {dict(list(over.items())[:5])}"
    assert run.dropped_samples >= 5000, run.metrics["spool"]
    lost = run.samples_read - total
    print(f"read {run.samples_read}, stored {total}, lost {lost}, dropped (counted) {run.dropped_samples}")
    assert 0 <= lost <= run.dropped_samples, f"lost {lost}, counted as dropped {run.dropped_samples}"
    assert run.dropped_samples - lost <= 5 * 1000, "dropped records that still arrived: at most a few batches"


def _tear_newest_segment(wal: Path) -> int:
    """Cut the newest segment in the middle of its last record; return the telemetry samples it held."""
    seg = max(wal.glob("*.wal"))
    data = seg.read_bytes()
    assert data.startswith(FILE_HEADER)
    pos, last = len(FILE_HEADER), None
    while pos + RECORD_HEADER.size <= len(data):
        _magic, _ver, lane, length, _crc, _epoch, _seq, n, _wall = RECORD_HEADER.unpack_from(data, pos)
        last = (pos, lane, length, n)
        pos += RECORD_HEADER.size + length
    assert last is not None, f"{seg} holds no record"
    at, lane, length, n = last
    with open(seg, "r+b") as f:
        f.truncate(at + RECORD_HEADER.size + length // 2)
    return n if lane == Lane.TELEMETRY else 0


@pytest.mark.slow
def test_torn_log_tail_is_cut_and_only_the_torn_record_is_lost(tmp_path: Path) -> None:
    pipe = make_pipeline(tmp_path / "state")
    runs: list[Run] = []
    started_ns = time.time_ns()
    try:
        pipe.start()
        time.sleep(3.0)
        pipe.kill("mosquitto")  # nothing is acked: the log's tail holds unpublished batches
        time.sleep(4.0)
        runs.append(kill_edge_between_flushes(pipe))
        torn = _tear_newest_segment(pipe.state_dir / "edge" / "wal")
        assert torn > 0
        pipe.restart("mosquitto")
        restart_edge(pipe)
        wait_until(lambda: edge_metric(pipe, "plantwire_edge_spool_torn_cuts_total") == 1, 10.0,
                   "the torn-cut counter (metrics follow the first flush)", pipe)
        time.sleep(3.0)
        wait_cloud_acked_everything(pipe)
        runs.append(halt_edge(pipe))
        runs[0].dropped_samples = torn  # the one loss, and the edge reported the cut (torn_cuts, torn_bytes)
        report = _settle(pipe, runs, started_ns)
    finally:
        pipe.close()
    print(report)
    assert runs[1].metrics["spool"]["torn_bytes"] > 0, report
