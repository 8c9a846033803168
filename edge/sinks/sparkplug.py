"""The Sparkplug B 3.0 edge node: a second, optional northbound path for SCADA and MES hosts.

The compact wire (edge/forwarder.py) stays the path to InfluxDB and the source of delivery accounting;
this node never touches it and a failure here (broker away, a bad NCMD) never reaches it: the node has
its own paho-mqtt connection and thread, and everything it is fed is a copy of a few columns.

**Session** (specification chapter 5). Before every CONNECT (paho's ``on_pre_connect``) the next
``bdSeq`` is taken, persisted in ``state_dir/sparkplug/bdseq`` (so it keeps counting across restarts)
and put in the will: an NDEATH carrying it, QoS 1, not retained. After CONNACK the node subscribes to
its NCMD and DCMD topics (QoS 1) and, with a primary host configured, to ``spBv1.0/STATE/<host id>``.
It then publishes the BIRTH sequence -- NBIRTH (seq 0, the same bdSeq, ``Node Control/Rebirth`` false)
and one DBIRTH per device, every metric with name, alias, datatype, value, ``Quality`` and
engineering properties -- at once, or, with a primary host, once the host's STATE says online
(with a timestamp no older than the last one seen). A later offline STATE makes the node publish
NDEATH, disconnect and connect again (new bdSeq), waiting for the host as before. MQTT 3.1.1 with a
clean session, as the specification is written for.

**Data.** ``on_frame`` takes a frame's columns; per signal the latest sample of the frame is compared
with the last value reported, vectorised (``sparkplug_catalogue.exceptions``: deadbands, quality
changes); what changed goes out as one DDATA per device per frame, with aliases only. So a host sees
at most one value per metric per flush interval (``publish.batch_interval_ms``): the current value a
SCADA screen needs; the full-rate history is the compact wire's job. Alarm events and health ticks
update the ``Alarms/*`` and ``Health/*`` metrics of their device the same way. ``seq`` runs 0-255 over
every message of the node, in the order the messages are handed to paho (one lock covers numbering
and publishing, so the paho thread's rebirths and the event loop's data cannot interleave).

**Not publishing** (no broker, or the primary host offline): what would have been reported is stored,
as compact-wire batches, in a second write-ahead log (``edge/spool.py``'s ``Spool``, its public API
only) under ``state_dir/sparkplug``, bounded by ``store_max_bytes`` and ``store_max_age_s`` with the
oldest dropped first and counted (``sparkplug_store_*`` metrics, the same counters the main log
exports as ``spool_*``). Why a second log and not the main one: records leave the main log when the
cloud acks them, which has nothing to do with whether a Sparkplug host has seen them, and its
internals are not ours to bend. Once publishing again, after the BIRTH sequence, the stored values
go out in order as DDATA with ``is_historical`` set, rate-capped (``replay_samples_per_s``), and each
record is freed once paho has taken all of it (if paho refuses a message because the connection
just dropped, the record stays and goes out whole after the next births: a host may then see some
historical values twice, with the same timestamps). Sparkplug's DATA messages are QoS 0 by the specification, so a
connection lost in the middle of that can still lose what paho had not written.

**Commands.** ``Node Control/Rebirth`` = true in an NCMD is answered with a full BIRTH sequence (same
bdSeq, seq back to 0). Anything else -- other NCMD metrics, every DCMD (this edge node does not write
to the plant), payloads that do not parse -- is rejected: counted by reason and logged.

**Devices follow their PLC.** ``set_plc_connected`` (called on the flush timer) publishes DDEATH for
the devices of a PLC whose source lost its connection and a DBIRTH when it is back.

**Threads.** In the daemon every call into the node comes from one worker thread
(edge/sinks/sparkplug_feed.py), so building payloads never runs on the event loop; paho's thread runs
births and commands. The methods are also safe to call directly from a single thread, as the tests do.

Locking rule as in edge/sinks/mqtt.py: paho calls our callbacks from its thread; our lock is held while
calling ``publish`` (which takes paho's packet lock, never its callback lock), and no paho callback of
ours is registered for publish acknowledgements, so the two never nest in opposite orders.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import MqttSettings
from edge.sinks import sparkplug_payload as spb
from edge.sinks.sparkplug_catalogue import Catalogue, build, exceptions
from edge.sinks.sparkplug_settings import HistoryMode, SparkplugSettings
from edge.spool import Spool, SpoolSettings
from plantwire import wire
from plantwire.metrics import Registry
from plantwire.plant import Quality, SignalTable

__all__ = ["NodePhase", "SparkplugNode", "SparkplugStats"]

log = logging.getLogger(__name__)

STORE_DIR = "sparkplug"
BDSEQ_FILE = "bdseq"
LAST_VALUES_FILE = "last_values.json"
#: Bounded wait for the NDEATH of an intentional disconnect.
STOP_TIMEOUT_S = 3.0
#: After an offline STATE the node reconnects this long later (one broker: the same one).
RECONNECT_AFTER_OFFLINE_S = 1.0


class NodePhase(enum.Enum):
    DISCONNECTED = "disconnected"
    AWAITING_HOST = "awaiting_host"  # connected, primary host not (yet) online: nothing published
    BIRTHING = "birthing"  # building the BIRTH sequence: no DATA until it is out
    PUBLISHING = "publishing"


@dataclass
class SparkplugStats:
    messages: Counter[str] = field(default_factory=Counter)  # by message type
    bytes_published: int = 0
    metrics_reported: int = 0  # metric values in live DDATA
    metrics_historical: int = 0  # stored values sent with is_historical
    metrics_stored: int = 0
    metrics_dropped: int = 0  # history: drop, while not publishing
    rebirths: int = 0
    commands_rejected: Counter[str] = field(default_factory=Counter)  # by reason
    state_messages: int = 0
    connects: int = 0
    encode_s: float = 0.0
    store_errors: int = 0
    publish_failures: int = 0  # messages paho refused (connection lost between the check and the publish)


@dataclass(frozen=True, slots=True)
class _BirthSnapshot:
    gen: int
    bd_seq: int
    v: np.ndarray
    q: np.ndarray
    ts_ms: np.ndarray
    alive: np.ndarray


class SparkplugNode:
    """One Sparkplug edge node for one gateway's signal table; see the module docstring."""

    def __init__(
        self,
        settings: SparkplugSettings,
        mqtt_settings: MqttSettings,
        table: SignalTable,
        state_dir: Path,
        *,
        with_health: bool = False,
    ) -> None:
        self.settings = settings
        self.mqtt_settings = mqtt_settings
        self.catalogue: Catalogue = build(table, settings, with_health=with_health)
        self.stats = SparkplugStats()
        self.dir = state_dir / STORE_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        n = self.catalogue.n_metrics
        self.latest_v = np.full(n, np.nan)
        self.latest_q = np.full(n, int(Quality.UNCERTAIN), dtype=np.uint8)  # never read: STALE
        self.latest_ts_ms = np.full(n, time.time_ns() // 1_000_000, dtype=np.int64)
        self.sent_v = self.latest_v.copy()
        self.sent_q = self.latest_q.copy()
        self._last_pos = np.full(self.catalogue.n_signals, -1, dtype=np.int64)
        self._alarm_open = np.zeros(self.catalogue.n_machines, dtype=np.int64)
        self._machine_of_signal = table.machine.astype(np.int64)
        n_dev = len(self.catalogue.device_ids)
        self._device_alive = np.ones(n_dev, dtype=bool)
        self._lock = threading.RLock()
        self.phase = NodePhase.DISCONNECTED
        self._seq = 0
        self._bd_seq = -1
        self._bd_next = self._load_bd_seq()
        self._host_ts_ms = -1
        self._birth_gen = 0
        self._catch_up = False
        self._reconnect_at = 0.0
        self._stopping = False
        self._replay_credit = 0.0
        self._replay_last = time.monotonic()
        g, node = settings.group_id, settings.edge_node_id
        self._t_nbirth = spb.topic(g, spb.MessageType.NBIRTH, node)
        self._t_ndeath = spb.topic(g, spb.MessageType.NDEATH, node)
        self._t_ncmd = spb.topic(g, spb.MessageType.NCMD, node)
        self._t_dcmd = spb.topic(g, spb.MessageType.DCMD, node, "+")
        self._t_dcmd_prefix = spb.topic(g, spb.MessageType.DCMD, node) + "/"
        self._t_state = f"{spb.NAMESPACE}/STATE/{settings.primary_host_id}" if settings.primary_host_id else None
        ids = self.catalogue.device_ids
        self._t_dbirth = [spb.topic(g, spb.MessageType.DBIRTH, node, d) for d in ids]
        self._t_ddata = [spb.topic(g, spb.MessageType.DDATA, node, d) for d in ids]
        self._t_ddeath = [spb.topic(g, spb.MessageType.DDEATH, node, d) for d in ids]
        self._store: Spool | None = None
        self._store_seq = 0
        self._store_epoch = time.time_ns()
        if settings.history is HistoryMode.STORE:
            seg = max(64 * 1024, min(4 * 1024**2, settings.store_max_bytes // 8))
            self._store = Spool(
                SpoolSettings(max_bytes=settings.store_max_bytes, max_age_s=settings.store_max_age_s,
                              segment_bytes=seg),
                self.dir,
            )
        self._store_hash = b"spb-hist"  # the store's batches index metrics, not the signal table
        self._client = self._make_client()

    # -- lifecycle (event loop) -------------------------------------------------------------
    def start(self) -> None:
        s = self.mqtt_settings
        self._client.connect_async(self.settings.host or s.host, self.settings.port or s.port, s.keepalive_s,
                                   clean_start=True)
        self._client.loop_start()

    def stop(self) -> None:
        """Intentional disconnect: NDEATH first (tck-id-operational-behavior-edge-node-intentional-disconnect-
        ndeath), then DISCONNECT; the store is synced and closed."""
        self._stopping = True
        with self._lock:
            info = None
            if self.phase is not NodePhase.DISCONNECTED:
                info = self._client.publish(self._t_ndeath, spb.encode_ndeath(self._bd_seq), qos=1)
                self.stats.messages["NDEATH"] += 1
            self.phase = NodePhase.DISCONNECTED
        if info is not None:
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(STOP_TIMEOUT_S)
        self._client.disconnect()
        self._client.loop_stop()
        self._write_last_values()
        if self._store is not None:
            with contextlib.suppress(OSError):
                self._store.sync()
            self._store.close()

    def _write_last_values(self) -> None:
        """``state_dir/sparkplug/last_values.json``: per device and metric name, the last value read
        (``read``) and the last one reported to hosts (``reported``; they differ by at most the deadband).
        For operators and tests comparing with what a host shows; NaN (no value) is null."""
        cat = self.catalogue
        doc: dict[str, dict[str, dict[str, float | None]]] = {"read": {}, "reported": {}}
        for key, arr in (("read", self.latest_v), ("reported", self.sent_v)):
            for d, ix in enumerate(cat.device_metrics):
                doc[key][cat.device_ids[d]] = {
                    cat.metrics.name[i]: (None if v != v else v) for i, v in zip(ix.tolist(), arr[ix].tolist(),
                                                                                  strict=True)
                }
        path = self.dir / LAST_VALUES_FILE
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(doc))
            tmp.replace(path)
        except OSError as exc:
            log.error("sparkplug: cannot write %s: %s", path, exc)

    def tick(self) -> None:
        """From the flush timer: reconnect after an offline STATE, replay stored history, age the store."""
        if self._reconnect_at and time.monotonic() >= self._reconnect_at and not self._stopping:
            self._reconnect_at = 0.0
            self._client.loop_stop()
            self.start()
        if self._catch_up:
            self._catch_up = False
            self._report(np.arange(self.catalogue.n_metrics))
        if self._store is not None:
            try:
                self._store.enforce_age()
                self._replay()
                self._store.sync()
            except OSError as exc:
                self.stats.store_errors += 1
                log.error("sparkplug: history store: %s", exc)

    # -- data (event loop) ------------------------------------------------------------------
    def on_frame(self, ts_ns: np.ndarray, signal: np.ndarray, value: np.ndarray, quality: np.ndarray) -> None:
        """Report the frame's latest value of each signal that changed beyond its deadband."""
        n = int(signal.shape[0])
        if n == 0:
            return
        last = self._last_pos
        last.fill(-1)
        np.maximum.at(last, signal, np.arange(n, dtype=np.int64))
        idx = np.flatnonzero(last >= 0)
        pos = last[idx]
        self.latest_v[idx] = value[pos]
        self.latest_q[idx] = quality[pos]
        self.latest_ts_ms[idx] = ts_ns[pos] // 1_000_000
        self._report(idx)

    def on_events(self, events: np.ndarray) -> None:
        """Alarm OPEN/CLOSE rows (edge.detectors.events.EVENT_DTYPE) -> ``Alarms/Active`` of their machine."""
        from edge.detectors.events import Phase, Scope

        if events.shape[0] == 0:
            return
        entity = events["entity"].astype(np.int64)
        machine = np.where(events["scope"] == Scope.SIGNAL, self._machine_of_signal[np.minimum(
            entity, self._machine_of_signal.shape[0] - 1)], entity)
        step = np.where(events["phase"] == Phase.OPEN, 1, -1)
        np.add.at(self._alarm_open, machine, step)
        np.maximum(self._alarm_open, 0, out=self._alarm_open)  # a CLOSE of an episode opened before a restart
        touched = np.unique(machine)
        idx = self.catalogue.alarm_metric(touched)
        self.latest_v[idx] = self._alarm_open[touched]
        self.latest_q[idx] = int(Quality.GOOD)
        self.latest_ts_ms[idx] = int(events["ts_start"].max()) // 1_000_000
        self._report(idx)

    def on_health(self, ts_ns: int, machine: np.ndarray, columns: tuple[np.ndarray, ...]) -> None:
        """A health tick: (health, rul, rul_low, rul_high) per covered machine -> ``Health/*`` metrics."""
        if not self.catalogue.with_health or machine.shape[0] == 0:
            return
        parts = []
        for k, col in enumerate(columns):
            idx = self.catalogue.health_metric(machine.astype(np.int64), k)
            self.latest_v[idx] = col
            self.latest_q[idx] = np.where(np.isfinite(col), int(Quality.GOOD), int(Quality.UNCERTAIN))
            self.latest_ts_ms[idx] = ts_ns // 1_000_000
            parts.append(idx)
        self._report(np.sort(np.concatenate(parts)))

    def set_plc_connected(self, connected: np.ndarray) -> None:
        """Connection state per plant device (bool): DDEATH / DBIRTH for the Sparkplug devices it serves."""
        self.set_plc_connected_devices(connected[self.catalogue.plc_of_device])

    def set_plc_connected_devices(self, alive: np.ndarray) -> None:
        """Connection state per Sparkplug device (bool); see ``set_plc_connected``."""
        with self._lock:
            changed = np.flatnonzero(alive != self._device_alive)
            if changed.size == 0:
                return
            self._device_alive[changed] = alive[changed]
            if self.phase is not NodePhase.PUBLISHING:
                return
            for d in changed.tolist():
                if alive[d]:
                    self._publish_dbirth(d)
                else:
                    self._publish(self._t_ddeath[d], spb.encode_ddeath(_now_ms(), self._next_seq()), "DDEATH")

    def _report(self, idx: np.ndarray) -> None:
        with self._lock:
            if self.phase is NodePhase.BIRTHING:
                return  # the births carry a snapshot; tick() reports what changed since
            mask = exceptions(self.latest_v[idx], self.latest_q[idx], self.sent_v[idx], self.sent_q[idx],
                              self.catalogue.threshold[idx])
            rep = idx[mask]
            if rep.size == 0:
                return
            send_q = (self.latest_q[rep] != Quality.GOOD) | (self.sent_q[rep] != Quality.GOOD)
            self.sent_v[rep] = self.latest_v[rep]
            self.sent_q[rep] = self.latest_q[rep]
            if self.phase is NodePhase.PUBLISHING:
                self._publish_data(rep, self.latest_v[rep], self.latest_q[rep], self.latest_ts_ms[rep], send_q,
                                   historical=False)
                self.stats.metrics_reported += int(rep.size)
            else:
                self._keep(rep)

    def _keep(self, rep: np.ndarray) -> None:
        """Not publishing: store (history: store) or count as dropped."""
        if self._store is None:
            self.stats.metrics_dropped += int(rep.size)
            return
        payload = wire.encode_batch(
            gateway=self.settings.edge_node_id, boot_epoch_ns=self._store_epoch, seq=self._store_seq,
            table_hash=self._store_hash, ts_ns=self.latest_ts_ms[rep] * 1_000_000, signal=rep.astype(np.uint32),
            value=self.latest_v[rep], quality=self.latest_q[rep],
        )
        try:
            self._store.append(payload, epoch=self._store_epoch, seq=self._store_seq, n_samples=int(rep.size))
        except OSError as exc:
            self.stats.store_errors += 1
            self.stats.metrics_dropped += int(rep.size)
            log.error("sparkplug: history store append failed, %d values dropped: %s", rep.size, exc)
            return
        self._store_seq += 1
        self.stats.metrics_stored += int(rep.size)

    def _replay(self) -> None:
        """Stored values -> historical DDATA, oldest first, at most ``replay_samples_per_s``."""
        assert self._store is not None
        now = time.monotonic()
        rate = self.settings.replay_samples_per_s
        self._replay_credit = min(self._replay_credit + (now - self._replay_last) * rate, float(rate))
        self._replay_last = now
        if self.phase is not NodePhase.PUBLISHING:
            return
        for rec in self._store.live():
            if self._replay_credit <= 0:
                return
            batch = wire.decode_batch(self._store.read(rec))
            with self._lock:
                if self.phase is not NodePhase.PUBLISHING:
                    return
                rep = batch.signal.astype(np.int64)
                sent = self._publish_data(rep, batch.value, batch.quality, batch.ts_ns // 1_000_000,
                                          np.ones(rep.size, dtype=bool), historical=True)
            if not sent:
                return  # kept: the record goes out again, whole, after the next births
            self._store.free(rec)
            self.stats.metrics_historical += len(batch)
            self._replay_credit -= len(batch)

    # -- publishing (caller holds the lock) -----------------------------------------------------
    def _next_seq(self) -> int:
        s = self._seq
        self._seq = (s + 1) % 256
        return s

    def _publish(self, topic: str, payload: bytes, kind: str) -> bool:
        """Hand one message to paho; False (counted) when paho refused it, e.g. the connection just dropped."""
        info = self._client.publish(topic, payload, qos=0, retain=False)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self.stats.publish_failures += 1
            return False
        self.stats.messages[kind] += 1
        self.stats.bytes_published += len(payload)
        return True

    def _publish_data(self, rep: np.ndarray, value: np.ndarray, quality: np.ndarray, ts_ms: np.ndarray,
                      send_q: np.ndarray, *, historical: bool) -> bool:
        """One DDATA per device: columns sorted by device once and turned into lists once, then sliced
        (a frame touches up to one message per device; per-message numpy indexing would dominate)."""
        t0 = time.perf_counter()
        cat = self.catalogue
        dev = cat.device_of[rep]
        order = np.argsort(dev, kind="stable")
        dev_s = dev[order]
        starts = [0, *(np.flatnonzero(np.diff(dev_s)) + 1).tolist(), int(rep.size)]
        ix = rep[order]
        alias = cat.metrics.alias[ix].tolist()
        dtype = cat.metrics.datatype[ix].tolist()
        v = value[order].tolist()
        t = ts_ms[order].tolist()
        q = spb.quality_codes(quality[order]).tolist()
        sq = send_q[order].tolist()
        devs = dev_s[starts[:-1]].tolist() if rep.size else []
        alive = self._device_alive
        now = _now_ms()
        ok = True
        for k, d in enumerate(devs):
            if not historical and not alive[d]:
                continue  # its DBIRTH (when the PLC is back) carries the current values
            a, b = starts[k], starts[k + 1]
            payload = spb.encode_data(
                ts_ms=now, seq=self._next_seq(), alias=alias[a:b], datatype=dtype[a:b], value=v[a:b],
                metric_ts_ms=t[a:b], quality=q[a:b], send_quality=sq[a:b], historical=historical,
            )
            ok = self._publish(self._t_ddata[d], payload, "DDATA") and ok
        self.stats.encode_s += time.perf_counter() - t0
        return ok

    def _publish_dbirth(self, d: int) -> None:
        cat = self.catalogue
        ix = cat.device_metrics[d]
        payload = spb.encode_birth(
            ts_ms=_now_ms(), seq=self._next_seq(), metrics=cat.columns(ix), value=self.latest_v[ix],
            quality=spb.quality_codes(self.latest_q[ix]), metric_ts_ms=self.latest_ts_ms[ix],
        )
        self._publish(self._t_dbirth[d], payload, "DBIRTH")
        self.sent_v[ix] = self.latest_v[ix]
        self.sent_q[ix] = self.latest_q[ix]

    def _begin_births(self) -> _BirthSnapshot:
        """Caller holds the lock. Stop DATA (phase BIRTHING) and take the values the births will carry."""
        self.phase = NodePhase.BIRTHING
        self._birth_gen += 1
        return _BirthSnapshot(self._birth_gen, self._bd_seq, self.latest_v.copy(), self.latest_q.copy(),
                              self.latest_ts_ms.copy(), self._device_alive.copy())

    def _births(self, snap: _BirthSnapshot) -> None:
        """The BIRTH sequence: NBIRTH (seq 0) and a DBIRTH per live device, with the snapshot's values.

        Built without the lock (a full sequence of the demo plant is ~0.35 s of protobuf work, which must
        not stall the event loop's ``on_frame``), published under it. Values that change meanwhile are
        caught up by the next ``tick`` (DATA against the snapshot).
        """
        t0 = time.perf_counter()
        cat = self.catalogue
        now = _now_ms()
        empty = cat.columns(np.empty(0, dtype=np.int64))
        out = [(self._t_nbirth, spb.encode_birth(
            ts_ms=now, seq=0, metrics=empty, value=np.empty(0), quality=np.empty(0, dtype=np.int32),
            metric_ts_ms=np.empty(0, dtype=np.int64), bd_seq=snap.bd_seq), "NBIRTH")]
        codes = spb.quality_codes(snap.q)
        alive = np.flatnonzero(snap.alive)
        for k, d in enumerate(alive.tolist()):
            ix = cat.device_metrics[d]
            out.append((self._t_dbirth[d], spb.encode_birth(
                ts_ms=now, seq=(k + 1) % 256, metrics=cat.columns(ix), value=snap.v[ix], quality=codes[ix],
                metric_ts_ms=snap.ts_ms[ix]), "DBIRTH"))
        with self._lock:
            if self.phase is not NodePhase.BIRTHING or self._birth_gen != snap.gen:
                return  # disconnected, or a newer birth superseded this one
            for topic, payload, kind in out:
                self._publish(topic, payload, kind)
            self._seq = len(out) % 256
            ix = np.concatenate([cat.device_metrics[d] for d in alive.tolist()]) if alive.size else alive
            self.sent_v[ix] = snap.v[ix]
            self.sent_q[ix] = snap.q[ix]
            self.phase = NodePhase.PUBLISHING
            self._catch_up = True
            self.stats.encode_s += time.perf_counter() - t0
        if not np.array_equal(snap.alive, self._device_alive):
            current = self._device_alive.copy()
            self._device_alive[:] = snap.alive
            self.set_plc_connected_devices(current)
        log.info("sparkplug: %s/%s born (bdSeq %d, %d devices)", self.settings.group_id,
                 self.settings.edge_node_id, snap.bd_seq, len(cat.device_ids))

    # -- paho (its thread) ----------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        s = self.mqtt_settings
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.settings.client_id or f"plantwire-spb-{self.settings.edge_node_id}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        if s.username:
            client.username_pw_set(s.username, os.environ.get(s.password_env) if s.password_env else None)
        if s.tls is not None:
            from edge.sinks.mqtt import tls_context

            client.tls_set_context(tls_context(s.tls))
        client.on_pre_connect = self._on_pre_connect
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _load_bd_seq(self) -> int:
        try:
            return int((self.dir / BDSEQ_FILE).read_text().strip()) % 256
        except (OSError, ValueError):
            return 0

    def _on_pre_connect(self, client: mqtt.Client, userdata: object) -> None:
        """Each CONNECT gets the next bdSeq in its will (tck-id-payloads-nbirth-bdseq-increment)."""
        bd = self._bd_next
        self._bd_next = (bd + 1) % 256
        path = self.dir / BDSEQ_FILE
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(str(self._bd_next))
            tmp.replace(path)
        except OSError as exc:  # a restart would then reuse a bdSeq: hosts still pair NDEATH with NBIRTH
            log.error("sparkplug: cannot persist bdSeq: %s", exc)
        self._bd_seq = bd
        client.will_set(self._t_ndeath, spb.encode_ndeath(bd), qos=1, retain=False)

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                    props: object) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("sparkplug: connect refused: %s", reason)
            return
        self.stats.connects += 1
        subs = [(self._t_ncmd, 1), (self._t_dcmd, 1)]
        if self._t_state is not None:
            subs.append((self._t_state, 1))
        client.subscribe(subs)
        with self._lock:
            if self._t_state is not None:
                self.phase = NodePhase.AWAITING_HOST
                return
            snap = self._begin_births()
        self._births(snap)

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                       props: object) -> None:
        with self._lock:
            if self.phase is not NodePhase.DISCONNECTED and not self._stopping:
                log.warning("sparkplug: disconnected: %s", reason)
            self.phase = NodePhase.DISCONNECTED

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            if msg.topic == self._t_state:
                self._on_state(msg.payload)
            elif msg.topic == self._t_ncmd:
                self._on_ncmd(msg.payload)
            elif msg.topic.startswith(self._t_dcmd_prefix):
                self._reject("dcmd_not_writable", f"DCMD on {msg.topic}: this edge node does not write to the plant")
        except Exception:  # never let a message kill paho's thread
            self._reject("internal_error", f"handling {msg.topic}")
            log.exception("sparkplug: message on %s", msg.topic)

    def _reject(self, reason: str, detail: str) -> None:
        self.stats.commands_rejected[reason] += 1
        log.warning("sparkplug: command rejected (%s): %s", reason, detail)

    def _on_ncmd(self, raw: bytes) -> None:
        try:
            cmds = spb.decode_command(raw)
        except spb.PayloadError as exc:
            self._reject("bad_payload", f"NCMD: {exc}")
            return
        for c in cmds:
            if c.name == spb.REBIRTH and c.value is True:
                with self._lock:
                    if self.phase is not NodePhase.PUBLISHING:
                        continue
                    self.stats.rebirths += 1
                    snap = self._begin_births()
                self._births(snap)
            elif c.name == spb.REBIRTH:
                self._reject("bad_value", f"NCMD {spb.REBIRTH} = {c.value!r} (only true is a request)")
            else:
                self._reject("unknown_metric", f"NCMD metric {c.name or c.alias!r} is not writable")

    def _on_state(self, raw: bytes) -> None:
        """Primary host STATE (Sparkplug 3.0: JSON); older timestamps are ignored."""
        self.stats.state_messages += 1
        try:
            st = spb.decode_state(raw)
        except spb.PayloadError as exc:
            self._reject("bad_state", str(exc))
            return
        snap = None
        with self._lock:
            if st.timestamp_ms < self._host_ts_ms:
                return
            self._host_ts_ms = st.timestamp_ms
            if st.online and self.phase is NodePhase.AWAITING_HOST:
                snap = self._begin_births()
            elif not st.online and self.phase is NodePhase.PUBLISHING:
                # Only a born node leaves: one still waiting has published nothing in this session, and the
                # retained offline STATE it finds on reconnecting is the one it already acted on.
                log.info("sparkplug: primary host %s offline; NDEATH and reconnect", self.settings.primary_host_id)
                self._client.publish(self._t_ndeath, spb.encode_ndeath(self._bd_seq), qos=1)
                self.stats.messages["NDEATH"] += 1
                self.phase = NodePhase.DISCONNECTED
                self._client.disconnect()
                self._reconnect_at = time.monotonic() + RECONNECT_AFTER_OFFLINE_S
        if snap is not None:
            self._births(snap)

    # -- metrics --------------------------------------------------------------------------------
    @property
    def host_online(self) -> bool:
        return self.phase is NodePhase.PUBLISHING

    def export_metrics(self, m: Registry) -> None:
        st = self.stats
        msgs = m.counter("sparkplug_messages_total", "Sparkplug messages published, by type")
        for kind, n in st.messages.items():
            msgs.set(n, type=kind)
        m.counter("sparkplug_bytes_published_total", "Sparkplug payload bytes published").set(st.bytes_published)
        m.counter("sparkplug_metrics_reported_total", "Metric values sent live in DDATA").set(st.metrics_reported)
        m.counter("sparkplug_metrics_historical_total", "Stored values sent with is_historical").set(
            st.metrics_historical)
        m.counter("sparkplug_metrics_stored_total", "Values stored while not publishing").set(st.metrics_stored)
        m.counter("sparkplug_metrics_dropped_total", "Values not stored (history: drop, or store errors)").set(
            st.metrics_dropped)
        m.counter("sparkplug_rebirths_total", "Rebirth requests answered").set(st.rebirths)
        rej = m.counter("sparkplug_commands_rejected_total", "NCMD/DCMD/STATE messages rejected, by reason")
        for reason, n in st.commands_rejected.items():
            rej.set(n, reason=reason)
        m.counter("sparkplug_connects_total", "Sparkplug MQTT sessions established").set(st.connects)
        m.counter("sparkplug_encode_seconds_total", "Time spent building Sparkplug payloads").set(st.encode_s)
        m.counter("sparkplug_store_errors_total", "History store I/O errors").set(st.store_errors)
        m.counter("sparkplug_publish_failures_total", "Messages paho refused (connection lost)").set(
            st.publish_failures)
        m.gauge("sparkplug_publishing", "1 while the node is born and publishing (host online)").set(
            1.0 if self.phase is NodePhase.PUBLISHING else 0.0)
        if self._store is not None:
            for name, value in self._store.stats_dict().items():
                if name in ("bytes", "segments", "records", "samples", "oldest_unacked_age_s"):
                    m.gauge(f"sparkplug_store_{name}", f"Sparkplug history store: {name}").set(value)
                else:
                    m.counter(f"sparkplug_store_{name}_total", f"Sparkplug history store: {name}").set(value)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
