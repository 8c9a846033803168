"""The ingestor against real servers: Mosquitto (``mosquitto``) and InfluxDB 1.6 (``influx_db``/own instance).

Each test runs the :class:`cloud.app.Ingestor` in a thread of the test process, publishes real wire
payloads with a paho client, and reads back through InfluxQL.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud.app import Ingestor
from cloud.config import CloudConfig
from cloud.retention import RetentionSettings
from plantwire import wire
from plantwire.services import InfluxDB1, Mosquitto

SITE = "plant1"
GW = "gw-a"
HASH = b"\x01\x02\x03\x04\x05\x06\x07\x08"
IDS = ["m1.temp", "m1.press", "m2.speed", "loose sig,x=1"]
MACHINES = ["m1", "m1", "m2", ""]


def make_cfg(tmp: Path, broker: Mosquitto, influx_url: str, db: str, **ingest: object) -> CloudConfig:
    return CloudConfig.model_validate(
        {
            "mqtt": {"host": broker.host, "port": broker.port, "client_id": f"ingest-{tmp.name}"},
            "influx": {"api": "v1", "url": influx_url, "database": db},
            "state_dir": str(tmp / "state"),
            "metrics": {"port": 0},
            "ingest": {"linger_ms": 5, "retry_min_s": 0.2, "retry_max_s": 0.5, **ingest},
        }
    )


@contextmanager
def running(cfg: CloudConfig) -> Iterator[Ingestor]:
    ing = Ingestor(cfg)
    stop = threading.Event()
    ing.start()
    t = threading.Thread(target=ing.run, args=(stop,), name="test-ingest", daemon=True)
    t.start()
    try:
        assert ing.source.wait_subscribed(10), "ingestor did not subscribe"
        yield ing
    finally:
        stop.set()
        t.join(20)
        ing.close()
        assert not t.is_alive()


class Publisher:
    def __init__(self, broker: Mosquitto, client_id: str = "test-pub") -> None:
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.acks: list[wire.Ack] = []
        self.client.on_message = lambda c, u, m: self.acks.append(wire.decode_ack(m.payload))
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def pub(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def watch_acks(self) -> None:
        self.client.subscribe(wire.topic(SITE, GW, "ack"), qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def table_payload(gateway: str = GW, table_hash: bytes = HASH) -> bytes:
    return wire.encode_signal_table(
        gateway=gateway,
        table_hash=table_hash,
        site=SITE,
        ids=IDS,
        machines=MACHINES,
        units=["C", "bar", "rpm", ""],
        kinds=["analog"] * 4,
    )


def batch(
    seq: int, n: int = 40, *, t0: int | None = None, boot: int = 1_000, seed: int = 0, table_hash: bytes = HASH
) -> tuple[bytes, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed + seq)
    t0 = time.time_ns() - 60_000_000_000 if t0 is None else t0
    cols = {
        "ts_ns": t0 + np.arange(n, dtype=np.int64) * 1_000_000 + seq * n * 1_000_000,
        "signal": (np.arange(n) % len(IDS)).astype(np.uint32),
        "value": rng.normal(50, 20, n),
        "quality": (np.arange(n) % 3).astype(np.uint8),
    }
    payload = wire.encode_batch(gateway=GW, boot_epoch_ns=boot, seq=seq, table_hash=table_hash, **cols)
    return payload, cols


def wait_for(cond: Callable[[], object], timeout_s: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def stored(influx: InfluxDB1, db: str) -> dict[tuple[str, int], tuple[float | None, int | None, str | None]]:
    rows = influx.rows('SELECT "value", "quality", "nonfinite" FROM samples GROUP BY "signal"', db)
    return {(r["signal"], r["time"]): (r["value"], r["quality"], r["nonfinite"]) for r in rows}


def expected(cols: dict[str, np.ndarray]) -> dict[tuple[str, int], tuple[float | None, int | None, str | None]]:
    """What InfluxDB holds per point: a good sample (quality 0) has no quality field (null)."""
    out: dict[tuple[str, int], tuple[float | None, int | None, str | None]] = {}
    for ts, s, v, q0 in zip(
        cols["ts_ns"].tolist(), cols["signal"].tolist(), cols["value"].tolist(), cols["quality"].tolist(), strict=True
    ):
        q = q0 or None
        if np.isnan(v):
            out[(IDS[s], ts)] = (None, q, "nan")
        elif np.isinf(v):
            out[(IDS[s], ts)] = (None, q, "+inf" if v > 0 else "-inf")
        else:
            out[(IDS[s], ts)] = (v, q, None)
    return out


def test_batches_land_with_exact_values_and_are_acked(
    tmp_path: Path, mosquitto: Mosquitto, influxdb: InfluxDB1, influx_db: str
) -> None:
    cfg = make_cfg(tmp_path, mosquitto, influxdb.url, influx_db)
    pub = Publisher(mosquitto)
    pub.watch_acks()
    try:
        pub.pub(wire.topic(SITE, GW, "signals"), table_payload(), retain=True)
        want = {}
        payloads = []
        for seq in range(5):
            p, cols = batch(seq)
            if seq == 2:  # non-finite and extreme values travel intact
                cols["value"][:6] = [np.nan, np.inf, -np.inf, 5e-324, -0.0, 1.7976931348623157e308]
                p = wire.encode_batch(gateway=GW, boot_epoch_ns=1_000, seq=seq, table_hash=HASH, **cols)
            payloads.append(p)
            want.update(expected(cols))
        with running(cfg) as ing:
            for p in payloads:
                pub.pub(wire.topic(SITE, GW, "telemetry"), p)
            wait_for(lambda: ing.m_samples.get() >= 200 and ing.pending() == 0, what="200 samples written and acked")
            got = stored(influxdb, influx_db)
            assert got == want
            wait_for(lambda: any(a.watermark == 4 for a in pub.acks), what="ack watermark 4")
            ack = pub.acks[-1]
            assert (ack.gateway, ack.boot_epoch_ns, ack.watermark, ack.ranges) == (GW, 1_000, 4, ())
            # Tags come from the signal table; a signal without machine has no machine tag.
            tags = influxdb.rows(
                'SELECT count("value") AS "finite", count("nonfinite") AS "nonfinite" FROM samples '
                'GROUP BY "machine", "site", "gateway"', influx_db
            )
            assert {(r["machine"], r["site"], r["gateway"], (r["finite"] or 0) + (r["nonfinite"] or 0))
                    for r in tags} == {
                ("m1", SITE, GW, 100),
                ("m2", SITE, GW, 50),
                ("", SITE, GW, 50),
            }
            assert ing.latency.count == 200
            # The latency's first part (arrival here) is fed for the same samples and is never longer;
            # every stage of every written group is timed once (bench/e2e.py's breakdown).
            assert ing.arrival.count == 200 and ing.arrival._sum <= ing.latency._sum
            wait_for(lambda: ing.stage["commit"].count >= 1
                     and len({h.count for h in ing.stage.values()}) == 1, what="every stage timed per group")
            assert ing.source.stats.acked == 6  # five batches and the retained table
    finally:
        pub.close()


def test_malformed_payloads_are_dead_lettered_and_other_data_lands(
    tmp_path: Path, mosquitto: Mosquitto, influxdb: InfluxDB1, influx_db: str
) -> None:
    cfg = make_cfg(tmp_path, mosquitto, influxdb.url, influx_db, max_payload_bytes=100_000)
    pub = Publisher(mosquitto)
    try:
        pub.pub(wire.topic(SITE, GW, "signals"), table_payload(), retain=True)
        good, cols = batch(0)
        truncated = good[:-7]
        with running(cfg) as ing:
            pub.pub(wire.topic(SITE, GW, "telemetry"), b"not a plantwire payload")
            pub.pub(wire.topic(SITE, GW, "telemetry"), truncated)
            pub.pub(wire.topic(SITE, "other-gw", "telemetry"), good)  # wrong gateway for the topic
            pub.pub(wire.topic(SITE, GW, "bogus"), b"x")
            pub.pub(wire.topic(SITE, GW, "telemetry"), b"PW" + bytes(200_000))  # oversized
            pub.pub(wire.topic(SITE, GW, "telemetry"), good)
            wait_for(lambda: ing.m_samples.get() >= 40 and ing.pending() == 0, what="good batch written")
            assert stored(influxdb, influx_db) == expected(cols)
            assert ing.m_dead.get(reason="malformed") == 2
            assert ing.m_dead.get(reason="wrong_gateway") == 1
            assert ing.m_dead.get(reason="unknown_lane") == 1
            assert ing.m_dead.get(reason="oversized") == 1
            entries = ing.dead.read()
            assert len(entries) == 5
            assert entries[0]["topic"] == wire.topic(SITE, GW, "telemetry")
            assert "header.magic" in str(entries[0]["reason"])
            assert ing.dead.decode_payload(entries[0]) == b"not a plantwire payload"
            assert "body" in str(entries[1]["reason"]) and ing.dead.decode_payload(entries[1]) == truncated
            assert ing.source.stats.acked == 7  # everything acknowledged, nothing blocks the session
    finally:
        pub.close()


@pytest.mark.parametrize("connections", [1, 3])
def test_influx_down_nothing_acked_nothing_lost(tmp_path: Path, mosquitto: Mosquitto, connections: int) -> None:
    """With several write connections too: a group counts as written only once every chunk is."""
    n = 450  # 5 requests of 100 lines per batch
    influx = InfluxDB1(tmp_path / "influx")
    influx.start()
    try:
        influx.query('CREATE DATABASE "d"')
        cfg = make_cfg(tmp_path, mosquitto, influx.url, "d", write_connections=connections, lines_per_request=100)
        pub = Publisher(mosquitto)
        pub.watch_acks()
        try:
            pub.pub(wire.topic(SITE, GW, "signals"), table_payload(), retain=True)
            want = {}
            with running(cfg) as ing:
                p, cols = batch(0, n=n)
                pub.pub(wire.topic(SITE, GW, "telemetry"), p)
                want.update(expected(cols))
                wait_for(lambda: ing.m_samples.get() >= n and ing.pending() == 0, what="first batch")
                influx.stop()
                for seq in (1, 2, 3):
                    p, cols = batch(seq, n=n)
                    pub.pub(wire.topic(SITE, GW, "telemetry"), p)
                    want.update(expected(cols))
                # All three received, none acknowledged while the writes keep failing.
                wait_for(lambda: ing.m_errors.total() >= 2 and ing.pending() == 3, what="retried write errors")
                time.sleep(0.5)
                assert ing.pending() == 3
                assert ing.m_samples.get() == n
                assert ing.health()["status"] == "degraded"
                assert max(a.watermark for a in pub.acks) == 0
                influx.start()
                wait_for(lambda: ing.m_samples.get() >= 4 * n and ing.pending() == 0, 30, what="written after return")
                assert ing.m_influx_up.get() == 1
            assert stored(influx, "d") == want
            wait_for(lambda: any(a.watermark == 3 for a in pub.acks), what="watermark 3")
        finally:
            pub.close()
    finally:
        influx.stop()


def test_sigterm_during_outage_leaves_messages_with_the_broker(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Stopped while InfluxDB is down: nothing acked; a new ingestor (same session) gets and stores it all."""
    influx = InfluxDB1(tmp_path / "influx")
    influx.start()
    try:
        influx.query('CREATE DATABASE "d"')
        cfg = make_cfg(tmp_path, mosquitto, influx.url, "d")
        pub = Publisher(mosquitto)
        try:
            pub.pub(wire.topic(SITE, GW, "signals"), table_payload(), retain=True)
            influx.stop()
            want = {}
            with running(cfg) as ing:
                for seq in range(3):
                    p, cols = batch(seq)
                    pub.pub(wire.topic(SITE, GW, "telemetry"), p)
                    want.update(expected(cols))
                wait_for(lambda: ing.m_errors.total() >= 1 and ing.pending() == 4, what="pending during outage")
                assert ing.source.stats.acked == 0
            influx.start()
            with running(cfg) as ing2:
                wait_for(
                    lambda: ing2.m_samples.get() >= 120 and ing2.pending() == 0, 30, what="redelivered and written"
                )
            assert stored(influx, "d") == want
        finally:
            pub.close()
    finally:
        influx.stop()


