"""Store and forward against a real Mosquitto: acks free records, missing acks cause re-sends, a broker
outage grows the log and everything arrives afterwards in order with live data first, and a restart
replays an older boot epoch. The "cloud" is a real paho client that records what arrives and publishes
wire.Ack messages the way the ingestor does (cloud/app.py is written elsewhere)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.config import MqttSettings
from edge.forwarder import Forwarder
from edge.sinks.mqtt import MqttPublisher
from edge.spool import DropCause, Spool, SpoolSettings
from plantwire import wire
from plantwire.metrics import Registry
from plantwire.services import Mosquitto

pytestmark = pytest.mark.integration

SITE = "site-t"
GW = "gw-t"
EPOCH = 1_700_000_000_000_000_000
N = 100


def batch(seq: int, epoch: int = EPOCH, n: int = N) -> bytes:
    return wire.encode_batch(
        gateway=GW,
        boot_epoch_ns=epoch,
        seq=seq,
        table_hash=b"12345678",
        ts_ns=np.full(n, epoch + seq, dtype=np.int64),
        signal=np.arange(n, dtype=np.uint32),
        value=np.full(n, float(seq)),
        quality=np.zeros(n, dtype=np.uint8),
    )


class Cloud:
    """Stand-in ingestor: a persistent-session paho client that records arrivals and publishes acks."""

    def __init__(self, broker: Mosquitto, *, auto_ack: bool = True) -> None:
        self.auto_ack = auto_ack
        self.arrivals: list[tuple[str, int, int]] = []  # ("t", epoch, seq) or ("e", epoch, 0), arrival order
        self.got: dict[int, set[int]] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"cloud-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect(broker.host, broker.port, clean_start=False, properties=props)
        self.client.loop_start()
        assert self._subscribed.wait(10), "cloud did not subscribe"

    def _on_connect(self, client: mqtt.Client, *args: object) -> None:
        client.subscribe([(wire.topic(SITE, GW, "telemetry"), 1), (wire.topic(SITE, GW, "events"), 1)])

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/events"):
            _, epoch, seq, _ = wire.decode_events_seq(msg.payload)
            with self._lock:
                self.arrivals.append(("e", epoch, 0))
            if self.auto_ack and seq is not None:  # the events ack frees it from the edge's log (not PUBACK)
                ack = wire.Ack(gateway=GW, boot_epoch_ns=epoch, watermark=-1, ranges=((seq, seq),))
                self.client.publish(wire.topic(SITE, GW, "evack"), wire.encode_ack(ack), qos=1)
            return
        b = wire.decode_batch(msg.payload)
        with self._lock:
            self.arrivals.append(("t", b.boot_epoch_ns, b.seq))
            self.got.setdefault(b.boot_epoch_ns, set()).add(b.seq)
        if self.auto_ack:
            self.ack(b.boot_epoch_ns)

    def ack(self, epoch: int, watermark: int | None = None, ranges: tuple[tuple[int, int], ...] | None = None) -> None:
        """Publish the ack for ``epoch``: by default the watermark and ranges of what has arrived."""
        if watermark is None:
            with self._lock:
                seqs = sorted(self.got.get(epoch, ()))
            watermark, runs = -1, []
            for s in seqs:
                if s == watermark + 1 and not runs:
                    watermark = s
                elif runs and s == runs[-1][1] + 1:
                    runs[-1][1] = s
                else:
                    runs.append([s, s])
            ranges = tuple((lo, hi) for lo, hi in runs)
        ack = wire.Ack(gateway=GW, boot_epoch_ns=epoch, watermark=watermark, ranges=ranges or ())
        self.client.publish(wire.topic(SITE, GW, "ack"), wire.encode_ack(ack), qos=1, retain=True)

    def telemetry(self, epoch: int = EPOCH) -> list[int]:
        with self._lock:
            return [s for kind, e, s in self.arrivals if kind == "t" and e == epoch]

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def cloud(mosquitto: Mosquitto) -> Iterator[Cloud]:
    c = Cloud(mosquitto)
    try:
        yield c
    finally:
        c.stop()


def make(
    broker: Mosquitto, state_dir: Path, *, replay_grace_s: float = 0.2,
    on_drop: Callable[[bytes, DropCause], None] | None = None, **kw: object
) -> tuple[Forwarder, MqttPublisher, Spool]:
    s = SpoolSettings(**{"max_bytes": 64 * 1024**2, "segment_bytes": 1024**2, **kw})  # type: ignore[arg-type]
    mqtt_settings = MqttSettings(host=broker.host, port=broker.port, max_inflight=100)
    pub = MqttPublisher(mqtt_settings, f"edge-{uuid.uuid4().hex[:8]}")
    spool = Spool(s, state_dir)
    fw = Forwarder(s, pub, spool, SITE, GW, max_inflight=100, replay_grace_s=replay_grace_s, on_drop=on_drop)
    pub.start()
    return fw, pub, spool


def pump(fw: Forwarder, cond: Callable[[], bool], timeout_s: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; stats {fw.stats()}")
        fw.tick()
        time.sleep(0.01)


def close(fw: Forwarder, pub: MqttPublisher, spool: Spool) -> None:
    fw.close()
    pub.stop()
    spool.close()


def test_cloud_ack_frees_records_not_puback(mosquitto: Mosquitto, tmp_path: Path) -> None:
    cloud = Cloud(mosquitto, auto_ack=False)
    fw, pub, spool = make(mosquitto, tmp_path)
    try:
        pump(fw, lambda: pub.connected, what="connect")
        for seq in range(5):
            fw.submit(batch(seq), seq, EPOCH, N)
        pump(fw, lambda: cloud.telemetry() == [0, 1, 2, 3, 4], what="arrival")
        assert pub.wait_acked(5)
        assert spool.stats.records == 5  # PUBACK frees nothing
        cloud.ack(EPOCH, 2)
        pump(fw, lambda: spool.stats.records == 2, what="watermark ack")
        cloud.ack(EPOCH, 2, ((4, 4),))
        pump(fw, lambda: spool.stats.records == 1, what="range ack")
        assert [r.seq for r in spool.live()] == [3]
        st = fw.stats()
        assert st["acked_records"] == 4 and st["acked_samples"] == 4 * N
        assert st["live_records"] == 5 and st["wal_records"] == 1
        # malformed and foreign acks are counted and change nothing
        ack_topic = wire.topic(SITE, GW, "ack")
        cloud.client.publish(ack_topic, b"{not json", qos=1)
        foreign = wire.Ack(gateway="someone-else", boot_epoch_ns=EPOCH, watermark=100)
        cloud.client.publish(ack_topic, wire.encode_ack(foreign), qos=1)
        pump(fw, lambda: fw.counters.ack_errors == 2, what="ack errors")
        assert spool.stats.records == 1
    finally:
        close(fw, pub, spool)
        cloud.stop()


def test_unacked_record_is_resent_after_timeout_with_backoff(mosquitto: Mosquitto, tmp_path: Path) -> None:
    cloud = Cloud(mosquitto, auto_ack=False)
    fw, pub, spool = make(mosquitto, tmp_path, resend_timeout_s=0.5)
    try:
        pump(fw, lambda: pub.connected, what="connect")
        t0 = time.monotonic()
        for seq in range(3):
            fw.submit(batch(seq), seq, EPOCH, N)
        pump(fw, lambda: len(cloud.telemetry()) == 3, what="arrival")
        cloud.ack(EPOCH, 0, ((2, 2),))  # seq 1 "lost" on the way to InfluxDB
        pump(fw, lambda: cloud.telemetry().count(1) == 2, what="first re-send")
        t1 = time.monotonic()
        assert 0.45 <= t1 - t0 < 3.0
        assert cloud.telemetry().count(0) == 1 and cloud.telemetry().count(2) == 1  # acked ones are not re-sent
        pump(fw, lambda: cloud.telemetry().count(1) == 3, what="second re-send")
        assert time.monotonic() - t1 >= 0.9  # the timeout doubled
        assert fw.counters.resent_records == 2 and fw.counters.resent_samples == 2 * N
        cloud.ack(EPOCH, 2)
        pump(fw, lambda: spool.stats.records == 0, what="final ack")
        time.sleep(2.2)
        fw.tick()
        assert cloud.telemetry().count(1) == 3  # acked: no more re-sends
    finally:
        close(fw, pub, spool)
        cloud.stop()


def test_events_are_freed_by_the_cloud_events_ack_not_puback(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """An events-lane record (incidents, audit) stays in the log after the broker's PUBACK and is re-sent until the
    cloud's events ack names its seq: a broker that dies with it queued for the ingestor must not lose it."""
    cloud = Cloud(mosquitto, auto_ack=False)
    fw, pub, spool = make(mosquitto, tmp_path, resend_timeout_s=0.5)
    try:
        pump(fw, lambda: pub.connected, what="connect")
        for i in range(2):
            fw.submit_event(wire.encode_events(GW, EPOCH, [{"type": "health", "machine": f"m{i}", "ts_ns": 1,
                                                             "health": 0.5, "rul": None}]), EPOCH)
        pump(fw, lambda: cloud.arrivals.count(("e", EPOCH, 0)) >= 4, what="both events sent again (no events ack)")
        assert fw.stats()["wal_records"] == 2
        ack = wire.Ack(gateway=GW, boot_epoch_ns=EPOCH, watermark=-1, ranges=((1, 1),))  # the second one stored
        cloud.client.publish(wire.topic(SITE, GW, "evack"), wire.encode_ack(ack), qos=1)
        pump(fw, lambda: fw.stats()["wal_records"] == 1, what="the acked event freed")
        (left,) = spool.live()
        assert left.seq == 0 and fw.stats()["events_acked"] == 1
    finally:
        close(fw, pub, spool)
        cloud.stop()


