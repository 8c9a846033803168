"""Honest health: a stalled or unreachable InfluxDB is reported within seconds, not after the write timeout.

Each test that stalls a server starts its own (InfluxDB 1.6 for the v1 path, VictoriaMetrics for
influxdb-client's v2 path) and stops it with SIGSTOP, the way a hung or swapping server behaves:
the TCP handshake still succeeds (the kernel's listen backlog), only answers never come. The write
timeout stays at its default of 30 s, so a test passing within a few seconds shows the ping is
independent of it. Dead letters are logged with reason and topic, rate-limited per reason.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.sinks.influx import InfluxV1Ping, InfluxV2Ping, RetryableWriteError
from plantwire import wire
from plantwire.logs import RateLimitedHandler, RateLimitFilter
from plantwire.pipeline import health, scrape
from plantwire.services import InfluxDB1, Mosquitto, VictoriaMetrics
from tests.test_ingest import GW, SITE, Publisher, batch, expected, make_cfg, running, stored, table_payload, wait_for

#: "Within a few seconds": the defaults ping every 1 s with a 2 s timeout; the write timeout is 30 s.
DETECT_S = 10.0


def wait_stopped(pid: int, timeout_s: float = 30.0) -> None:
    """Until every thread of ``pid`` is stopped: kill() returns before a busy multi-threaded process has
    stopped, and a request sent in that moment was still answered (the stall test then saw no timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):  # a thread that exited meanwhile
                states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
        if states and all(st in ("T", "t") for st in states):
            return
        assert time.monotonic() < deadline, f"process {pid} not stopped after SIGSTOP: thread states {states}"
        time.sleep(0.01)