def test_unknown_table_is_held_then_written_and_tables_survive_restart(
    tmp_path: Path, mosquitto: Mosquitto, influxdb: InfluxDB1, influx_db: str
) -> None:
    cfg = make_cfg(tmp_path, mosquitto, influxdb.url, influx_db)
    pub = Publisher(mosquitto)
    try:
        p0, c0 = batch(0)
        with running(cfg) as ing:
            pub.pub(wire.topic(SITE, GW, "telemetry"), p0)
            wait_for(lambda: len(ing.held) == 1, what="batch held")
            time.sleep(0.3)
            assert ing.m_samples.get() == 0 and ing.pending() == 1
            pub.pub(wire.topic(SITE, GW, "signals"), table_payload())  # not retained: only the store knows it
            wait_for(lambda: ing.m_samples.get() == 40 and ing.pending() == 0, what="held batch written")
        assert stored(influxdb, influx_db) == expected(c0)
        # A new process decodes at once from the persisted table, with no signals message at all.
        p1, c1 = batch(1)
        with running(cfg) as ing:
            assert len(ing.tables) == 1
            pub.pub(wire.topic(SITE, GW, "telemetry"), p1)
            wait_for(lambda: ing.m_samples.get() == 40 and ing.pending() == 0, what="decoded after restart")
            assert ing.ledger.ack(GW, 1_000).watermark == 1  # the ledger survived the restart too
        assert stored(influxdb, influx_db) == {**expected(c0), **expected(c1)}
    finally:
        pub.close()


