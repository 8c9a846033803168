"""Chaos on the edge's state disk (issue 13): the dev plant runs through the real simulator, edge,
Mosquitto, ingestor and InfluxDB with the edge's state directory on a small tmpfs of its own, filled
by "another writer" at the worst moment. Afterwards every sample each edge run read is in InfluxDB or
counted as dropped by the edge, and the cloud's gap ledger names what is missing.

Each scenario starts the whole pipeline (~30-60 s on a loaded 2-core box), so they are ``slow``; the
quick checks of the same machinery (the log on a full disk, held batches, the run mark, side work)
run by default in tests/test_spool.py, tests/test_forwarder.py and tests/test_runmark.py.
Mounting needs root; without it the scenarios skip, saying so.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from chaoslib import (
    Run,
    edge_metric,
    halt_edge,
    kill_edge_between_flushes,
    make_pipeline,
    restart_edge,
    wait_cloud_acked_everything,
    wait_until,
)
from diskfull import fill, small_disk

from edge.runmark import read_previous
from plantwire.pipeline import Pipeline, health, scrape

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DISK_BYTES = 20 * 1024 * 1024
#: A small log (16 KiB segments, ~6 s of the dev plant each) so a short outage needs several segments.
SMALL_LOG = {"max_bytes": 256 * 1024}


def _grows(pipe: Pipeline, name: str, by: float, timeout_s: float, what: str) -> None:
    start = pipe.progress().get(name, 0.0)  # edge and ingestor metrics
    wait_until(lambda: pipe.progress().get(name, 0.0) >= start + by, timeout_s, what, pipe)


def _per_signal_exact(pipe: Pipeline, run: Run, since_ns: int) -> None:
    """A cleanly stopped run (no drops) stored exactly what it read, signal by signal."""
    stored = pipe.influx_counts(since_ns, run.ended_ns)
    diff = {s: (n, stored.get(s, 0)) for s, n in run.read_per_signal.items() if stored.get(s, 0) != n}
    extra = {s: n for s, n in stored.items() if s not in run.read_per_signal}
    assert not diff and not extra, f"read vs stored differ: {dict(list(diff.items())[:5])} {extra}"


def test_state_disk_full_with_broker_down_then_kill_9(tmp_path: Path) -> None:
    """Broker down, the state disk filled by someone else, checkpoints failing (ENOSPC), then kill -9.

    The log rides it out in its own preallocated space, dropping its oldest segments (counted) when it
    must; the edge keeps reading; the next run reconciles the crashed one. For the killed run:
    read = stored + counted drops, where drops of records already sent before the broker died may
    still arrive (``dropped_sent_samples``, an upper bound of that slack)."""
    state = tmp_path / "state"
    with small_disk(state / "edge", DISK_BYTES) as edge_dir:
        pipe = make_pipeline(state, spool=SMALL_LOG, analytics={"checkpoint_interval_s": 2.0})
        started_ns = time.time_ns()
        try:
            pipe.start()
            time.sleep(3.0)
            pipe.kill("mosquitto")
            time.sleep(2.0)
            filler = fill(edge_dir)
            wait_until(lambda: edge_metric(pipe, "plantwire_edge_side_errors_total") > 0, 30.0,
                       "a checkpoint to fail with ENOSPC", pipe)
            wait_until(lambda: edge_metric(pipe, "plantwire_edge_spool_wal_reserve_releases_total") >= 1, 60.0,
                       "the log to take its reserve", pipe)
            wait_until(lambda: edge_metric(pipe, "plantwire_edge_spool_dropped_disk_full_records_total") > 0, 90.0,
                       "the log to drop its oldest segment on the full disk", pipe)
            _grows(pipe, "plantwire_edge_samples_read_total", 3000, 30.0, "reading to go on")
            h = health(pipe.edge_metrics_port)
            assert h["status"] == "degraded" and "checkpoint failing" in h["degraded"], h
            killed = kill_edge_between_flushes(pipe)
            mark = read_previous(edge_dir)
            assert mark is not None and mark.crashed and mark.samples_read == killed.samples_read
            filler.unlink()
            pipe.restart("mosquitto")
            restart_edge(pipe)
            prev = health(pipe.edge_metrics_port)["previous_run"]
            assert prev["crashed"] and prev["boot_epoch_ns"] == mark.boot_epoch_ns, prev
            wait_cloud_acked_everything(pipe, timeout_s=120.0)
            clean = halt_edge(pipe)
            time.sleep(2.0)
            wait_until(lambda: all(g["reason"] != "missing" for g in health(pipe.ingest_metrics_port)["gaps"]), 30.0,
                       "the ingestor to name the gaps by the edge's drop cause", pipe)
            stored_per_signal = pipe.influx_counts(started_ns, clean.ended_ns)
            stored = sum(stored_per_signal.values())
            late = pipe.influx_counts(clean.ended_ns, None)
            ingest = health(pipe.ingest_metrics_port)
            ing_metrics = scrape(pipe.ingest_metrics_port)
        finally:
            pipe.close()
    # Both runs together (the second back-fills OPC-UA samples the crash took from the first's buffer,
    # stamped in the first's time window, and drops re-reads, so samples are counted once in "read").
    read = killed.samples_read + clean.samples_read
    dropped = killed.dropped_samples + prev["unlogged_samples"] + clean.dropped_samples
    slack = int(killed.metrics.get("plantwire_edge_spool_dropped_sent_samples_total", 0))
    report = (f"read {read} (killed run {killed.samples_read}), stored {stored}, dropped {dropped} "
              f"(of which sent before the drop {slack}); previous_run {prev}; gaps {ingest['gaps']}")
    print(report)
    assert not late, f"points stamped after the last run: {late}"
    assert killed.dropped_samples > 0, report
    assert read - dropped <= stored <= read - dropped + slack, report
    assert prev["unlogged_samples"] == 0, "the log kept its own space: no batch was left unlogged"
    if slack == 0:  # nothing dropped had been sent: exact signal by signal (the mark counts drops per signal)
        ids = list(clean.read_per_signal)
        dropped_clean = clean.metrics.get("dropped_per_signal", {})
        diff = {}
        for i, sid in enumerate(ids):
            want = (int(mark.read_per_signal[i]) + clean.read_per_signal[sid]
                    - int(mark.dropped_per_signal[i]) - dropped_clean.get(sid, 0))
            if stored_per_signal.get(sid, 0) != want:
                diff[sid] = (want, stored_per_signal.get(sid, 0))
        assert not diff, f"{len(diff)} signals differ (read - dropped, stored): {dict(list(diff.items())[:5])}"
    # The ledger names what is missing of the killed epoch: the dropped batches (minus any that arrived).
    gap_batches = sum(g["hi"] - g["lo"] + 1 for g in ingest["gaps"] if g["boot_epoch_ns"] == mark.boot_epoch_ns)
    recs = int(killed.metrics["plantwire_edge_spool_dropped_records_total"])
    sent_recs = int(killed.metrics.get("plantwire_edge_spool_dropped_sent_records_total", 0))
    assert recs - sent_recs <= gap_batches <= recs, report
    # ... named by the cause the edge reported (the killed run's drops came through its run mark).
    reasons = {g["reason"] for g in ingest["gaps"] if g["boot_epoch_ns"] == mark.boot_epoch_ns}
    assert reasons <= {"edge dropped: disk full"}, report
    assert ing_metrics.get("plantwire_ingest_edge_dropped_samples", 0) >= 0
    assert clean.dropped_samples == 0


def test_start_on_a_full_disk_runs_degraded_and_loses_nothing(tmp_path: Path) -> None:
    """The edge starts on a state disk with no space at all: one clear log line, it runs degraded (held
    batches, published and acked by the cloud) and says so on health; when space returns the log has a
    segment again; nothing is lost, signal by signal."""
    state = tmp_path / "state"
    with small_disk(state / "edge", 4 * 1024 * 1024) as edge_dir:
        filler = fill(edge_dir)
        pipe = make_pipeline(state, spool=SMALL_LOG)
        started_ns = time.time_ns()
        try:
            pipe.start()
            h = health(pipe.edge_metrics_port)
            assert h["status"] == "degraded" and "write-ahead log has no disk space" in h["degraded"], h
            wait_until(lambda: edge_metric(pipe, "plantwire_edge_spool_unlogged_acked_records_total") >= 3, 60.0,
                       "held batches to be delivered and acked by the cloud", pipe)
            filler.unlink()
            wait_until(lambda: edge_metric(pipe, "plantwire_edge_spool_wal_no_segment") == 0.0, 30.0,
                       "the log to find space again", pipe)
            wait_until(lambda: health(pipe.edge_metrics_port)["status"] == "ok", 30.0, "health ok again", pipe)
            wait_cloud_acked_everything(pipe)
            run = halt_edge(pipe)
            time.sleep(2.0)
            log_text = (pipe.logs / "edge.log").read_text(errors="replace")
            _per_signal_exact(pipe, run, started_ns)
        finally:
            pipe.close()
    assert log_text.count("the log starts without space") == 1, log_text[-3000:]
    assert "Traceback" not in log_text, log_text[-3000:]
    assert run.dropped_samples == 0 and run.samples_read > 3000


def test_crash_with_a_full_frame_buffer_is_counted_and_back_filled(tmp_path: Path) -> None:
    """Batches every 4 s, kill -9 mid-interval: seconds of samples die in the frame buffer. The run mark
    says how many; the next run reports them, back-fills the OPC-UA ones from history and drops re-reads,
    so over both runs InfluxDB holds exactly what was counted as read, signal by signal."""
    interval_s = 4.0
    pipe = make_pipeline(tmp_path / "state", publish={"batch_interval_ms": int(interval_s * 1000)})
    started_ns = time.time_ns()
    try:
        pipe.start()
        time.sleep(2 * interval_s)
        killed = kill_edge_between_flushes(pipe, batch_interval_s=interval_s)
        mark = read_previous(pipe.state_dir / "edge")
        assert mark is not None and mark.crashed and mark.buffer_samples > 500, mark
        assert mark.samples_read == killed.samples_read
        restart_edge(pipe)
        prev = health(pipe.edge_metrics_port)["previous_run"]
        assert prev["buffer_samples"] == mark.buffer_samples and prev["lost_samples"] == mark.buffer_samples, prev
        wait_until(lambda: edge_metric(pipe, "plantwire_edge_opcua_backfilled_samples_total") > 0, 60.0,
                   "OPC-UA history to back-fill the crash window", pipe)
        wait_cloud_acked_everything(pipe)
        clean = halt_edge(pipe)
        time.sleep(2.0)
        stored = pipe.influx_counts(started_ns, None)
    finally:
        pipe.close()
    read = {sid: int(mark.read_per_signal[i]) for i, sid in enumerate(clean.read_per_signal)}
    for sid, n in clean.read_per_signal.items():
        read[sid] += n
    diff = {s: (n, stored.get(s, 0)) for s, n in read.items() if stored.get(s, 0) != n}
    extra = {s: n for s, n in stored.items() if s not in read}
    print(f"read {sum(read.values())}, stored {sum(stored.values())}, in the buffer at the kill "
          f"{mark.buffer_samples}, duplicates dropped {clean.metrics.get('duplicates')}")
    assert not diff and not extra, f"{len(diff)} signals differ: {dict(list(diff.items())[:5])} {extra}"


def test_crash_while_batches_wait_unlogged_leaves_an_edge_crash_gap(tmp_path: Path) -> None:
    """The edge restarts on a state disk with no room for its log (its run mark is from the run before)
    while the broker is down: batches wait in memory, unsent. A kill -9 loses them; the next run reports
    how many and up to which sequence number, and the cloud's ledger shows that epoch's batches as a gap
    with reason "edge crash". Over all runs: stored = read - counted drops - counted crash losses."""
    state = tmp_path / "state"
    with small_disk(state / "edge", 4 * 1024 * 1024) as edge_dir:
        pipe = make_pipeline(state, spool=SMALL_LOG)
        started_ns = time.time_ns()
        try:
            pipe.start()
            time.sleep(3.0)
            wait_cloud_acked_everything(pipe)
            first = halt_edge(pipe)  # clean: all acked, the run mark stays on the disk
            for seg in (edge_dir / "wal").iterdir():
                if seg.suffix == ".wal" or seg.name == "RESERVE":
                    seg.unlink()
            filler = fill(edge_dir)
            pipe.kill("mosquitto")
            restart_edge(pipe, mqtt=False)
            wait_until(lambda: edge_metric(pipe, "plantwire_edge_spool_unlogged_unsent_samples") >= 3000, 60.0,
                       "batches held unlogged and unsent", pipe)
            killed = kill_edge_between_flushes(pipe)
            mark = read_previous(edge_dir)
            assert mark is not None and mark.crashed
            assert mark.unlogged_samples == killed.metrics["plantwire_edge_spool_unlogged_unsent_samples"] > 0
            filler.unlink()
            pipe.restart("mosquitto")
            restart_edge(pipe)
            prev = health(pipe.edge_metrics_port)["previous_run"]
            assert prev["unlogged_samples"] == mark.unlogged_samples and prev["next_seq"] == mark.next_seq, prev

            def crash_gap() -> list[dict[str, object]]:
                return [g for g in health(pipe.ingest_metrics_port)["gaps"] if g["boot_epoch_ns"] == mark.boot_epoch_ns]

            wait_until(lambda: bool(crash_gap()), 30.0, "the ingestor to close the crashed epoch", pipe)
            wait_cloud_acked_everything(pipe)
            clean = halt_edge(pipe)
            time.sleep(2.0)
            gaps = crash_gap()
            stored = sum(pipe.influx_counts(started_ns, clean.ended_ns).values())
        finally:
            pipe.close()
    # Nothing of the killed run was logged or sent: its whole epoch is one gap, reason "edge crash".
    assert [(g["lo"], g["hi"], g["reason"]) for g in gaps] == [(0, mark.next_seq - 1, "edge crash")], gaps
    read = first.samples_read + killed.samples_read + clean.samples_read
    dropped = first.dropped_samples + killed.dropped_samples + prev["unlogged_samples"] + clean.dropped_samples
    print(f"read {read}, stored {stored}, dropped {dropped} (lost in the crash {prev['unlogged_samples']})")
    assert stored == read - dropped


def test_enospc_at_checkpoints_never_stops_acquisition(tmp_path: Path) -> None:
    """The state disk fills while all else is well: every checkpoint fails with ENOSPC (counted, logged
    once a minute, health degraded), yet the edge keeps reading and delivering through its log's own
    space; when space returns the checkpoint works again and the run stops cleanly, nothing lost."""
    state = tmp_path / "state"
    with small_disk(state / "edge", DISK_BYTES) as edge_dir:
        pipe = make_pipeline(state, spool=SMALL_LOG, analytics={"checkpoint_interval_s": 1.0})
        started_ns = time.time_ns()
        try:
            pipe.start()
            time.sleep(2.0)
            filler = fill(edge_dir)
            wait_until(lambda: edge_metric(pipe, "plantwire_edge_side_errors_total") >= 3, 30.0,
                       "checkpoints to fail with ENOSPC", pipe)
            _grows(pipe, "plantwire_ingest_samples_written_total", 5000, 30.0, "delivery to go on")
            h = health(pipe.edge_metrics_port)
            assert h["status"] == "degraded" and "checkpoint failing" in h["degraded"], h
            filler.unlink()
            wait_until(lambda: health(pipe.edge_metrics_port)["status"] == "ok", 30.0,
                       "the checkpoint to work again", pipe)
            wait_cloud_acked_everything(pipe)
            run = halt_edge(pipe)
            time.sleep(2.0)
            log_text = (pipe.logs / "edge.log").read_text(errors="replace")
            _per_signal_exact(pipe, run, started_ns)
        finally:
            pipe.close()
    assert run.metrics["side_errors"].get("checkpoint", 0) >= 3 and run.dropped_samples == 0
    assert log_text.count("checkpoint failed") <= 2, "logged once a minute, not per failure"
    assert "checkpoint works again" in log_text and "Traceback" not in log_text