class Stalled:
    """SIGSTOP a server's process for the duration of a ``with``; SIGCONT on the way out, whatever happens."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def __enter__(self) -> Stalled:
        os.kill(self.pid, signal.SIGSTOP)
        wait_stopped(self.pid)
        return self

    def __exit__(self, *exc: object) -> None:
        os.kill(self.pid, signal.SIGCONT)


@pytest.fixture
def own_influx(tmp_path: Path) -> Iterator[InfluxDB1]:
    server = InfluxDB1(tmp_path / "influx")
    server.start()
    try:
        yield server
    finally:
        if server.pid is not None:
            os.kill(server.pid, signal.SIGCONT)  # a stopped process ignores SIGTERM until continued
        server.stop()


def test_sigstop_influx_is_reported_within_seconds_and_nothing_is_lost(
    tmp_path: Path, mosquitto: Mosquitto, own_influx: InfluxDB1
) -> None:
    own_influx.query('CREATE DATABASE "d"')
    cfg = make_cfg(tmp_path, mosquitto, own_influx.url, "d")
    assert cfg.influx.timeout_s == 30.0 and cfg.influx.ping_timeout_s == 2.0  # the shipped defaults
    pub = Publisher(mosquitto)
    want = {}
    try:
        pub.pub(wire.topic(SITE, GW, "signals"), table_payload(), retain=True)
        with running(cfg) as ing:
            assert ing.metrics_server is not None
            port = ing.metrics_server.port
            p, cols = batch(0)
            pub.pub(wire.topic(SITE, GW, "telemetry"), p)
            want.update(expected(cols))
            wait_for(lambda: ing.m_samples.get() == 40 and ing.pending() == 0, 30, what="first batch stored")
            wait_for(lambda: scrape(port).get("plantwire_ingest_influx_up") == 1, 10, what="influx_up 1")
            assert health(port)["status"] == "ok"

            with Stalled(own_influx.pid or 0):
                t_stop = time.monotonic()
                for seq in (1, 2, 3):  # written into the stalled server: the write blocks
                    p, cols = batch(seq)
                    pub.pub(wire.topic(SITE, GW, "telemetry"), p)
                    want.update(expected(cols))
                wait_for(
                    lambda: scrape(port).get("plantwire_ingest_influx_up") == 0, DETECT_S, what="influx_up 0"
                )
                detected_s = time.monotonic() - t_stop
                h = health(port)
                assert h["status"] == "degraded" and h["influx_ok"] is False and h["influx_reachable"] == "down"
                assert "ping" in h["last_error"]
                # Received, and nothing acknowledged while InfluxDB does not answer.
                wait_for(lambda: ing.pending() == 3, 30, what="3 messages pending")
                assert ing.m_samples.get() == 40
            t_cont = time.monotonic()
            wait_for(lambda: scrape(port).get("plantwire_ingest_influx_up") == 1, DETECT_S, what="influx_up 1 again")
            recovered_s = time.monotonic() - t_cont
            wait_for(lambda: ing.m_samples.get() == 160 and ing.pending() == 0, 60, what="all batches stored")
            assert health(port)["status"] == "ok"
            assert scrape(port).get("plantwire_ingest_errors_total", 0) >= 1  # kind="influx_ping"
            assert ing.m_errors.get(kind="influx_ping") >= 1
    finally:
        pub.close()
    print(f"influx_up 0 after {detected_s:.1f} s stalled, 1 again {recovered_s:.1f} s after SIGCONT")
    assert detected_s < DETECT_S
    assert stored(own_influx, "d") == want  # no sample lost


def test_v1_ping_answers_and_times_out_on_a_stalled_server(own_influx: InfluxDB1) -> None:
    ping = InfluxV1Ping(own_influx.url, timeout_s=1.0)
    try:
        ping.ping()
        with Stalled(own_influx.pid or 0):
            t0 = time.monotonic()
            with pytest.raises(RetryableWriteError, match="no answer within 1 s"):
                ping.ping()
            assert time.monotonic() - t0 < 5.0
        ping.ping()  # a new connection after the failed one
    finally:
        ping.close()


def test_v1_ping_on_a_closed_port_fails_at_once(tmp_path: Path) -> None:
    from plantwire.ports import free_port

    ping = InfluxV1Ping(f"http://127.0.0.1:{free_port('127.0.0.1')}", timeout_s=2.0)
    with pytest.raises(RetryableWriteError, match="ConnectionRefused"):
        ping.ping()


def test_v2_ping_through_influxdb_client_times_out_on_a_stalled_server(tmp_path: Path) -> None:
    vm = VictoriaMetrics(tmp_path / "vm")
    vm.start()
    ping = InfluxV2Ping(vm.url, org="o", token="t", timeout_s=1.0)
    try:
        ping.ping()
        with Stalled(vm.pid or 0):
            t0 = time.monotonic()
            with pytest.raises(RetryableWriteError, match="timeout 1 s"):
                ping.ping()
            assert time.monotonic() - t0 < 5.0
        ping.ping()
    finally:
        ping.close()
        vm.stop()


def test_dead_letters_are_logged_with_reason_and_topic_rate_limited_per_reason(
    tmp_path: Path, mosquitto: Mosquitto, influxdb: InfluxDB1, influx_db: str
) -> None:
    """20 malformed payloads: 5 lines, 15 counted as suppressed; another reason is not hidden by them."""
    stream = io.StringIO()
    limiter = RateLimitFilter(burst=5, window_s=600.0)
    handler = RateLimitedHandler(stream, limiter)
    logger = logging.getLogger("cloud.app")
    logger.addHandler(handler)
    cfg = make_cfg(tmp_path, mosquitto, influxdb.url, influx_db, max_payload_bytes=1024)
    pub = Publisher(mosquitto)
    try:
        with running(cfg) as ing:
            for i in range(20):
                pub.pub(wire.topic(SITE, GW, "telemetry"), b"garbage %d" % i)
            pub.pub(wire.topic(SITE, "gw-z", "telemetry"), b"x" * 2000)
            wait_for(lambda: ing.m_dead.total() == 21 and ing.pending() == 0, 30, what="21 dead letters")
    finally:
        pub.close()
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    malformed = [line for line in lines if "dead letter (malformed)" in line]
    assert len(malformed) == 5, lines
    assert all(f"'plantwire/v1/{SITE}/{GW}/telemetry'" in line for line in malformed)
    assert all("kept in the dead-letter store" in line for line in malformed)
    assert limiter.suppressed_total == 15
    oversized = [line for line in lines if "dead letter (oversized)" in line]
    assert len(oversized) == 1 and "gw-z/telemetry" in oversized[0] and "exceeds 1024" in oversized[0]