def test_broker_outage_grows_log_then_delivers_everything_in_order_live_first(
    mosquitto: Mosquitto, cloud: Cloud, tmp_path: Path
) -> None:
    # 5 back-log records a second against 20 live a second: the drain takes ~3 s, live keeps flowing.
    fw, pub, spool = make(mosquitto, tmp_path, replay_rate_samples_per_s=5 * N)
    try:
        pump(fw, lambda: pub.connected, what="connect")
        for seq in range(3):
            fw.submit(batch(seq), seq, EPOCH, N)
        pump(fw, lambda: spool.stats.records == 0, what="acks before the outage")
        mosquitto.stop()
        pump(fw, lambda: not pub.connected, what="disconnect")
        for seq in range(3, 18):
            fw.submit(batch(seq), seq, EPOCH, N)
        fw.submit_event(wire.encode_events(GW, EPOCH, [{"type": "health", "machine": "m1", "ts_ns": 1,
                                                         "health": 0.5, "rul": None}]), EPOCH)
        fw.tick()
        st = fw.stats()
        assert st["wal_records"] == 16 and st["backlog_records"] == 16  # the log grows while the broker is away
        assert st["live_records"] == 3
        mosquitto.start()
        pump(fw, lambda: pub.connected, timeout_s=40, what="reconnect")
        seq = 18
        deadline = time.monotonic() + 30
        while spool.stats.records or seq < 40:
            assert time.monotonic() < deadline, fw.stats()
            if seq < 40:
                fw.submit(batch(seq), seq, EPOCH, N)  # live data at 20 batches/s during the drain
                seq += 1
            for _ in range(5):
                fw.tick()
                time.sleep(0.01)
        got = cloud.telemetry()
        assert sorted(set(got)) == list(range(40))  # nothing lost
        backlog = [s for s in got if 3 <= s < 18]
        assert backlog == list(range(3, 18))  # the back-log in sequence order (no re-sends needed)
        first_backlog = got.index(3)
        last_backlog = len(got) - 1 - got[::-1].index(17)
        live_during_drain = [s for s in got[first_backlog:last_backlog] if s >= 18]
        assert len(live_during_drain) >= 10  # live data went ahead while the back-log drained
        assert cloud.arrivals.index(("e", EPOCH, 0)) < cloud.arrivals.index(("t", EPOCH, 3))  # events first
        st = fw.stats()
        assert st["replayed_records"] == 16 and st["dropped_records"] == 0 and st["wal_records"] == 0
    finally:
        close(fw, pub, spool)


