"""InfluxDB error classification, the v2 write path, and the daemon's command line.

Servers: InfluxDB 1.6 (``influxdb``/``influx_db``) backs the v1 path; VictoriaMetrics (``victoria``)
backs the v2 path (influxdb-client's ``/api/v2/write``). Where a test needs InfluxDB to answer 429
or 503, a small fault-injecting HTTP proxy sits in front of the *real* InfluxDB and forwards every
request it does not fail.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml

from cloud.sinks.influx import (
    InfluxV1Sink,
    InfluxV2Sink,
    PartialWriteError,
    RetryableWriteError,
    conflicting_field,
    parse_rejections,
)
from plantwire import wire
from plantwire.services import InfluxDB1, Mosquitto, VictoriaMetrics
from tests.test_ingest import GW, SITE, Publisher, batch, expected, make_cfg, running, stored, table_payload, wait_for


class FaultProxy:
    """Forwards HTTP to a real server; the first ``fail`` writes get ``status`` (+ Retry-After)."""

    def __init__(
        self, target: str, *, fail: int, status: int, retry_after: str | None = None, max_body: int | None = None
    ) -> None:
        host, port = target.removeprefix("http://").split(":")
        proxy = self
        self.fail = fail
        self.failed_at: list[float] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                too_big = max_body is not None and len(body) > max_body
                if "/write" in self.path and (proxy.fail > 0 or too_big):
                    proxy.fail -= 1
                    proxy.failed_at.append(time.monotonic())
                    self.send_response(status)
                    if retry_after is not None:
                        self.send_header("Retry-After", retry_after)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                    return
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                conn.request("POST", self.path, body=body, headers={"Content-Type": self.headers["Content-Type"]})
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pub(mosquitto: Mosquitto) -> Iterator[Publisher]:
    p = Publisher(mosquitto)
    p.pub(wire.topic(SITE, GW, "signals"), table_payload(), retain=True)
    try:
        yield p
    finally:
        p.close()


# -- classification ---------------------------------------------------------------------------------


def test_v1_sink_classifies_real_influxdb_answers(influxdb: InfluxDB1, influx_db: str) -> None:
    sink = InfluxV1Sink(influxdb.url, influx_db)
    sink.write(b"m v=1 1\n")
    with pytest.raises(PartialWriteError) as e:
        sink.write(b"m v=2 2\nm v=oops 3\nm v=4 4\nm,x v=5 5\n")
    assert e.value.bad_lines == ["m v=oops 3", "m,x v=5 5"] and e.value.dropped == 2
    assert [r["v"] for r in influxdb.rows("SELECT v FROM m", influx_db)] == [1, 2, 4]  # good points kept
    with pytest.raises(PartialWriteError) as e:
        sink.write(b"m v=7i 7\n")  # integer into a float field
    assert conflicting_field(e.value.reason) == ("m", "v") and e.value.dropped == 1
    with pytest.raises(RetryableWriteError) as e2:
        InfluxV1Sink(influxdb.url, "no_such_db").write(b"m v=1 1\n")
    assert e2.value.status == 404
    sink.close()


def test_gzip_bodies_are_accepted_by_influxdb_1_6_and_victoriametrics(
    influxdb: InfluxDB1, influx_db: str, victoria: VictoriaMetrics
) -> None:
    sink = InfluxV1Sink(influxdb.url, influx_db, gzip_level=1)
    body = b"".join(b"gz,signal=line3.press07.oil_temp v=%d.5 %d\n" % (i, i) for i in range(1000))
    sink.write(body)
    rows = influxdb.rows("SELECT v FROM gz", influx_db)
    assert len(rows) == 1000 and rows[1]["v"] == 1.5
    assert sink.stats.bytes < len(body) / 5  # what went over the wire is the compressed body
    t = time.time_ns() // 10**6 * 10**6
    InfluxV2Sink(victoria.url, org="o", bucket="b", token=None, gzip=True).write(f"gz2,k=x v=3.5 {t}\n".encode())
    wait_for(lambda: [s["values"] for s in victoria.export('{__name__="gz2_v"}')] == [[3.5]], 10, what="gz2_v")


def test_connection_refused_is_retryable(tmp_path: Path) -> None:
    from plantwire.ports import free_port

    with pytest.raises(RetryableWriteError) as e:
        InfluxV1Sink(f"http://127.0.0.1:{free_port()}", "d", timeout_s=2).write(b"m v=1 1\n")
    assert e.value.status is None


def test_parse_rejections_names_lines_with_quotes() -> None:
    msg = "partial write: unable to parse 'm,a=it's v=x 1': invalid number\nunable to parse 'n v=': bad dropped=2"
    assert parse_rejections(msg) == (["m,a=it's v=x 1", "n v="], 2)


@pytest.mark.parametrize(("status", "retry_after"), [(429, "1"), (503, None)])
def test_429_and_5xx_are_retried_honouring_retry_after(
    tmp_path: Path,
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_db: str,
    pub: Publisher,
    status: int,
    retry_after: str | None,
) -> None:
    proxy = FaultProxy(influxdb.url, fail=2, status=status, retry_after=retry_after)
    try:
        cfg = make_cfg(tmp_path, mosquitto, proxy.url, influx_db, retry_min_s=0.1)
        with running(cfg) as ing:
            p, cols = batch(0)
            pub.pub(wire.topic(SITE, GW, "telemetry"), p)
            wait_for(lambda: ing.m_samples.get() == 40 and ing.pending() == 0, 20, what="written after retries")
            assert ing.m_errors.get(kind=f"influx_{status}") == 2
        assert stored(influxdb, influx_db) == expected(cols)
        gaps = np.diff(proxy.failed_at)
        if retry_after:  # the server's Retry-After (1 s) wins over the 0.1 s back-off
            assert gaps[0] >= 0.95
        else:
            assert gaps[0] < 0.9
    finally:
        proxy.close()


def test_partial_write_keeps_good_points_and_dead_letters_the_rest(
    tmp_path: Path, mosquitto: Mosquitto, influxdb: InfluxDB1, influx_db: str, pub: Publisher
) -> None:
    # Someone wrote "value" as an integer first: every finite sample now conflicts, NaN ones do not.
    # Type conflicts are per shard: the integer point must fall in the same shard (week) as the batch.
    InfluxV1Sink(influxdb.url, influx_db).write(
        f"samples,signal=other value=1i {time.time_ns() - 30 * 10**9}\n".encode()
    )
    cfg = make_cfg(tmp_path, mosquitto, influxdb.url, influx_db)
    p, cols = batch(0, n=8)
    cols["value"][:2] = np.nan
    p = wire.encode_batch(gateway=GW, boot_epoch_ns=1_000, seq=0, table_hash=wire_hash(), **cols)
    with running(cfg) as ing:
        pub.pub(wire.topic(SITE, GW, "telemetry"), p)
        wait_for(lambda: ing.pending() == 0 and ing.m_dead.get(reason="influx_rejected") == 1, what="partial write")
        assert ing.m_dead_samples.get() == 6
        assert ing.m_samples.get() == 2  # only what InfluxDB accepted counts as written
        entry = next(e for e in ing.dead.read() if e["kind"] == "influx_rejected")
        assert "field type conflict" in str(entry["reason"]) and len(entry["lines"]) == 6  # type: ignore[arg-type]
        assert ing.ledger.ack(GW, 1_000).watermark == 0  # processed: the edge need not re-send it
    rows = influxdb.rows('SELECT "quality", "nonfinite" FROM samples WHERE "signal" != \'other\'', influx_db)
    assert [r["nonfinite"] for r in rows] == ["nan", "nan"]


def wire_hash() -> bytes:
    from tests.test_ingest import HASH

    return HASH


# -- v2 path against VictoriaMetrics -------------------------------------------------------------------


def test_v2_path_writes_through_influxdb_client(
    tmp_path: Path, mosquitto: Mosquitto, victoria: VictoriaMetrics, pub: Publisher
) -> None:
    cfg = make_cfg(tmp_path, mosquitto, victoria.url, "ignored")
    cfg = cfg.model_copy(update={"influx": cfg.influx.model_copy(update={"api": "v2", "bucket": "b", "org": "o"})})
    t0 = (time.time_ns() // 1_000_000_000 - 120) * 1_000_000_000  # whole ms: VictoriaMetrics keeps ms
    _, cols = batch(0, n=12, t0=t0)
    # VictoriaMetrics keeps ~12 significant digits (its own compression): values with 3 decimals stay exact.
    cols["value"] = np.round(cols["value"], 3)
    p = wire.encode_batch(gateway=GW, boot_epoch_ns=1_000, seq=0, table_hash=wire_hash(), **cols)
    with running(cfg) as ing:
        assert isinstance(ing.sink, InfluxV2Sink)
        pub.pub(wire.topic(SITE, GW, "telemetry"), p)
        wait_for(lambda: ing.m_samples.get() == 12 and ing.pending() == 0, what="v2 write")
    match = '{__name__="samples_value", gateway="gw-a"}'
    wait_for(lambda: sum(len(x["values"]) for x in victoria.export(match)) == 12, 10, what="12 points searchable")
    series = victoria.export(match)
    got = {}
    for s in series:
        for ts, v in zip(s["timestamps"], s["values"], strict=True):
            got[(s["metric"]["signal"], ts * 1_000_000)] = v
    want = {k: v[0] for k, v in expected(cols).items()}
    assert got == want


def test_v2_sink_classifies_errors(victoria: VictoriaMetrics) -> None:
    from plantwire.ports import free_port

    with pytest.raises(RetryableWriteError):
        InfluxV2Sink(f"http://127.0.0.1:{free_port()}", org="o", bucket="b", token=None, timeout_s=2).write(
            b"m v=1 1\n"
        )
    # VictoriaMetrics skips unparseable lines with 204 (it logs them), so statuses come from the proxy.
    proxy = FaultProxy(victoria.url, fail=1, status=429, retry_after="3")
    try:
        sink = InfluxV2Sink(proxy.url, org="o", bucket="b", token=None)
        with pytest.raises(RetryableWriteError) as e:
            sink.write(b"m v=1 1\n")
        assert (e.value.status, e.value.retry_after_s) == (429, 3.0)
        sink.write(b"m v=1 1\n")  # forwarded to VictoriaMetrics
    finally:
        proxy.close()


# -- the daemon ---------------------------------------------------------------------------------------


def _spawn(cfg_path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "plantwire.cli", "ingest", str(cfg_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_cli_bad_config_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "cloud.yaml"
    cfg.write_text("influx: {api: v3, url: x}\nmqtt: {port: 0}\n")
    proc = _spawn(cfg)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert b"influx.api" in out and b"mqtt.port" in out


def test_cli_ingests_and_exits_0_on_sigterm(
    tmp_path: Path, mosquitto: Mosquitto, influxdb: InfluxDB1, influx_db: str, pub: Publisher
) -> None:
    cfg = make_cfg(tmp_path, mosquitto, influxdb.url, influx_db)
    path = tmp_path / "cloud.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    proc = _spawn(path)
    port_file = cfg.state_dir / "metrics.port"
    try:
        from plantwire.pipeline import health, scrape

        wait_for(port_file.exists, 60, what="metrics port")
        port = int(port_file.read_text())
        wait_for(lambda: health(port).get("mqtt_subscribed"), 30, what="daemon subscribed")
        p, cols = batch(0)
        pub.pub(wire.topic(SITE, GW, "telemetry"), p)
        wait_for(
            lambda: (
                scrape(port).get("plantwire_ingest_samples_written_total") == 40
                and scrape(port).get("plantwire_ingest_pending_messages", 1) == 0
            ),
            30,
            what="daemon wrote and acked the batch",
        )
        m = scrape(port)
        assert m["plantwire_ingest_samples_written_total"] == 40
        assert m["plantwire_ingest_sample_latency_seconds_count"] == 40
        assert health(port)["status"] == "ok"
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode()[-2000:]
    assert stored(influxdb, influx_db) == expected(cols)


def test_cli_sighup_reload_rejects_a_bad_file_and_switches_on_a_good_one(
    tmp_path: Path, mosquitto: Mosquitto, influxdb: InfluxDB1, influx_db: str, pub: Publisher
) -> None:
    from plantwire.pipeline import health, scrape

    cfg = make_cfg(tmp_path, mosquitto, influxdb.url, influx_db)
    path = tmp_path / "cloud.yaml"
    good = yaml.safe_dump(cfg.model_dump(mode="json"))
    path.write_text(good)
    port_file = cfg.state_dir / "metrics.port"
    proc = _spawn(path)
    try:
        wait_for(port_file.exists, 60, what="metrics port")
        port = int(port_file.read_text())
        wait_for(lambda: health(port).get("mqtt_subscribed"), 30, what="subscribed")
        path.write_text(good.replace("linger_ms: 5", "linger_ms: -3"))
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(lambda: scrape(port).get("plantwire_ingest_config_reload_failures_total") == 1, what="rejected")
        port_file.unlink()
        path.write_text(good.replace("linger_ms: 5", "linger_ms: 7"))
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(port_file.exists, 30, what="new ingestor's metrics port")
        port = int(port_file.read_text())
        wait_for(lambda: health(port).get("mqtt_subscribed"), 30, what="resubscribed")
        p, cols = batch(0)
        pub.pub(wire.topic(SITE, GW, "telemetry"), p)
        wait_for(lambda: scrape(port).get("plantwire_ingest_samples_written_total") == 40, 30, what="written")
        assert proc.poll() is None
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode()[-2000:]
    assert b"reload rejected" in out and b"ingest.linger_ms" in out
    assert stored(influxdb, influx_db) == expected(cols)


def test_413_splits_requests_and_dead_letters_a_line_that_can_never_fit(
    tmp_path: Path, mosquitto: Mosquitto, influxdb: InfluxDB1, influx_db: str, pub: Publisher
) -> None:
    proxy = FaultProxy(influxdb.url, fail=0, status=413, max_body=1200)
    try:
        cfg = make_cfg(tmp_path, mosquitto, proxy.url, influx_db)
        with running(cfg) as ing:
            p, cols = batch(0)
            pub.pub(wire.topic(SITE, GW, "telemetry"), p)
            wait_for(lambda: ing.m_samples.get() == 40 and ing.pending() == 0, what="written in halves")
            assert ing.m_errors.get(kind="influx_413") >= 3
        assert stored(influxdb, influx_db) == expected(cols)
    finally:
        proxy.close()
    proxy = FaultProxy(influxdb.url, fail=0, status=413, max_body=60)  # shorter than any sample's line
    try:
        cfg = make_cfg(tmp_path / "2", mosquitto, proxy.url, influx_db)
        with running(cfg) as ing:
            p, _ = batch(1, n=4)
            pub.pub(wire.topic(SITE, GW, "telemetry"), p)
            wait_for(lambda: ing.pending() == 0 and ing.m_dead_samples.get() == 4, what="dead-lettered lines")
            assert ing.m_samples.get() == 0
            lines = [e["lines"] for e in ing.dead.read() if e["kind"] == "influx_rejected"]
            assert len(lines) == 4 and all(len(x) == 1 and x[0].startswith("samples,") for x in lines)
    finally:
        proxy.close()