def test_events_and_health_lanes(tmp_path: Path, mosquitto: Mosquitto, influxdb: InfluxDB1, influx_db: str) -> None:
    cfg = make_cfg(tmp_path, mosquitto, influxdb.url, influx_db)
    pub = Publisher(mosquitto)
    try:
        t = time.time_ns() - 10_000_000_000
        events = [
            {
                "type": "alarm",
                "state": "open",
                "kind": "ewma",
                "signal": "m1.temp",
                "machine": "m1",
                "start_ns": t,
                "end_ns": None,
                "peak": 0.7,
            },
            {
                "type": "alarm",
                "state": "closed",
                "kind": "ewma",
                "signal": "m1.temp",
                "machine": "m1",
                "start_ns": t,
                "end_ns": t + 2_000_000_000,
                "peak": 0.9,
            },
            {
                "type": "health",
                "machine": "m2",
                "ts_ns": t,
                "health": 0.8,
                "rul": 1200.0,
                "rul_low": None,
                "rul_high": 1500.0,
            },
            {"type": "alarm", "state": "weird", "start_ns": t},  # dead-lettered alone
        ]
        with running(cfg) as ing:
            doc = {"v": 1, "gateway": GW, "boot_epoch_ns": 1_000, "events": events}
            pub.pub(wire.topic(SITE, GW, "events"), json.dumps(doc).encode())
            pub.pub(wire.topic(SITE, GW, "health"), json.dumps({"status": "online", "gateway": GW}).encode())
            wait_for(lambda: ing.pending() == 0 and ing.m_points.get() >= 3, what="events written")
            assert ing.m_dead.get(reason="schema") == 1
        ev = influxdb.rows("SELECT * FROM events", influx_db)
        assert len(ev) == 1
        assert ev[0]["active"] == 0 and ev[0]["state"] == "closed" and ev[0]["peak"] == 0.9
        assert ev[0]["duration_s"] == 2.0 and ev[0]["time"] == t and ev[0]["kind"] == "ewma"
        h = influxdb.rows("SELECT * FROM health", influx_db)
        assert [(r["machine"], r["health"], r["rul"], r.get("rul_low"), r["rul_high"]) for r in h] == [
            ("m2", 0.8, 1200.0, None, 1500.0)
        ]
        online = influxdb.rows("SELECT online FROM pipeline", influx_db)
        assert [r["online"] for r in online] == [1]
    finally:
        pub.close()