def test_restart_replays_unacked_records_of_older_epoch(mosquitto: Mosquitto, tmp_path: Path) -> None:
    silent = Cloud(mosquitto, auto_ack=False)
    fw, pub, spool = make(mosquitto, tmp_path)
    pump(fw, lambda: pub.connected, what="connect")
    for seq in range(6):
        fw.submit(batch(seq), seq, EPOCH, N)
    pump(fw, lambda: len(silent.telemetry()) == 6, what="arrival")
    silent.ack(EPOCH, 1)  # the cloud held 0..1 when the edge went down
    pump(fw, lambda: spool.stats.records == 4, what="ack")
    close(fw, pub, spool)
    silent.stop()

    cloud = Cloud(mosquitto)
    epoch2 = EPOCH + 10**9
    fw, pub, spool = make(mosquitto, tmp_path, replay_grace_s=1.0)
    try:
        assert spool.stats.recovered_records == 4  # 0..1 were acked before the restart (tombstoned)
        pump(fw, lambda: pub.connected, what="connect")
        fw.submit(batch(0, epoch2), 0, epoch2, N)
        pump(fw, lambda: spool.stats.records == 0, what="replay and ack")
        assert cloud.telemetry(EPOCH) == [2, 3, 4, 5]
        assert cloud.telemetry(epoch2) == [0]
        assert fw.counters.replayed_records == 4
    finally:
        close(fw, pub, spool)
        cloud.stop()


