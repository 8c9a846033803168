"""``plantwire ingest CONFIG``: MQTT batches in, InfluxDB points out, acknowledged only once stored.

The wiring of the cloud ingestor (house style: one ``app`` per daemon):

    paho network thread ──on_message──▶ queue ──▶ consuming thread: route by lane, decode, build
    line protocol for a group of messages ──▶ FIFO (depth 2) ──▶ writer thread: synchronous
    InfluxDB writes ──▶ gap ledger saved ──▶ PUBACK each message ──▶ ack watermark published
    (retained, QoS 1) per (gateway, boot epoch)

The event loop only owns signals (SIGTERM/SIGINT stop, SIGHUP reload) and the systemd watchdog.

Choices, and why:

- **Acknowledge after storage.** The worker collects up to ``ingest.max_batch_messages`` messages
  (or ``max_batch_samples``, or what arrives within ``linger_ms``), writes all their points in a
  few large HTTP requests (InfluxDB's throughput is per request, MEASURED.md), and only then
  PUBACKs every one of them. Retryable InfluxDB errors (down, 5xx, 429) are retried with capped
  exponential back-off honouring Retry-After; meanwhile nothing is acknowledged and the broker
  stops sending once Receive Maximum messages are outstanding. On SIGTERM during such an outage
  the ingestor exits 0 without acknowledging: the persistent session redelivers.
- **Nothing dropped silently.** Malformed, oversized, wrong-gateway payloads, unknown lanes and
  lines InfluxDB rejects with 400 go to the dead-letter store (:mod:`cloud.deadletter`) with
  their reason, are counted, and are acknowledged so they cannot block the session.
- **Unknown signal tables.** A batch whose table has not arrived yet is held (not acked) until the
  retained ``signals`` message comes; tables are persisted (:mod:`cloud.signal_tables`), so a
  restart decodes at once. Held batches are bounded (count and age); the oldest beyond the bound is
  dead-lettered. It is then absent from the gap ledger, so the edge's log re-sends it later.
- **Gap ledger and acks** (:mod:`cloud.ledger`): sequence numbers enter the ledger after the
  write; the ledger is saved before the PUBACKs; the watermark is published after them.
- **Latency** per sample (write accepted minus sample timestamp) goes into a histogram in one
  vectorised step per write; so does its first part, arrival here minus sample timestamp (the edge's
  flush interval and work, the broker). Each write group's stages (``group_stage_seconds``: waiting
  to be collected, building, queued for the writer, writing, committing) have a histogram each, so
  the stage that makes a latency tail shows in the metrics (``bench/e2e.py`` prints the breakdown).
- **Scale-out** with MQTT 5 shared subscriptions (``$share/<group>/...``): signal tables and peers'
  acks are also subscribed unshared, peers' acks are merged into the ledger, so every ingestor of
  the group publishes the union and the edge frees what any of them stored.
- **Late data** (a replayed back-log older than the rollup CQs' window): once it stopped arriving,
  the rollups for its time span are recomputed (:func:`cloud.retention.backfill`) off the write path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import queue
import signal
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from cloud import schema
from cloud.alarms.store import IncidentOrder, audit_line, incident_points
from cloud.config import CloudConfig, Compression, InfluxApi, InfluxSettings, load_cloud
from cloud.deadletter import DeadLetterStore
from cloud.influx_watch import InfluxWatch, Reachability
from cloud.ledger import GapLedger
from cloud.models.status import models_text
from cloud.retention import RP_ALARMS, RP_AUDIT
from cloud.signal_tables import SignalTableStore
from cloud.sinks.influx import (
    InfluxPing,
    InfluxSink,
    InfluxV1Ping,
    InfluxV1Sink,
    InfluxV2Ping,
    InfluxV2Sink,
    PartialWriteError,
    RetryableWriteError,
    conflicting_field,
)
from cloud.sinks.lineproto import build_lines, escape_measurement
from cloud.sinks.points import UnknownEventType, event_line, lines_with_field
from cloud.sinks.split import lines_per_request
from cloud.sources.mqtt import Message, MqttSource
from plantwire import wire
from plantwire.configfile import ConfigError, ensure_state_dir
from plantwire.histogram import LATENCY_BUCKETS_S, Histogram
from plantwire.logs import setup_logging
from plantwire.metrics import MetricsServer, Registry
from plantwire.sdnotify import Notifier

__all__ = ["Ingestor", "main", "make_sink"]

log = logging.getLogger(__name__)

_WRITE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def make_sink(s: InfluxSettings) -> InfluxSink:
    """The configured write path; secrets come from the environment variables the config names."""
    password = os.environ.get(s.password_env, "") if s.password_env else None
    if s.api is InfluxApi.V1:
        return InfluxV1Sink(
            s.url,
            s.database,
            retention_policy=s.retention_policy,
            username=s.username,
            password=password,
            timeout_s=s.timeout_s,
            gzip_level=1 if s.compression is Compression.GZIP else None,
        )
    token = os.environ.get(s.token_env, "") if s.token_env else None
    return InfluxV2Sink(
        s.url,
        org=s.org,
        bucket=s.bucket or s.database,
        token=token,
        timeout_s=s.timeout_s,
        gzip=s.compression is Compression.GZIP,
    )


def make_ping(s: InfluxSettings) -> InfluxPing:
    """The liveness probe of the configured API, on its own connection with ``ping_timeout_s``."""
    if s.api is InfluxApi.V1:
        return InfluxV1Ping(s.url, timeout_s=s.ping_timeout_s)
    token = os.environ.get(s.token_env, "") if s.token_env else None
    return InfluxV2Ping(s.url, org=s.org, token=token, timeout_s=s.ping_timeout_s)


@dataclass
class _GatewayCounters:
    """Per-gateway deltas since the last pipeline report (schema.PIPELINE)."""

    site: str = ""
    samples: int = 0
    batches: int = 0
    bytes: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    newest_ts_ns: int = 0


@dataclass
class _Write:
    """Everything one durable write carries, and what to do once it is accepted."""

    parts: list[np.ndarray] = field(default_factory=list)  # uint8 line-protocol blocks
    ends: list[np.ndarray] = field(default_factory=list)  # line ends within each block
    msgs: list[Message] = field(default_factory=list)  # to acknowledge afterwards
    batches: list[tuple[str, str, wire.Batch]] = field(default_factory=list)  # (site, topic gateway, batch)
    dropped: list[tuple[str, int, int, str]] = field(default_factory=list)  # edge drop totals to remember
    samples: int = 0
    # Latest-state line per (gateway, incident id): only the highest seq of a group is written, so
    # parallel chunks cannot reorder one incident's states (cloud.alarms.store).
    incident_states: dict[str, str] = field(default_factory=dict)
    incidents_touched: bool = False
    # Events-lane seqs stored, per (site, gateway, boot epoch): answered with an events ack after the write.
    event_seqs: dict[tuple[str, str, int], list[int]] = field(default_factory=dict)
    # Stage timings (time.time_ns / perf_counter), for the group_stage_seconds histograms.
    arrival_ns: list[int] = field(default_factory=list)  # per entry of ``batches``: when its message arrived
    first_arrival_ns: int = 0  # the group's oldest message's arrival
    collected_ns: int = 0  # the group closed (collect returned)
    built_ns: int = 0  # line protocol built, handed to the writer

    # Lines for a retention policy of their own (cloud.retention.ALARM_POLICIES: incidents, audit), written
    # before the rest of the group, each policy in its own request (InfluxDB 1.x takes one policy per /write).
    side: dict[str, list[str]] = field(default_factory=dict)

    def add_lines(self, data: np.ndarray, line_end: np.ndarray) -> None:
        if data.size:
            self.parts.append(data)
            self.ends.append(line_end)

    def add_text(self, lines: list[str]) -> None:
        if lines:
            raw = ("\n".join(lines) + "\n").encode()
            data = np.frombuffer(raw, dtype=np.uint8)
            ends = np.flatnonzero(data == 10).astype(np.int64) + 1
            self.add_lines(data, ends)


class Ingestor:
    """The ingestor daemon's state and worker; ``run(stop)`` blocks until ``stop`` is set."""

    def __init__(self, cfg: CloudConfig, *, sink: InfluxSink | None = None) -> None:
        self.cfg = cfg
        self.ing = cfg.ingest
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self.sink = sink if sink is not None else make_sink(cfg.influx)
        # ingest.write_connections > 1: one sink (connection) per concurrent request of a group.
        self._sinks: queue.Queue[InfluxSink] = queue.Queue()
        self._pool: ThreadPoolExecutor | None = None
        if cfg.ingest.write_connections > 1:
            self._sinks.put(self.sink)
            for _ in range(cfg.ingest.write_connections - 1):
                self._sinks.put(make_sink(cfg.influx))
            self._pool = ThreadPoolExecutor(cfg.ingest.write_connections, thread_name_prefix="influx-write")
        self._count_lock = threading.Lock()  # metric updates from several write threads
        self.source = MqttSource(cfg.mqtt, session_expiry_s=cfg.mqtt.session_expiry_s)
        self.tables = SignalTableStore(cfg.state_dir, cfg.influx.measurement)
        self.dead = DeadLetterStore(cfg.state_dir, max_bytes=self.ing.dead_letter_max_bytes)
        self.ledger = GapLedger(cfg.state_dir)
        self.incident_order = IncidentOrder(cfg.state_dir)
        # Incidents and audit records go to their own retention policies (cloud.retention: kept 1 and 3 years)
        # on 1.x; a 2.x bucket has no policies, so there they stay with the rest.
        self._policies = cfg.influx.api is InfluxApi.V1
        self._policy_sinks: dict[str, InfluxSink] = {}
        self.held: OrderedDict[int, tuple[Message, wire.Batch]] = OrderedDict()
        self._held_key = 0
        self._counters: dict[str, _GatewayCounters] = {}
        self._counters_lock = threading.Lock()  # the consuming and the writer thread both count
        self._last_report = time.monotonic()
        self._last_ack_publish = 0.0
        self._influx_ok = True  # the last write did not fail with a retryable error
        self._influx_lock = threading.Lock()  # the ping thread and the writers both report
        self._influx_answered = threading.Event()  # set when a ping succeeds after failures: retry now
        self._ping_down_since: float | None = None
        self._last_error = ""
        self._rejected_samples = 0  # samples among the lines InfluxDB rejected in the current write
        self._dropped_seen: dict[tuple[str, int], int] = {}  # (gateway, boot) -> edge drop total seen
        self._retention_done = False
        self._retention_next = 0.0
        self._late_span: list[int] = []  # [lo_ns, hi_ns] of late samples whose rollups need recomputing
        self._late_last = 0.0  # monotonic time late data last arrived
        self._late_lock = threading.Lock()
        self._backfill_thread: threading.Thread | None = None
        self._late_window_ns = _late_window_ns(cfg.retention.late_1m) if cfg.retention is not None else 0
        self.metrics_server: MetricsServer | None = None
        self._setup_metrics()
        self.watch = InfluxWatch(
            make_ping(cfg.influx),
            interval_s=cfg.influx.ping_interval_s,
            on_change=self._on_reachability,
            on_ping=lambda ping_s, _ok: self.m_ping.set(ping_s),
        )

    # -- metrics and health -------------------------------------------------------------------------
    def _setup_metrics(self) -> None:
        r = self.registry = Registry("plantwire_ingest")
        self.m_received = r.counter("received_messages_total", "MQTT messages received, by lane")
        self.m_received_bytes = r.counter("received_bytes_total", "MQTT payload bytes received")
        self.m_decoded = r.counter("decoded_batches_total", "telemetry batches decoded")
        self.m_samples = r.counter("samples_written_total", "samples InfluxDB accepted")
        self.m_points = r.counter(
            "points_written_total", "points InfluxDB accepted (samples, events, health, pipeline)"
        )
        self.m_acked = r.counter("acked_messages_total", "MQTT messages acknowledged after durable storage")
        self.m_dead = r.counter("dead_letters_total", "payloads or lines sent to the dead-letter store, by reason")
        self.m_dead_samples = r.counter("dead_letter_samples_total", "samples inside dead-lettered payloads or lines")
        self.m_errors = r.counter("errors_total", "errors, by kind (retried writes, ledger saves, ...)")
        self.m_peer_acks = r.counter("peer_acks_total", "ack watermarks of other ingestors merged into the ledger")
        self.m_backfills = r.counter("rollup_backfills_total", "rollup recomputations for late (replayed) data")
        self.m_dups = r.counter("duplicate_batches_total", "batches received again (replays), stored idempotently")
        self.m_incidents = r.counter(
            "incident_transitions_total",
            "incident transitions stored, by result: state (latest state rewritten) or stale (older than the "
            "stored state: kept in the history only)",
        )
        self.m_audit = r.counter("audit_records_total", "audit documents stored")
        self.m_pending = r.gauge("pending_messages", "messages received, not yet written and acknowledged")
        self.m_held = r.gauge("held_messages", "batches waiting for their signal table")
        self.m_lag = r.gauge("last_write_lag_seconds", "now minus the newest sample of the last write")
        self.m_influx_up = r.gauge(
            "influx_up", "1 when InfluxDB answers pings (influx.ping_timeout_s) and the last write did not fail"
        )
        self.m_ping = r.gauge("influx_ping_seconds", "duration of the last InfluxDB ping (its timeout when unanswered)")
        self.m_gaps = r.gauge("gaps", "open missing sequence ranges per gateway")
        self.m_gap_batches = r.gauge("gap_batches", "batches missing in open gaps per gateway")
        self.m_gap_age = r.gauge("gap_oldest_age_seconds", "age of the oldest open gap per gateway")
        self.m_tables = r.gauge("signal_tables", "known signal tables")
        self.m_edge_dropped = r.gauge(
            "edge_dropped_samples", "samples the edge dropped under its log bounds (its running total, per gateway)"
        )
        self.m_dead_store = r.gauge(
            "dead_letter_store", "dead-letter store: entries evicted by its size bound, writes that failed (by kind)"
        )
        self.m_ledger_forgotten = r.gauge(
            "ledger_forgotten", "gap-ledger bounds: boot epochs and ranges given up (by kind), never silently"
        )
        self.latency = Histogram(
            r, "sample_latency_seconds", "sample timestamp to InfluxDB write accepted", LATENCY_BUCKETS_S
        )
        self.write_latency = Histogram(r, "influx_write_seconds", "InfluxDB write request duration", _WRITE_BUCKETS_S)
        self.arrival = Histogram(
            r, "sample_arrival_seconds", "sample timestamp to its MQTT message's arrival here (edge and broker)",
            LATENCY_BUCKETS_S,
        )
        self.stage = {
            name: Histogram(r, "group_stage_seconds", f"per write group: {help_}", LATENCY_BUCKETS_S, stage=name)
            for name, help_ in _STAGES.items()
        }

    def pending(self) -> int:
        st = self.source.stats
        return max(0, st.received - st.acked - st.stale_acks)

    def influx_up(self) -> bool:
        """Answering pings (or not yet pinged) and the last write did not fail."""
        return self._influx_ok and self.watch.state is not Reachability.DOWN

    def _report_influx(self) -> None:
        with self._influx_lock:
            self.m_influx_up.set(1 if self.influx_up() else 0)

    def _set_writes_ok(self, ok: bool) -> None:
        self._influx_ok = ok
        self._report_influx()

    def _on_reachability(self, state: Reachability, detail: str) -> None:
        """Ping thread: InfluxDB started or stopped answering pings; reported at once, logged once."""
        self._report_influx()
        if state is Reachability.DOWN:
            self._ping_down_since = time.monotonic()
            self.m_errors.inc(kind="influx_ping")
            self._last_error = detail
            log.error("InfluxDB is not answering (%s); writes wait, nothing is acknowledged meanwhile", detail)
        elif state is Reachability.UP:
            self._influx_answered.set()
            if self._ping_down_since is not None:
                log.info("InfluxDB answers pings again after %.1f s", time.monotonic() - self._ping_down_since)
                self._ping_down_since = None

    def _retry_wait(self, wait_s: float, stop: threading.Event) -> bool:
        """Sleep out a write back-off; cut short when a ping sees InfluxDB answer again. True if stopped."""
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            if stop.wait(min(left, 0.1)):
                return True
            if self._influx_answered.is_set():
                break
        return stop.is_set()

    def health(self) -> dict[str, Any]:
        influx_ok = self.influx_up()
        ok = self.source.connected and influx_ok
        now_s = time.time()
        return {
            "status": "ok" if ok else "degraded",
            "mqtt_connected": self.source.connected,
            "mqtt_subscribed": self.source.stats.subscribed,
            "influx_ok": influx_ok,
            "influx_reachable": self.watch.state.value,
            "influx_writes_ok": self._influx_ok,
            "pending_messages": self.pending(),
            "held_messages": len(self.held),
            "signal_tables": len(self.tables),
            "dead_letters": self.dead.stats.entries,
            "last_error": self._last_error,
            # The open gaps themselves (metrics carry only counts and ages: ranges would be
            # unbounded label values); the oldest first, at most _HEALTH_GAPS.
            "gaps": [
                {
                    "gateway": g.gateway,
                    "boot_epoch_ns": g.boot_epoch_ns,
                    "lo": g.lo,
                    "hi": g.hi,
                    "reason": g.reason,
                    "age_s": round(now_s - g.since, 1),
                }
                for g in sorted(self.ledger.gaps(), key=lambda g: g.since)[:_HEALTH_GAPS]
            ],
        }

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Load persisted state, serve metrics, connect to the broker (no blocking network wait)."""
        self.tables.load()
        try:
            self.ledger.load()
        except ValueError as exc:
            # A torn ledger must not stop ingestion: keep it aside for the operator, start empty.
            self.m_errors.inc(kind="ledger_load")
            log.error("%s; starting with an empty ledger (old file kept as .corrupt)", exc)
            with contextlib.suppress(OSError):
                os.replace(self.ledger.path, self.ledger.path.with_suffix(".corrupt"))
        self.m_tables.set(len(self.tables))
        try:
            self.incident_order.load()
        except ValueError as exc:
            # Torn file: start empty (replays are then written as they come), keep it for the operator.
            self.m_errors.inc(kind="incident_order_load")
            log.error("%s; incident order starts empty (old file kept as .corrupt)", exc)
            with contextlib.suppress(OSError):
                os.replace(self.incident_order.path, self.incident_order.path.with_suffix(".corrupt"))
        if self.cfg.metrics.port >= 0 and self.metrics_server is None:
            self.metrics_server = MetricsServer(
                self.registry, self.cfg.metrics.host, self.cfg.metrics.port, self.health
            )
            self.metrics_server.start()
            (self.cfg.state_dir / "metrics.port").write_text(str(self.metrics_server.port))
        self.watch.start()
        if self.cfg.influx.create_database:
            try:
                self.sink.ensure_database()
            except RetryableWriteError as exc:
                log.warning("could not create the database yet (%s); writes will retry", exc)
        self._ensure_retention()
        self.source.start()

    def _ensure_retention(self) -> None:
        """Retention policies and rollups (cloud.retention) on 1.x; retried every minute until done.

        A failure never stops ingestion: points then land in the database's default policy, which
        is what the rollups read once they exist. Incidents and audit records are the exception: they wait
        (retried, unacknowledged) until their own policies exist, which runs without a rollup layout too.
        """
        r = self.cfg.retention
        if self.cfg.influx.api is not InfluxApi.V1 or self._retention_done:
            return
        if time.monotonic() < self._retention_next:
            return
        from cloud.retention import RetentionError, ensure, ensure_policies

        s = self.cfg.influx
        password = os.environ.get(s.password_env, "") if s.password_env else None
        try:
            if r is None:  # no rollup layout: still the alarms/audit policies incidents and audit records go to
                ran = ensure_policies(s.url, s.database, username=s.username, password=password, timeout_s=s.timeout_s)
            else:
                ran = ensure(s.url, s.database, r, username=s.username, password=password, timeout_s=s.timeout_s)
        except (RetentionError, OSError) as exc:
            self._retention_next = time.monotonic() + 60.0
            self.m_errors.inc(kind="retention")
            log.warning("retention set-up failed, retrying in 60 s: %s", exc)
            return
        self._retention_done = True
        if ran:
            log.info("retention set-up ran %d statements", len(ran))

    # -- rollups for late data ------------------------------------------------------------------------
    def _note_late(self, lo_ns: int, hi_ns: int) -> None:
        with self._late_lock:
            if self._late_span:
                self._late_span = [min(lo_ns, self._late_span[0]), max(hi_ns, self._late_span[1])]
            else:
                self._late_span = [lo_ns, hi_ns]
            self._late_last = time.monotonic()

    def _maybe_backfill(self) -> None:
        """Once late data stopped arriving for ``backfill_quiet_s``, recompute its rollups in a thread.

        Continuous queries only recompute their recent window, so a replayed back-log would leave
        the 1 m / 1 h rollups without it (cloud/retention.py). One backfill runs at a time, off the
        write path; a failed one is retried with the span kept.
        """
        if not self._late_window_ns or not self._retention_done:
            return
        with self._late_lock:
            due = self._late_span and time.monotonic() - self._late_last >= self.ing.backfill_quiet_s
            busy = self._backfill_thread is not None and self._backfill_thread.is_alive()
            if not due or busy:
                return
            lo, hi = self._late_span
            self._late_span = []
        self._backfill_thread = threading.Thread(
            target=self._backfill, args=(lo, hi + 1), name="rollup-backfill", daemon=True
        )
        self._backfill_thread.start()

    def _backfill(self, lo_ns: int, hi_ns: int) -> None:
        from cloud.retention import RetentionError, backfill

        s = self.cfg.influx
        password = os.environ.get(s.password_env, "") if s.password_env else None
        try:
            written = backfill(s.url, s.database, lo_ns, hi_ns, username=s.username, password=password)
        except (RetentionError, OSError, ValueError) as exc:
            self.m_errors.inc(kind="backfill")
            log.warning("rollup backfill for late data failed, will retry: %s", exc)
            self._note_late(lo_ns, hi_ns - 1)
            return
        self.m_backfills.inc()
        log.info("rollups recomputed for late data %d..%d: %s", lo_ns, hi_ns, written)

    def close(self) -> None:
        self.source.stop()
        self.watch.stop()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            while not self._sinks.empty():
                self._sinks.get().close()
        self.sink.close()
        for sink in self._policy_sinks.values():
            sink.close()
        if self.metrics_server is not None:
            self.metrics_server.stop()
            self.metrics_server = None

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set: this thread decodes and builds, a writer thread writes.

        The two overlap (a group is built while the previous one is being written), which keeps
        InfluxDB busy instead of idle during decoding. Writes and acknowledgements stay in
        arrival order: one writer, a FIFO of depth ``_PIPELINE_DEPTH``. On stop, groups already
        handed over are written and acknowledged if InfluxDB takes them; a write still being
        retried is abandoned unacknowledged (the broker redelivers to the persistent session).
        A crash of the writer thread is re-raised here, so the daemon exits non-zero.
        """
        writes: queue.Queue[_Write | None] = queue.Queue(maxsize=_PIPELINE_DEPTH)
        failure: list[BaseException] = []
        writer = threading.Thread(target=self._writer, args=(writes, stop, failure), name="ingest-writer", daemon=True)
        writer.start()
        try:
            while not stop.is_set() and writer.is_alive():
                msgs = self._collect(stop)
                collected_ns = time.time_ns()
                w = self._prepare(msgs)
                if w is not None:
                    w.first_arrival_ns = min(m.received_ns for m in msgs) if msgs else collected_ns
                    w.collected_ns = collected_ns
                    w.built_ns = time.time_ns()
                if w is not None and not self._hand_over(writes, w, writer, stop):
                    break  # stopping: this group is not acknowledged; the broker redelivers it
                self._update_gauges()
                self._ensure_retention()
        finally:
            while writer.is_alive():
                try:
                    writes.put(None, timeout=0.2)
                    break
                except queue.Full:
                    continue
            writer.join()
        if failure:
            raise RuntimeError("ingest writer thread failed") from failure[0]
        self._update_gauges()
        self._publish_acks(force=True)

    @staticmethod
    def _hand_over(
        writes: queue.Queue[_Write | None], w: _Write, writer: threading.Thread, stop: threading.Event
    ) -> bool:
        while writer.is_alive():
            try:
                writes.put(w, timeout=0.2)
                return True
            except queue.Full:
                if stop.is_set():
                    return False
        return False

    def _writer(self, writes: queue.Queue[_Write | None], stop: threading.Event, failure: list[BaseException]) -> None:
        try:
            while True:
                try:
                    w = writes.get(timeout=0.2)
                except queue.Empty:
                    w = _IDLE
                if w is None:
                    return
                if w is not _IDLE:
                    t_start = time.time_ns()
                    if self._write(w, stop):
                        t_written = time.time_ns()
                        self._commit(w)
                        self._observe_stages(w, t_start, t_written, time.time_ns())
                self._maybe_backfill()
                if time.monotonic() - self._last_ack_publish >= self.ing.ack_interval_s:
                    self._publish_acks(force=True)
        except BaseException as exc:  # surfaced by run() in the consuming thread
            failure.append(exc)
            log.exception("ingest writer thread failed")

    def _observe_stages(self, w: _Write, t_start_ns: int, t_written_ns: int, t_done_ns: int) -> None:
        """One observation per stage of a group that was written (seconds, wall clock)."""
        if not w.built_ns:  # a group built before the timings existed (tests handing _Write directly)
            return
        spans = {
            "collect": w.collected_ns - w.first_arrival_ns,
            "build": w.built_ns - w.collected_ns,
            "queue": t_start_ns - w.built_ns,
            "write": t_written_ns - t_start_ns,
            "commit": t_done_ns - t_written_ns,
        }
        for name, span_ns in spans.items():
            self.stage[name].observe(np.array([span_ns / 1e9]))

    # -- the cycle ----------------------------------------------------------------------------------
    def _collect(self, stop: threading.Event) -> list[Message]:
        q = self.source.queue
        try:
            first = q.get(timeout=0.2)
        except queue.Empty:
            return []
        msgs = [first]
        samples = 0
        deadline = time.monotonic() + self.ing.linger_ms / 1000.0
        while len(msgs) < self.ing.max_batch_messages and samples < self.ing.max_batch_samples:
            try:
                m = q.get_nowait()
            except queue.Empty:
                left = deadline - time.monotonic()
                if left <= 0 or stop.is_set():
                    break
                try:
                    m = q.get(timeout=left)
                except queue.Empty:
                    break
            msgs.append(m)
            samples += _claimed_samples(m.payload)
        return msgs

    def _prepare(self, msgs: list[Message]) -> _Write | None:
        """Decode and build one write group (None when there is nothing to write or acknowledge)."""
        w = _Write()
        for m in msgs:
            self._handle(m, w)
        self._add(w, RP_ALARMS, list(w.incident_states.values()))
        self._expire_held(w)
        now = time.monotonic()
        if now - self._last_report >= self.ing.report_interval_s:
            w.add_text(self._pipeline_lines(now))
        return w if (w.parts or w.msgs) else None

    def _handle(self, m: Message, w: _Write) -> None:
        """Route one message by lane; adds its lines to ``w`` and queues it for acknowledgement."""
        try:
            site, gateway, lane = wire.parse_topic(m.topic)
        except wire.WireError as exc:
            self._dead_letter(m, "bad_topic", str(exc), w)
            return
        self.m_received.inc(lane=lane if lane in _LANES else "other")
        self.m_received_bytes.inc(len(m.payload))
        with self._counters_lock:
            self._counter(gateway, site).bytes += len(m.payload)
        if len(m.payload) > self.ing.max_payload_bytes:
            self._dead_letter(
                m, "oversized", f"payload of {len(m.payload)} bytes exceeds {self.ing.max_payload_bytes}", w
            )
            return
        try:
            if lane == "telemetry":
                self._telemetry(m, site, gateway, w)
            elif lane == "signals":
                self._signals(m, site, gateway, w)
            elif lane == "events":
                self._events(m, site, gateway, w)
            elif lane == "health":
                self._health(m, site, gateway, w)
            elif lane == "ack":
                self._peer_ack(m, site, gateway, w)
            elif lane in _NOT_STORED_LANES:
                w.msgs.append(m)  # for live consumers; their durable record is the events lane (audit, incident)
            else:
                self._dead_letter(m, "unknown_lane", f"topic lane {lane!r} is not one of {_LANES}", w)
        except _WrongGateway as exc:
            self._dead_letter(m, "wrong_gateway", str(exc), w)
        except wire.WireError as exc:
            self._dead_letter(m, "malformed", str(exc), w)
        except (MemoryError, RecursionError) as exc:
            # Decoder escapes plantwire.wire does not turn into WireError (found by the fuzz tests):
            # zstandard's MemoryError for a frame header claiming an absurd content size, and
            # json's RecursionError for deeply nested JSON on the events/ack lanes. The payload is
            # kept in the dead-letter store, so even a genuine out-of-memory loses nothing.
            reason = f"body: decoding failed with {type(exc).__name__} (corrupt zstd frame or deeply nested JSON?)"
            self._dead_letter(m, "malformed", reason, w)
        except schema.SchemaError as exc:
            self._dead_letter(m, "schema", str(exc), w)

    def _telemetry(self, m: Message, site: str, gateway: str, w: _Write) -> None:
        batch = wire.decode_batch(m.payload)
        if batch.gateway != gateway:
            raise _WrongGateway(f"header.gateway: batch of {batch.gateway!r} published on {gateway!r}'s topic")
        self.m_decoded.inc()
        table = self.tables.get(batch.gateway, batch.table_hash)
        if table is None:
            self._held_key += 1
            self.held[self._held_key] = (m, batch)
            self._bound_held(w)
            return
        if table.site != site:
            raise _WrongGateway(f"topic.site: {site!r} but the signal table says {table.site!r}")
        try:
            lines = build_lines(table.prefixes, batch.ts_ns, batch.signal, batch.value, batch.quality, batch.status)
        except ValueError as exc:
            raise wire.WireError(f"body.signal: {exc}") from None
        w.add_lines(lines.data, lines.line_end)
        w.batches.append((site, gateway, batch))
        w.arrival_ns.append(m.received_ns)
        w.samples += len(batch)
        w.msgs.append(m)

    def _signals(self, m: Message, site: str, gateway: str, w: _Write) -> None:
        if not m.payload:
            w.msgs.append(m)  # a retained table being cleared: nothing to learn
            return
        msg = wire.decode_signal_table(m.payload)
        if msg.gateway != gateway or msg.site != site:
            raise _WrongGateway(f"signal table of {msg.site}/{msg.gateway} published on {site}/{gateway}'s topic")
        table, new = self.tables.add(m.payload)
        self.m_tables.set(len(self.tables))
        if new:
            log.info("signal table %s of %s/%s: %d signals", msg.table_hash.hex(), site, gateway, len(table))
        w.msgs.append(m)
        for key, (hm, batch) in list(self.held.items()):
            if batch.gateway == gateway and batch.table_hash == msg.table_hash:
                del self.held[key]
                self._telemetry_known(hm, site, gateway, batch, w)

    def _telemetry_known(self, m: Message, site: str, gateway: str, batch: wire.Batch, w: _Write) -> None:
        table = self.tables.get(batch.gateway, batch.table_hash)
        assert table is not None
        try:
            lines = build_lines(table.prefixes, batch.ts_ns, batch.signal, batch.value, batch.quality, batch.status)
        except ValueError as exc:
            self._dead_letter(m, "malformed", f"body.signal: {exc}", w)
            return
        w.add_lines(lines.data, lines.line_end)
        w.batches.append((site, gateway, batch))
        w.arrival_ns.append(m.received_ns)
        w.samples += len(batch)
        w.msgs.append(m)

    def _events(self, m: Message, site: str, gateway: str, w: _Write) -> None:
        ev_gateway, boot, seq, events = wire.decode_events_seq(m.payload)
        if ev_gateway != gateway:
            raise _WrongGateway(f"events.gateway: {ev_gateway!r} published on {gateway!r}'s topic")
        if seq is not None:  # the edge frees it from its log on our events ack (edge/forwarder.py)
            w.event_seqs.setdefault((site, gateway, boot), []).append(seq)
        lines: list[str] = []
        for i, ev in enumerate(events):
            try:
                if ev["type"] == "incident":
                    p = incident_points(site, gateway, ev)
                    self._add(w, RP_ALARMS, [p.transition_line])
                    w.incidents_touched = True
                    if self.incident_order.admit(gateway, p.id, p.seq):
                        w.incident_states[f"{gateway}\x00{p.id}"] = p.state_line
                        self.m_incidents.inc(result="state")
                    else:
                        self.m_incidents.inc(result="stale")
                elif ev["type"] == "audit":
                    self._add(w, RP_AUDIT, [audit_line(site, gateway, ev)])
                    self.m_audit.inc()
                else:
                    lines.append(event_line(site, gateway, ev))
            except UnknownEventType as exc:
                self._dead_letter_doc(m.topic, "unknown_type", f"events[{i}].{exc}", ev, w)
            except (schema.SchemaError, KeyError, TypeError, ValueError, OverflowError) as exc:
                # OverflowError: "start_ns": Infinity (Python's json accepts it) in int().
                # One bad event is dead-lettered alone; the rest of the message is stored.
                self._dead_letter_doc(m.topic, "schema", f"events[{i}]: {exc}", ev, w)
        w.add_text(lines)
        w.msgs.append(m)

    def _add(self, w: _Write, policy: str, lines: list[str]) -> None:
        """Lines of a measurement with a retention policy of its own (1.x), else with the rest of the group."""
        if not lines:
            return
        if self._policies:
            w.side.setdefault(policy, []).extend(lines)
        else:
            w.add_text(lines)

    def _policy_sink(self, policy: str) -> InfluxSink:
        sink = self._policy_sinks.get(policy)
        if sink is None:
            sink = make_sink(self.cfg.influx.model_copy(update={"retention_policy": policy}))
            self._policy_sinks[policy] = sink
        return sink

    def _peer_ack(self, m: Message, site: str, gateway: str, w: _Write) -> None:
        """Another ingestor's ack watermark (shared subscriptions): merged into our ledger.

        Merging never triggers a publication of ours (no ping-pong between ingestors); our next
        own write or periodic re-publication carries the union.
        """
        if m.payload:  # an empty payload clears a retained ack: nothing to merge
            ack = wire.decode_ack(m.payload)
            if ack.gateway != gateway:
                raise _WrongGateway(f"ack.gateway: {ack.gateway!r} published on {gateway!r}'s topic")
            self.ledger.merge_ack(ack, site=site)
            self.m_peer_acks.inc()
        w.msgs.append(m)

    def _health(self, m: Message, site: str, gateway: str, w: _Write) -> None:
        if not m.payload:
            w.msgs.append(m)
            return
        try:
            doc = json.loads(m.payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise wire.WireError(f"health: not JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise wire.WireError("health: expected a JSON object")
        # The edge's retained status (edge/app.py ``_publish_status``), or its last will ("offline").
        fields: dict[str, object] = {schema.F_ONLINE: 1 if doc.get("status") == "online" else 0}
        for key, field_ in _EDGE_GAUGES:
            v = doc.get(key)
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                fields[field_] = v
        # Model versions and refusals the gateway reports (issue 17), for the Grafana panel.
        models = models_text(doc)
        if models is not None:
            fields[schema.F_MODELS] = models
        refusals = doc.get("model_refusals_total")
        if isinstance(refusals, int) and not isinstance(refusals, bool) and refusals >= 0:
            fields[schema.F_MODEL_REFUSALS] = refusals
        boot = doc.get("boot_epoch_ns")
        total = doc.get("dropped_samples")
        if isinstance(boot, int) and isinstance(total, int) and not isinstance(total, bool) and total >= 0:
            # A running total per boot epoch becomes a delta (schema: counters are deltas), remembered
            # in the ledger once written, so a restarted ingestor neither repeats nor skips drops.
            key = (gateway, boot)
            seen = self._dropped_seen.get(key)
            if seen is None:
                seen = self.ledger.dropped_reported(gateway, boot)
            fields[schema.F_DROPPED] = max(0, total - seen)
            if len(self._dropped_seen) > 10_000:  # bounded; the ledger remembers what was written
                self._dropped_seen.clear()
            self._dropped_seen[key] = max(seen, total)
            w.dropped.append((gateway, boot, total, site))
            self.m_edge_dropped.set(total, gateway=gateway)
        prev = doc.get("previous_run")
        if isinstance(prev, dict):
            self._previous_run(prev, site, gateway, w, fields)
        earlier = doc.get("previous_runs")  # up to 8 runs back: a crash loop loses no run's accounting
        if isinstance(earlier, list):
            for run in earlier[:16]:
                if isinstance(run, dict):
                    self._previous_run(run, site, gateway, w, fields)
        drops = doc.get("dropped_ranges")
        if isinstance(drops, list):
            self._dropped_ranges(drops, site, gateway, w)
        ts = doc.get("ts_ns")
        ts_ns = ts if isinstance(ts, int) and not isinstance(ts, bool) and ts > 0 else m.received_ns
        tags = {schema.TAG_SITE: site, schema.TAG_GATEWAY: gateway, schema.TAG_INGESTOR: self.ing.instance}
        w.add_text([schema.format_point(schema.M_PIPELINE, tags, fields, ts_ns)])
        w.msgs.append(m)

    def _dropped_ranges(self, drops: list[Any], site: str, gateway: str, w: _Write) -> None:
        """Sequence ranges the edge dropped itself, with the cause: the ledger names their gaps by it."""
        news_boot = None
        for d in drops[:1000]:
            if (isinstance(d, list) and len(d) == 4 and all(isinstance(x, int) and not isinstance(x, bool)
                                                          for x in d[:3]) and isinstance(d[3], str)
                    and 0 <= d[1] <= d[2]):
                if self.ledger.mark_dropped(gateway, d[0], d[1], d[2], d[3][:100], site=site):
                    news_boot = d[0]
        if news_boot is not None:  # an entry in w.dropped makes the write save the ledger
            w.dropped.append((gateway, news_boot, self.ledger.dropped_reported(gateway, news_boot), site))

    def _previous_run(self, prev: dict[str, Any], site: str, gateway: str, w: _Write, fields: dict[str, object]
                      ) -> None:
        """Reconcile the run before this one (edge/runmark.py): its epoch is closed in the ledger at the last
        number it assigned (a crashed run's tail that never arrives is a gap with reason "edge crash"), and
        what it lost joins its epoch's dropped total. Idempotent: the edge repeats this in every retained
        status of its run."""

        def num(key: str) -> int | None:
            v = prev.get(key)
            return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None

        boot, next_seq, total = num("boot_epoch_ns"), num("next_seq"), num("dropped_samples")
        if boot is None or next_seq is None:
            return
        # A clean stop is closed too: batches it dropped at its very end (reported in dropped_ranges) are
        # otherwise above the highest number seen, where no gap shows.
        crashed = prev.get("crashed") is True
        reason = "edge crash" if crashed else "missing"
        if next_seq > 0 and self.ledger.close_epoch(gateway, boot, next_seq - 1, reason, site=site) and crashed:
            log.warning("edge %s: run %d ended in a crash after batch seq %d; missing numbers are gaps "
                        "(reason: edge crash)", gateway, boot, next_seq - 1)
        if total is None:
            return
        key = (gateway, boot)
        seen = self._dropped_seen.get(key)
        if seen is None:
            seen = self.ledger.dropped_reported(gateway, boot)
        if total > seen:
            fields[schema.F_DROPPED] = int(fields.get(schema.F_DROPPED, 0)) + total - seen  # type: ignore[call-overload]
            self._dropped_seen[key] = total
        w.dropped.append((gateway, boot, total, site))  # saves the ledger (and the closed epoch) with the write

    # -- held batches -------------------------------------------------------------------------------
    def _bound_held(self, w: _Write) -> None:
        while len(self.held) > self.ing.held_max_messages:
            _, (m, batch) = self.held.popitem(last=False)
            self._dead_letter(
                m,
                "unknown_table",
                f"signal table {batch.table_hash.hex()} of {batch.gateway!r} unknown; more than "
                f"{self.ing.held_max_messages} batches held",
                w,
                samples=len(batch),
            )

    def _expire_held(self, w: _Write) -> None:
        if not self.held:
            return
        limit_ns = time.time_ns() - int(self.ing.held_max_age_s * 1e9)
        for key, (m, batch) in list(self.held.items()):
            if m.received_ns < limit_ns:
                del self.held[key]
                self._dead_letter(
                    m,
                    "unknown_table",
                    f"signal table {batch.table_hash.hex()} of {batch.gateway!r} did not arrive within "
                    f"{self.ing.held_max_age_s:g} s",
                    w,
                    samples=len(batch),
                )

    # -- dead letters -------------------------------------------------------------------------------
    def _dead_letter(self, m: Message, kind: str, reason: str, w: _Write, *, samples: int = 0) -> None:
        n = samples or _claimed_samples(m.payload)
        stored = self.dead.add(topic=m.topic, reason=reason, payload=m.payload, extra={"kind": kind})
        self._count_dead(m.topic, kind, n)
        _log_dead_letter(kind, m.topic, reason, n, stored)
        w.msgs.append(m)  # acknowledged with the rest: it is kept in the store, not lost

    def _dead_letter_doc(self, topic: str, kind: str, reason: str, doc: object, w: _Write) -> None:
        stored = self.dead.add(topic=topic, reason=reason, extra={"kind": kind, "doc": doc})
        self._count_dead(topic, kind, 0)
        _log_dead_letter(kind, topic, reason, 0, stored)

    def _count_dead(self, topic: str, kind: str, samples: int) -> None:
        self.m_dead.inc(reason=kind)
        self.m_dead_samples.inc(samples)
        with contextlib.suppress(wire.WireError):
            _, gw, _ = wire.parse_topic(topic)
            with self._counters_lock:
                self._counter(gw, "").dead_letters += 1

    # -- writing ------------------------------------------------------------------------------------
    def _write(self, w: _Write, stop: threading.Event) -> bool:
        """Write every line of ``w``; True once all are stored or dead-lettered, False if stopped."""
        self._rejected_samples = 0
        for policy, text in w.side.items():  # small (one line per transition or action): one request each
            body = memoryview(("\n".join(text) + "\n").encode())
            if not self._write_chunk(body, stop, self._policy_sink(policy), len(text)):
                return False
        if not w.parts:
            return True
        data = np.concatenate(w.parts) if len(w.parts) > 1 else w.parts[0]
        offs = np.cumsum([0] + [p.size for p in w.parts[:-1]])
        ends = np.concatenate([e + o for e, o in zip(w.ends, offs, strict=True)])
        mv = memoryview(data)
        step = lines_per_request(ends.size, self.ing.lines_per_request, self.ing.write_connections)
        chunks: list[tuple[memoryview, int]] = []  # (body, lines): line counts are known, not recounted
        start = 0
        for first in range(0, ends.size, step):
            last = min(first + step, ends.size)
            end = int(ends[last - 1])
            chunks.append((mv[start:end], last - first))
            start = end
        if self._pool is None or len(chunks) == 1:
            return all(self._write_chunk(c, stop, self.sink, n) for c, n in chunks)
        # Several connections: the chunks of one group in parallel; the group counts as written
        # (and is acknowledged) only once every chunk is.
        futures = [self._pool.submit(self._write_pooled, c, n, stop) for c, n in chunks]
        return all([f.result() for f in futures])

    def _write_pooled(self, body: memoryview, lines: int, stop: threading.Event) -> bool:
        sink = self._sinks.get()
        try:
            return self._write_chunk(body, stop, sink, lines)
        finally:
            self._sinks.put(sink)

    def _write_chunk(self, body: memoryview, stop: threading.Event, sink: InfluxSink, lines: int | None = None) -> bool:
        delay = self.ing.retry_min_s
        while True:
            t0 = time.perf_counter()
            try:
                sink.write(body)
            except RetryableWriteError as exc:
                if exc.status == 413:
                    return self._write_halves(body, stop, sink)
                if exc.status == 404 and self.cfg.influx.create_database:
                    # "database not found": InfluxDB was unreachable when we started, or the database
                    # was dropped since. Create it (idempotent) before the retry.
                    with contextlib.suppress(RetryableWriteError):
                        sink.ensure_database()
                if "retention policy not found" in str(exc):  # the alarms/audit policies: set up again
                    self._retention_done = False
                self._influx_answered.clear()  # only a ping answered after this failure cuts the wait
                self._set_writes_ok(False)
                self._last_error = str(exc)
                with self._count_lock:
                    self.m_errors.inc(kind="influx_retry" if exc.status is None else f"influx_{exc.status}")
                wait = max(delay, exc.retry_after_s or 0.0)
                log.warning("InfluxDB write failed, retrying in %.1f s (nothing acknowledged): %s", wait, exc)
                self._update_gauges()
                if self._retry_wait(wait, stop):
                    return False
                delay = min(delay * 2, self.ing.retry_max_s)
                continue
            except PartialWriteError as exc:
                self.watch.answered()
                self._set_writes_ok(True)
                self._rejected(exc, body)
                return True
            self.write_latency.observe(np.array([time.perf_counter() - t0]))
            with self._count_lock:
                self.m_points.inc(_count_lines(body) if lines is None else lines)
            if not self._influx_ok:
                log.info("InfluxDB writes succeed again")
            self.watch.answered()
            self._set_writes_ok(True)
            return True

    def _write_halves(self, body: memoryview, stop: threading.Event, sink: InfluxSink) -> bool:
        """HTTP 413: the server's body limit is below our request size; halve on a line boundary.

        Counted, so an operator can lower ``ingest.lines_per_request``; a single line above the limit
        can never be stored and is dead-lettered with the reason.
        """
        with self._count_lock:
            self.m_errors.inc(kind="influx_413")
        raw = bytes(body)
        if raw.count(b"\n") <= 1:
            reason = f"HTTP 413: a line of {len(raw)} bytes exceeds InfluxDB's request size limit"
            line = raw.rstrip(b"\n").decode(errors="replace")
            self._rejected(PartialWriteError(reason, bad_lines=[line], dropped=1), body)
            return True
        cut = raw.rfind(b"\n", 0, len(raw) // 2) + 1 or raw.index(b"\n") + 1
        mv = memoryview(raw)
        return self._write_chunk(mv[:cut], stop, sink) and self._write_chunk(mv[cut:], stop, sink)

    def _rejected(self, exc: PartialWriteError, body: memoryview) -> None:
        """A 400: the server kept the good points; dead-letter the rejected lines with its reason.

        Parse errors name their lines; a field type conflict names only the field, so the lines
        of that measurement carrying that field are the rejected ones.
        """
        lines = exc.bad_lines
        conflict = conflicting_field(exc.reason)
        if not lines and conflict is not None:
            lines = lines_with_field(bytes(body), *conflict)
        dropped = exc.dropped or len(lines)
        for first in range(0, max(len(lines), 1), _DEAD_LINES_PER_ENTRY):
            self.dead.add(
                topic="",
                reason=exc.reason[:4000],
                lines=lines[first : first + _DEAD_LINES_PER_ENTRY],
                extra={"kind": "influx_rejected", "dropped": dropped},
            )
        head = escape_measurement(self.cfg.influx.measurement)
        samples = sum(1 for line in lines if line.startswith((head + ",", head + " ")))
        with self._count_lock:
            self.m_dead.inc(reason="influx_rejected")
            self.m_dead_samples.inc(dropped)
            self._rejected_samples += samples
            self.m_points.inc(max(0, _count_lines(body) - dropped))
        log.error("InfluxDB rejected %d points (dead-lettered, the rest stored): %s", dropped, exc.reason[:300])

    def _commit(self, w: _Write) -> None:
        """After the write: ledger, metrics, PUBACKs, ack watermarks (in this order)."""
        now_ns = time.time_ns()
        touched: set[tuple[str, int]] = set()
        newest = 0
        for site, gateway, b in w.batches:
            dup = self.ledger.add(b.gateway, b.boot_epoch_ns, (b.seq,), site=site)
            touched.add((b.gateway, b.boot_epoch_ns))
            self.m_dups.inc(dup)
            n = len(b)
            top = int(b.ts_ns.max()) if n else 0
            newest = max(newest, top)
            with self._counters_lock:
                c = self._counter(gateway, site)
                c.batches += 1
                c.duplicates += dup
                c.samples += n
                c.newest_ts_ns = max(c.newest_ts_ns, top)
        for gw, boot, total, site in w.dropped:
            self.ledger.set_dropped_reported(gw, boot, total, site=site)
        if w.incidents_touched:
            try:
                self.incident_order.save()
            except OSError as exc:
                self.m_errors.inc(kind="incident_order_save")
                log.error("incident order not saved (%s); acknowledging anyway, the points are in InfluxDB", exc)
        if w.batches or w.dropped:
            try:
                self.ledger.save()
            except OSError as exc:
                self.m_errors.inc(kind="ledger_save")
                log.error("gap ledger not saved (%s); acknowledging anyway, the data is in InfluxDB", exc)
        if w.batches:
            ts = np.concatenate([b.ts_ns for _, _, b in w.batches]) if len(w.batches) > 1 else w.batches[0][2].ts_ns
            if ts.size:
                self.latency.observe((now_ns - ts) / 1e9)
                if len(w.arrival_ns) == len(w.batches):
                    arrived = np.repeat(np.asarray(w.arrival_ns, np.int64), [len(b) for _, _, b in w.batches])
                    self.arrival.observe((arrived - ts) / 1e9)
                if self._late_window_ns and int(ts.min()) < now_ns - self._late_window_ns:
                    self._note_late(int(ts.min()), int(ts.max()))
            self.m_samples.inc(max(0, w.samples - self._rejected_samples))
            if newest:
                self.m_lag.set((now_ns - newest) / 1e9)
        for m in w.msgs:
            if self.source.ack(m):
                self.m_acked.inc()
        self._publish_acks(touched)
        self._publish_event_acks(w.event_seqs)

    def _publish_event_acks(self, stored: dict[tuple[str, str, int], list[int]]) -> None:
        """Events ack (QoS 1, not retained): the events-lane seqs this write stored, as ``wire.Ack`` ranges. Not
        kept: an ack lost on the way makes the edge re-send the events, which are stored again as the same points
        and acked again. Dead-lettered documents count as stored (they are in the dead-letter store)."""
        for (site, gw, boot), seqs in stored.items():
            ranges: list[tuple[int, int]] = []
            for q in sorted(set(seqs)):
                if ranges and q == ranges[-1][1] + 1:
                    ranges[-1] = (ranges[-1][0], q)
                else:
                    ranges.append((q, q))
            for i in range(0, len(ranges), wire.MAX_ACK_RANGES):
                ack = wire.Ack(gateway=gw, boot_epoch_ns=boot, watermark=-1,
                               ranges=tuple(ranges[i : i + wire.MAX_ACK_RANGES]))
                self.source.publish(wire.topic(site, gw, "evack"), wire.encode_ack(ack), retain=False)

    def _publish_acks(self, touched: set[tuple[str, int]] | None = None, *, force: bool = False) -> None:
        """Retained QoS 1 ack watermark per (gateway, boot epoch): the touched ones, or all when forced."""
        keys = [(gw, boot) for gw, boot, _ in self.ledger.epochs()] if force else sorted(touched or ())
        if force:
            self._last_ack_publish = time.monotonic()
            keys = self._latest_epochs(keys)
        for gw, boot in keys:
            site = self.ledger.site_of(gw, boot)
            if not site:
                continue
            ack = self.ledger.ack(gw, boot)
            self.source.publish(wire.topic(site, gw, "ack"), wire.encode_ack(ack), retain=True)

    @staticmethod
    def _latest_epochs(keys: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """On periodic re-publication only each gateway's newest epoch: the retained topic keeps one."""
        latest: dict[str, int] = {}
        for gw, boot in keys:
            latest[gw] = max(boot, latest.get(gw, boot))
        return sorted(latest.items())

    # -- reporting ----------------------------------------------------------------------------------
    def _counter(self, gateway: str, site: str) -> _GatewayCounters:
        """Caller holds ``_counters_lock``."""
        c = self._counters.get(gateway)
        if c is None:
            if len(self._counters) > 10_000:  # bounded: a flood of bogus topics must not grow memory
                self._counters.clear()
            c = self._counters[gateway] = _GatewayCounters()
        if site:
            c.site = site
        return c

    def _pipeline_lines(self, now: float) -> list[str]:
        """Per-gateway pipeline points (counters as deltas, gauges as values), then counters reset."""
        interval = now - self._last_report
        self._last_report = now
        gaps = self.ledger.gaps()
        now_s = time.time()
        ts_ns = time.time_ns()
        lines: list[str] = []
        with self._counters_lock:
            counters = list(self._counters.items())
            snapshot = [(gw, _GatewayCounters(**vars(c))) for gw, c in counters]
            for _, c in counters:
                c.samples = c.batches = c.bytes = c.duplicates = c.dead_letters = 0
        for gw, c in snapshot:
            if not c.site:
                continue
            mine = [g for g in gaps if g.gateway == gw]
            fields: dict[str, object] = {
                schema.F_INTERVAL_S: interval,
                schema.F_SAMPLES: c.samples,
                schema.F_SAMPLES_PER_S: c.samples / interval if interval > 0 else 0.0,
                schema.F_BATCHES: c.batches,
                schema.F_BYTES: c.bytes,
                schema.F_DUPLICATES: c.duplicates,
                schema.F_DEAD_LETTERS: c.dead_letters,
                schema.F_GAPS: len(mine),
                schema.F_GAP_BATCHES: sum(g.batches for g in mine),
                schema.F_GAP_AGE_S: max((now_s - g.since for g in mine), default=0.0),
            }
            if c.newest_ts_ns:
                fields[schema.F_LAG_S] = max(0.0, (ts_ns - c.newest_ts_ns) / 1e9)
            tags = {schema.TAG_SITE: c.site, schema.TAG_GATEWAY: gw, schema.TAG_INGESTOR: self.ing.instance}
            lines.append(schema.format_point(schema.M_PIPELINE, tags, fields, ts_ns))
        return lines

    def _update_gauges(self) -> None:
        self.m_pending.set(self.pending())
        self.m_dead_store.set(self.dead.stats.evicted_entries, kind="evicted")
        self.m_dead_store.set(self.dead.stats.write_errors, kind="write_errors")
        self.m_ledger_forgotten.set(self.ledger.forgotten_epochs, kind="epochs")
        self.m_ledger_forgotten.set(self.ledger.forgotten_ranges, kind="ranges")
        self.m_held.set(len(self.held))
        now_s = time.time()
        per_gw: dict[str, list[Any]] = {}
        for g in self.ledger.gaps():
            per_gw.setdefault(g.gateway, []).append(g)
        for gw, _boot, _site in self.ledger.epochs():
            mine = per_gw.get(gw, [])
            self.m_gaps.set(len(mine), gateway=gw)
            self.m_gap_batches.set(sum(g.batches for g in mine), gateway=gw)
            self.m_gap_age.set(max((now_s - g.since for g in mine), default=0.0), gateway=gw)


_PIPELINE_DEPTH = 2
#: The stages of a write group, timed per group (histogram ``group_stage_seconds{stage=...}``).
_STAGES = {
    "collect": "oldest message's arrival to the group closing (worker busy with the previous group, linger)",
    "build": "decoding and building line protocol",
    "queue": "built, waiting for the writer (busy with the previous group)",
    "write": "the InfluxDB requests of the group (in parallel over write_connections)",
    "commit": "gap ledger saved, PUBACKs, ack watermarks published",
}
#: Gauges of the edge's retained status (edge/app.py) -> pipeline fields.
_EDGE_GAUGES = (
    ("log_bytes", schema.F_WAL_BYTES),
    ("log_records", schema.F_WAL_RECORDS),
    ("oldest_unacked_age_s", schema.F_WAL_OLDEST_AGE_S),
)
_HEALTH_GAPS = 20
_UNIT_NS = {"s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}


def _late_window_ns(spec: str) -> int:
    """``"10m"`` -> ns: samples older than this miss the 1-minute continuous query's window."""
    return int(spec[:-1]) * _UNIT_NS[spec[-1]]


_IDLE = _Write()  # the writer's "nothing arrived" marker


class _WrongGateway(wire.WireError):
    """A payload whose gateway or site does not match its topic (dead-lettered as malformed)."""


_LANES = ("telemetry", "events", "health", "signals", "ack", "cmdresult", "incidents", "evack")
#: Lanes gateways publish for live consumers, acknowledged and not stored: ``cmdresult`` answers a command
#: (``plantwire alarms`` waits for it), ``incidents`` republishes incident documents for other systems.
#: Both are also written to the events lane (audit, incident documents), which is what gets stored.
#: ``evack`` is an ingestor's own events ack coming back (nothing to merge: the edge keeps what is unacked).
_NOT_STORED_LANES = ("cmdresult", "incidents", "evack")
_N_OFFSET = 2 + 1 + 1 + 8 + 8 + 8  # prefix, boot epoch, seq, table hash: then n (uint32)


def _claimed_samples(payload: bytes) -> int:
    """Sample count a telemetry header claims (0 for anything else); for batching and accounting."""
    if len(payload) >= _N_OFFSET + 4 and payload[:2] == wire.MAGIC and payload[3] == wire.KIND_TELEMETRY:
        return min(int.from_bytes(payload[_N_OFFSET : _N_OFFSET + 4], "little"), wire.MAX_SAMPLES)
    return 0


_DEAD_LINES_PER_ENTRY = 10_000

#: Dead-letter reasons (metric label ``reason``); each logs with a template of its own, so the rate
#: limiter (plantwire.logs: 5 per template per minute, then a count) keeps a flood of one kind from
#: hiding the first letter of another.
_DEAD_KINDS = (
    "bad_topic", "oversized", "unknown_lane", "wrong_gateway", "malformed", "schema", "unknown_table", "unknown_type"
)
_DEAD_LOG = MappingProxyType(
    {k: f"dead letter ({k}) from topic %r, %d samples, %s: %s" for k in (*_DEAD_KINDS, "other")}
)


def _log_dead_letter(kind: str, topic: str, reason: str, samples: int, stored: bool) -> None:
    """One warning per dead letter (rate-limited by the daemon's log handler), with reason and topic."""
    where = "kept in the dead-letter store" if stored else "NOT STORED (dead-letter store write failed)"
    template = _DEAD_LOG.get(kind, _DEAD_LOG["other"])
    level = logging.WARNING if stored else logging.ERROR
    log.log(level, template, topic, samples, where, reason[:500], extra={"topic": topic, "dead_letter": kind})


def _count_lines(body: memoryview) -> int:
    return int(np.count_nonzero(np.frombuffer(body, dtype=np.uint8) == 10))


# -- the daemon -------------------------------------------------------------------------------------


async def serve(config_path: Path, cfg: CloudConfig, notifier: Notifier) -> None:
    """Run until SIGTERM/SIGINT; SIGHUP swaps in an ingestor built from the file if it validates.

    The worker runs in a thread, the systemd watchdog is petted from the event loop. A reload is
    atomic: the file is validated offline while the running ingestor carries on; a bad file is
    rejected with its errors (``config_reload_failures_total``) and changes nothing. A good one
    stops the running ingestor the way SIGTERM does (written groups acknowledged, the rest left to
    the persistent session, which redelivers to the new one) and starts the new one. Counters
    restart from zero then, which Prometheus' ``rate()`` takes as a counter reset.
    """
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    hup = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, hup.set)
    reload_failures = 0
    first = True
    while True:
        ingestor = Ingestor(cfg)
        ingestor.registry.counter("config_reload_failures_total", "SIGHUP reloads rejected").set(reload_failures)
        run_stop = threading.Event()
        ended = asyncio.Event()
        accepted: list[CloudConfig] = []
        ingestor.start()
        if first:
            notifier.ready(status="consuming")
            first = False
        else:
            notifier.ready(status="consuming (reloaded)")

        async def supervise(ing: Ingestor = ingestor, ended: asyncio.Event = ended) -> None:
            interval = notifier.watchdog_interval_s() or 5.0
            while not ended.is_set():
                notifier.watchdog()
                h = ing.health()
                notifier.status(f"pending {h['pending_messages']}, influx {'ok' if h['influx_ok'] else 'DOWN'}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ended.wait(), interval / 2.0)

        async def work(
            ing: Ingestor = ingestor, run_stop: threading.Event = run_stop, ended: asyncio.Event = ended
        ) -> None:
            try:
                await asyncio.to_thread(ing.run, run_stop)
            finally:
                ended.set()

        async def watch(
            ing: Ingestor = ingestor,
            run_stop: threading.Event = run_stop,
            ended: asyncio.Event = ended,
            accepted: list[CloudConfig] = accepted,
        ) -> None:
            nonlocal reload_failures
            while not ended.is_set():
                waiters = [asyncio.create_task(e.wait()) for e in (stopping, hup, ended)]
                try:
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for t in waiters:
                        t.cancel()
                if stopping.is_set():
                    run_stop.set()
                    return
                if hup.is_set():
                    hup.clear()
                    try:
                        new_cfg = await asyncio.to_thread(load_cloud, config_path)
                        if problem := _state_dirs_problem(new_cfg):
                            raise ConfigError(str(config_path), [problem])
                        accepted.append(new_cfg)
                    except ConfigError as exc:
                        reload_failures += 1
                        ing.registry.counter("config_reload_failures_total", "").set(reload_failures)
                        log.error("reload rejected, the running config carries on:\n%s", exc.report())
                        continue
                    log.info("reload: new config is valid, switching over")
                    notifier.reloading()
                    run_stop.set()
                    return

        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(work(), name="ingest-worker")
                tg.create_task(supervise(), name="supervise")
                tg.create_task(watch(), name="watch-signals")
        finally:
            ingestor.close()
        if stopping.is_set() or not accepted:
            notifier.stopping()
            return
        cfg = accepted[0]


def _state_dirs_problem(cfg: CloudConfig) -> str | None:
    """The state directory and the signal-table folder in it, created and writable; else why not."""
    return ensure_state_dir(cfg.state_dir) or ensure_state_dir(cfg.state_dir / "signal_tables")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="plantwire ingest", description="Run the cloud ingestor (MQTT -> InfluxDB).")
    parser.add_argument("config", type=Path)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-json", action="store_true", help="one JSON object per log line")
    args = parser.parse_args(argv)
    setup_logging(args.log_level, json=args.log_json)
    try:
        cfg = load_cloud(args.config)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    problem = _state_dirs_problem(cfg)
    if problem:  # an operator's error like a typo: one line, exit 2 (systemd does not restart-loop)
        print(f"plantwire ingest: {args.config}: {problem}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.config, cfg, Notifier.from_env()))
    return 0