def test_gaps_show_in_metrics_acks_and_influxdb(
    tmp_path: Path, mosquitto: Mosquitto, influxdb: InfluxDB1, influx_db: str
) -> None:
    cfg = make_cfg(tmp_path, mosquitto, influxdb.url, influx_db, report_interval_s=0.3)
    pub = Publisher(mosquitto)
    pub.watch_acks()
    t0 = time.time_ns() - 60 * 10**9
    try:
        pub.pub(wire.topic(SITE, GW, "signals"), table_payload(), retain=True)
        with running(cfg) as ing:
            for seq in (0, 1, 4, 7):
                pub.pub(wire.topic(SITE, GW, "telemetry"), batch(seq, t0=t0)[0])
            wait_for(lambda: ing.m_samples.get() == 160 and ing.pending() == 0, what="4 batches")
            wait_for(lambda: ing.m_gaps.get(gateway=GW) == 2, what="gap gauge")
            assert ing.m_gap_batches.get(gateway=GW) == 4  # 2-3 and 5-6
            assert [(g["lo"], g["hi"]) for g in ing.health()["gaps"]] == [(2, 3), (5, 6)]
            wait_for(lambda: pub.acks and pub.acks[-1].ranges == ((4, 4), (7, 7)), what="ack with ranges")
            assert pub.acks[-1].watermark == 1
            q = 'SELECT gaps, gap_batches, gap_age_s FROM pipeline WHERE gaps > 0 GROUP BY "gateway"'
            wait_for(lambda: influxdb.rows(q, influx_db), what="pipeline point with gaps")
            rows = influxdb.rows(q, influx_db)
            assert rows[0]["gaps"] == 2 and rows[0]["gap_batches"] == 4 and rows[0]["gateway"] == GW
            total = influxdb.rows("SELECT sum(samples) FROM pipeline", influx_db)
            wait_for(
                lambda: influxdb.rows("SELECT sum(samples) FROM pipeline", influx_db)[0]["sum"] == 160,
                what=f"pipeline samples add up ({total})",
            )
            pub.pub(wire.topic(SITE, GW, "telemetry"), batch(1, t0=t0)[0])  # a replay: duplicate, harmless
            for seq in (2, 3, 5, 6):
                pub.pub(wire.topic(SITE, GW, "telemetry"), batch(seq, t0=t0)[0])
            wait_for(lambda: ing.m_gaps.get(gateway=GW) == 0 and ing.pending() == 0, what="gaps closed")
            assert ing.m_dups.get() == 1
            wait_for(lambda: pub.acks[-1].watermark == 7 and pub.acks[-1].ranges == (), what="watermark 7")
        assert len(stored(influxdb, influx_db)) == 320
    finally:
        pub.close()