def test_run_loop_syncs_and_replays(mosquitto: Mosquitto, cloud: Cloud, tmp_path: Path) -> None:
    fw, pub, spool = make(mosquitto, tmp_path, fsync_interval_ms=20)

    async def main() -> None:
        task = asyncio.create_task(fw.run(), name="forwarder")
        try:
            for seq in range(5):
                fw.submit(batch(seq), seq, EPOCH, N)
                await asyncio.sleep(0.05)
            for _ in range(500):
                if spool.stats.records == 0 and spool.stats.syncs > 0:
                    break
                await asyncio.sleep(0.02)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    try:
        asyncio.run(main())
        assert sorted(cloud.telemetry()) == [0, 1, 2, 3, 4]
        assert spool.stats.records == 0 and spool.stats.syncs > 0
        fw.submit(batch(5), 5, EPOCH, N)  # at shutdown: wait for the cloud's ack, bounded
        assert fw.wait_drained(10.0)
        assert spool.stats.records == 0 and cloud.telemetry()[-1] == 5
    finally:
        close(fw, pub, spool)


def test_bounds_during_outage_every_sample_delivered_or_counted(mosquitto: Mosquitto, tmp_path: Path) -> None:
    mosquitto.stop()  # the broker is down from the start: everything goes to the log
    n = 2000
    # incompressible values: every batch is ~15 kB, 64 kB segments, 256 kB bound
    fw, pub, spool = make(mosquitto, tmp_path, max_bytes=256 * 1024, segment_bytes=64 * 1024)
    rng = np.random.default_rng(1)
    try:
        total = 60
        for seq in range(total):
            payload = wire.encode_batch(
                gateway=GW, boot_epoch_ns=EPOCH, seq=seq, table_hash=b"12345678",
                ts_ns=np.full(n, EPOCH + seq, np.int64), signal=np.arange(n, dtype=np.uint32),
                value=rng.normal(size=n), quality=np.zeros(n, np.uint8),
            )
            assert len(payload) > 14_000
            fw.submit(payload, seq, EPOCH, n)
        fw.tick()
        st = fw.stats()
        assert st["dropped_records"] > 0 and st["dropped_samples"] == st["dropped_records"] * n
        assert st["wal_bytes"] <= 256 * 1024
        kept = [r.seq for r in spool.live()]
        assert kept == list(range(total - len(kept), total))  # the oldest went first
        mosquitto.start()
        cloud = Cloud(mosquitto)
        try:
            pump(fw, lambda: spool.stats.records == 0, timeout_s=40, what="drain")
            assert cloud.telemetry() == kept
            st = fw.stats()
            # every sample submitted is either acked by the cloud or counted as dropped
            assert st["acked_samples"] + st["dropped_samples"] == total * n
        finally:
            cloud.stop()
        reg = Registry("t")
        fw.export_metrics(reg)
        snap = reg.snapshot()
        assert snap["t_spool_dropped_samples_total"] == st["dropped_samples"]
        assert snap["t_spool_wal_records"] == 0
    finally:
        close(fw, pub, spool)


def test_record_damaged_on_disk_is_dropped_and_counted_on_replay(
    mosquitto: Mosquitto, cloud: Cloud, tmp_path: Path
) -> None:
    s = SpoolSettings(max_bytes=64 * 1024**2, segment_bytes=1024**2)
    with Spool(s, tmp_path) as sp:
        for seq in range(3):
            sp.append(batch(seq), epoch=EPOCH, seq=seq, n_samples=N)
    fw, pub, spool = make(mosquitto, tmp_path)
    try:
        rec = spool.get(spool.live()[1].lane, EPOCH, 1)
        assert rec is not None
        (seg,) = sorted((tmp_path / "wal").glob("*.wal"))[:1]
        with open(seg, "r+b") as f:  # bit rot after the scan on open
            f.seek(rec.offset + 5)
            b = f.read(1)
            f.seek(rec.offset + 5)
            f.write(bytes([b[0] ^ 0xFF]))
        pump(fw, lambda: spool.stats.records == 0, what="replay")
        assert cloud.telemetry() == [0, 2]
        assert fw.counters.wal_errors == 1
        assert spool.stats.dropped_records == 1 and spool.stats.dropped_samples == N
    finally:
        close(fw, pub, spool)