def test_retention_is_set_up_on_start_and_samples_land_in_raw(
    tmp_path: Path, mosquitto: Mosquitto, influxdb: InfluxDB1, influx_db: str
) -> None:
    cfg = make_cfg(tmp_path, mosquitto, influxdb.url, influx_db)
    cfg = cfg.model_copy(update={"retention": RetentionSettings(raw_days=7)})
    pub = Publisher(mosquitto)
    try:
        pub.pub(wire.topic(SITE, GW, "signals"), table_payload(), retain=True)
        with running(cfg) as ing:
            p, _ = batch(0)
            pub.pub(wire.topic(SITE, GW, "telemetry"), p)
            wait_for(lambda: ing.m_samples.get() == 40 and ing.pending() == 0, what="written")
        rps = {r["name"]: r for r in influxdb.rows("SHOW RETENTION POLICIES", influx_db)}
        assert {"raw", "rollup_1m", "rollup_1h"} <= set(rps) and rps["raw"]["default"] is True
        assert rps["raw"]["duration"] == "168h0m0s"
        assert len(influxdb.rows('SELECT "value" FROM "raw"."samples"', influx_db)) == 40
    finally:
        pub.close()


def test_two_ingestors_share_the_load_and_ack_the_union(
    tmp_path: Path, mosquitto: Mosquitto, influxdb: InfluxDB1, influx_db: str
) -> None:
    """MQTT 5 shared subscription: each batch stored once, and both ingestors' acks cover all of them."""
    shared = "$share/ingest/plantwire/v1/+/+/#"
    cfgs = []
    for name in ("a", "b"):
        c = make_cfg(tmp_path / name, mosquitto, influxdb.url, influx_db, instance=name, ack_interval_s=0.3)
        mqtt_cfg = c.mqtt.model_copy(update={"topic": shared, "client_id": f"ingest-{name}"})
        cfgs.append(c.model_copy(update={"mqtt": mqtt_cfg}))
    pub = Publisher(mosquitto)
    pub.watch_acks()
    t0 = time.time_ns() - 60 * 10**9
    try:
        pub.pub(wire.topic(SITE, GW, "signals"), table_payload(), retain=True)
        with running(cfgs[0]) as a, running(cfgs[1]) as b:
            # Both learn the retained table (MQTT 5 sends none to a shared subscription: broadcast_topics).
            wait_for(lambda: len(a.tables) == 1 and len(b.tables) == 1, what="both know the table")
            for seq in range(20):
                pub.pub(wire.topic(SITE, GW, "telemetry"), batch(seq, t0=t0)[0])
            wait_for(
                lambda: a.m_samples.get() + b.m_samples.get() == 800 and a.pending() + b.pending() == 0,
                what="all 20 batches written",
            )
            assert a.m_decoded.get() > 0 and b.m_decoded.get() > 0  # the load was shared
            assert a.m_decoded.get() + b.m_decoded.get() == 20  # and nothing twice
            wait_for(
                lambda: a.ledger.ack(GW, 1_000).watermark == 19 and b.ledger.ack(GW, 1_000).watermark == 19,
                what="both ledgers hold the union",
            )
            assert a.ledger.gaps() == [] and b.ledger.gaps() == []
            wait_for(lambda: pub.acks and pub.acks[-1].watermark == 19, what="published union watermark")
        assert len(stored(influxdb, influx_db)) == 800
    finally:
        pub.close()


def test_broker_restart_redelivers_unacked_and_stale_acks_are_skipped(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Packet ids are per connection: copies received before a reconnect are never acked after it."""
    influx = InfluxDB1(tmp_path / "influx")
    influx.start()
    try:
        influx.query('CREATE DATABASE "d"')
        cfg = make_cfg(tmp_path, mosquitto, influx.url, "d")
        pub = Publisher(mosquitto)
        want = {}
        try:
            pub.pub(wire.topic(SITE, GW, "signals"), table_payload(), retain=True)
            influx.stop()
            with running(cfg) as ing:
                for seq in range(3):
                    p, cols = batch(seq)
                    pub.pub(wire.topic(SITE, GW, "telemetry"), p)
                    want.update(expected(cols))
                wait_for(lambda: ing.pending() == 4, what="4 unacked messages")
                pub.close()
                mosquitto.stop()
                mosquitto.start()
                wait_for(
                    lambda: ing.source.stats.connects == 2 and ing.source.stats.received >= 8,
                    20,
                    what="reconnected and redelivered",
                )
                influx.start()
                # The 4 redelivered copies (and the retained table, sent again on re-subscribing) are acked.
                wait_for(lambda: ing.pending() == 0 and ing.m_samples.get() == 240, 30, what="written and acked")
                assert ing.source.stats.stale_acks == 4
                assert ing.m_dups.get() == 3  # the redelivered copies were stored again, idempotently
            assert stored(influx, "d") == want
        finally:
            pub.close()
    finally:
        influx.stop()


def test_late_replayed_data_gets_its_rollups_recomputed(
    tmp_path: Path, mosquitto: Mosquitto, influxdb: InfluxDB1, influx_db: str
) -> None:
    cfg = make_cfg(tmp_path, mosquitto, influxdb.url, influx_db, backfill_quiet_s=0.3)
    cfg = cfg.model_copy(update={"retention": RetentionSettings(raw_days=7)})
    pub = Publisher(mosquitto)
    try:
        pub.pub(wire.topic(SITE, GW, "signals"), table_payload(), retain=True)
        with running(cfg) as ing:
            p, _ = batch(0, t0=time.time_ns() - 3 * 3600 * 10**9)  # far behind the CQs' window
            pub.pub(wire.topic(SITE, GW, "telemetry"), p)
            wait_for(lambda: ing.m_backfills.get() == 1, 30, what="rollup backfill")
            p, _ = batch(1)  # live data: no backfill
            pub.pub(wire.topic(SITE, GW, "telemetry"), p)
            wait_for(lambda: ing.m_samples.get() == 80, what="live batch")
            time.sleep(0.6)
            assert ing.m_backfills.get() == 1
        rows = influxdb.rows('SELECT sum("value_count") FROM "rollup_1m"."samples"', influx_db)
        assert rows and rows[0]["sum"] == 40
    finally:
        pub.close()


def test_database_is_created_when_influxdb_comes_up_after_the_ingestor(tmp_path: Path, mosquitto: Mosquitto) -> None:
    influx = InfluxDB1(tmp_path / "influx")  # not started yet: the start-up CREATE DATABASE fails
    try:
        cfg = make_cfg(tmp_path, mosquitto, influx.url, "fresh")
        pub = Publisher(mosquitto)
        try:
            pub.pub(wire.topic(SITE, GW, "signals"), table_payload(), retain=True)
            with running(cfg) as ing:
                p, cols = batch(0)
                pub.pub(wire.topic(SITE, GW, "telemetry"), p)
                wait_for(lambda: ing.m_errors.total() >= 1, what="write failing")
                influx.start()
                wait_for(lambda: ing.m_samples.get() == 40 and ing.pending() == 0, 30, what="written")
                assert ing.m_errors.get(kind="influx_404") >= 1  # the path taken: database not found, created
            assert stored(influx, "fresh") == expected(cols)
        finally:
            pub.close()
    finally:
        influx.stop()


def test_edge_status_becomes_pipeline_points_and_drops_are_counted_once(
    tmp_path: Path, mosquitto: Mosquitto, influxdb: InfluxDB1, influx_db: str
) -> None:
    """The edge's retained status carries a running drop total; InfluxDB gets deltas, across our restarts."""
    cfg = make_cfg(tmp_path, mosquitto, influxdb.url, influx_db)
    pub = Publisher(mosquitto)
    t = time.time_ns() - 10**9

    def status(total: int, k: int) -> bytes:
        return json.dumps(
            {
                "status": "online",
                "gateway": GW,
                "boot_epoch_ns": 5,
                "ts_ns": t + k,
                "log_bytes": 1000 + k,
                "log_records": 3,
                "oldest_unacked_age_s": 1.5,
                "dropped_samples": total,
                "models": {"signal_baseline/press": {"active": f"v{k}", "shadow": None, "previous": None},
                           "machine_pca/press": {"active": "v1", "shadow": f"v{k + 1}", "previous": "v0"}},
                "model_refusals_total": k - 1,
            }
        ).encode()

    q = 'SELECT sum("dropped") FROM pipeline'
    try:
        with running(cfg) as ing:
            pub.pub(wire.topic(SITE, GW, "health"), status(7, 1))
            pub.pub(wire.topic(SITE, GW, "health"), status(10, 2))
            wait_for(lambda: ing.pending() == 0 and ing.m_points.get() == 2, what="two status points")
            assert ing.m_edge_dropped.get(gateway=GW) == 10
        with running(cfg) as ing:
            pub.pub(wire.topic(SITE, GW, "health"), status(12, 3), retain=True)
            wait_for(lambda: ing.pending() == 0 and ing.m_points.get() == 1, what="status after restart")
        assert influxdb.rows(q, influx_db)[0]["sum"] == 12
        rows = influxdb.rows('SELECT "wal_bytes", "wal_records", "wal_oldest_age_s", "online" FROM pipeline', influx_db)
        assert [(r["wal_bytes"], r["wal_records"], r["wal_oldest_age_s"], r["online"]) for r in rows] == [
            (1001, 3, 1.5, 1),
            (1002, 3, 1.5, 1),
            (1003, 3, 1.5, 1),
        ]
        # Model versions and refusals from the health document (issue 17), one line sorted by slot.
        rows = influxdb.rows('SELECT "models", "model_refusals" FROM pipeline', influx_db)
        assert [(r["models"], r["model_refusals"]) for r in rows][-1] == (
            "machine_pca/press active=v1 shadow=v4 previous=v0; signal_baseline/press active=v3 shadow=- previous=-", 2)
    finally:
        pub.close()