# -- the log has no space at all (issue 13) -----------------------------------------------------------------


def test_batches_the_log_cannot_take_are_published_held_and_released_by_the_cloud_ack(
    mosquitto: Mosquitto, cloud: Cloud, tmp_path: Path
) -> None:
    from diskfull import fill, small_disk

    with small_disk(tmp_path / "disk", 256 * 1024) as disk:
        (disk / "wal").mkdir()
        fill(disk)
        fw, pub, spool = make(mosquitto, disk, max_bytes=16 * 4096, segment_bytes=4096)
        try:
            assert spool.stats.no_segment == 1
            pump(fw, lambda: pub.connected, what="connect")
            for seq in range(5):
                fw.submit(batch(seq), seq, EPOCH, N)
            assert fw.counters.held_records == 5 and fw.counters.wal_errors == 5
            pump(fw, lambda: sorted(cloud.telemetry()) == list(range(5)), what="held batches published")
            pump(fw, lambda: fw.counters.unlogged_records == 0, what="the cloud's ack to release them")
            st = fw.stats()
            assert st["unlogged_acked_records"] == 5 and st["unlogged_samples"] == 0 and st["dropped_samples"] == 0
        finally:
            close(fw, pub, spool)


def test_held_batches_are_bounded_oldest_dropped_counted_and_logged_once_space_returns(
    mosquitto: Mosquitto, cloud: Cloud, tmp_path: Path
) -> None:
    """Broker down and no disk space: batches wait in memory (at risk, unsent), the oldest beyond the
    bound are dropped and counted; when space returns they go to the log and, with the broker back, to
    the cloud. Every batch is delivered or counted as dropped."""
    from diskfull import fill, small_disk

    bound = sum(len(batch(s)) for s in range(4, 10))  # room for the six newest
    with small_disk(tmp_path / "disk", 256 * 1024) as disk:
        (disk / "wal").mkdir()
        filler = fill(disk)
        fw, pub, spool = make(mosquitto, disk, max_bytes=16 * 4096, segment_bytes=4096,
                              memory_queue_bytes=bound)
        try:
            pump(fw, lambda: pub.connected, what="connect")
            mosquitto.stop()
            pump(fw, lambda: not pub.connected, what="disconnect")
            for seq in range(10):
                fw.submit(batch(seq), seq, EPOCH, N)
            st = fw.stats()
            assert st["unlogged_records"] == 6 and st["unlogged_unsent_samples"] == 6 * N
            assert st["unlogged_dropped_records"] == 4 and st["dropped_samples"] == 4 * N
            filler.unlink()
            pump(fw, lambda: fw.counters.unlogged_records == 0, what="space to log the held batches")
            assert [r.seq for r in spool.live()] == list(range(4, 10))
            assert fw.counters.unlogged_logged_records == 6
            mosquitto.start()
            pump(fw, lambda: spool.stats.records == 0, timeout_s=40, what="delivery after the outage")
            assert sorted(set(cloud.telemetry())) == list(range(4, 10))
            assert fw.stats()["dropped_samples"] == 4 * N
        finally:
            close(fw, pub, spool)


def test_held_batches_still_unlogged_at_exit_are_counted_as_dropped(mosquitto: Mosquitto, tmp_path: Path) -> None:
    from diskfull import fill, small_disk

    with small_disk(tmp_path / "disk", 256 * 1024) as disk:
        (disk / "wal").mkdir()
        fill(disk)
        causes: list[str] = []
        fw, pub, spool = make(mosquitto, disk, max_bytes=16 * 4096, segment_bytes=4096,
                              on_drop=lambda payload, cause: causes.append(str(cause)))
        try:
            pump(fw, lambda: pub.connected, what="connect")
            mosquitto.stop()
            pump(fw, lambda: not pub.connected, what="disconnect")
            for seq in range(3):
                fw.submit(batch(seq), seq, EPOCH, N)
            assert fw.counters.unlogged_unsent_samples == 3 * N
            fw.close()
            st = fw.stats()
            assert st["unlogged_records"] == 0 and st["unlogged_dropped_samples"] == 3 * N
            assert st["dropped_samples"] == 3 * N and causes == ["edge dropped: unlogged at shutdown"] * 3
        finally:
            mosquitto.start()
            pub.stop()
            spool.close()
