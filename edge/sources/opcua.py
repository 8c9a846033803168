"""OPC-UA acquisition: one ``OpcuaSource`` reads one server (asyncua client) and hands samples to a sink as columns.

Behaviour a plant engineer relies on, and why:

- **Subscriptions by default, one sink call per notification.** asyncua's per-item handler spawns
  a task per value and its iterator queue drops under load (shared/MEASURED.md, traps 2). Here the
  subscription callback is registered directly with asyncua's session publish loop: it receives
  the whole ``PublishResult`` and turns each DataChangeNotification into numpy columns
  with one ``sink(ts_ns, rows, values, quality)`` call. No client queue exists, so none can drop.
  Client handles are SignalTable rows, so routing is an index. PublishResponses are decoded from
  the bytes straight into columns (edge/sources/opcua_fastpath.py: ~0.2-1.7 us per sample instead of
  asyncua's ~6, see bench/opcua_source.py); what that path cannot read goes through asyncua and
  edge/sources/opcua_decode.py, with identical results (tested).
- **Node ids.** Each signal's node is the plant's (plantwire.nodeid: numeric, string, GUID, opaque,
  ``nsu=`` URIs); namespaces are mapped to the server's indices at every connect (opcua_nodeid).
- **Groups.** ``settings.groups`` select signals by fnmatch pattern on the signal id; each group
  has its own publishing and sampling interval, queue size and deadband, or is polled with bulk
  Read instead (``mode: poll``). Signals no group matches use the top-level settings.
- **Limits.** Subscriptions hold at most ``max_items_per_subscription`` items (common PLCs accept
  about 1,000). CreateMonitoredItems calls are cut to the server's MaxMonitoredItemsPerCall and
  Reads to MaxNodesPerRead (read from the server's OperationLimits at every connect; 0 or
  unreadable means "no limit"). Every monitored-item result is checked: refused items are logged
  once per connect by signal id with their status, kept in ``refused``, counted as errors, and
  delivered as one BAD sample each so the gap is visible downstream.
- **Quality and time.** StatusCode severity -> GOOD / UNCERTAIN / BAD (NaN); SourceTimestamp,
  else ServerTimestamp, else receive time. Polled samples carry the poll's wall-clock tick (as the
  Modbus source does): a poll observes the value at the tick, and a stale SourceTimestamp would
  collapse repeated polls into one point downstream.
- **Reconnect.** Any failure (connect, lost transport, setup) tears the client down and retries
  with capped, jittered exponential back-off; a new session and all subscriptions are created
  from scratch (servers forget them on restart). When a running session is lost, every signal
  gets one BAD sample at the loss time, so a dashboard shows the outage instead of a flat line.
- **Watchdog.** A subscription that is connected but hears nothing (neither data nor keep-alive)
  for ``watchdog_margin`` keep-alive periods (publishing interval x revised keep-alive count) is
  deleted and re-created; if that fails the whole session is re-established.
- **Back-fill.** After a reconnect, and after the watchdog re-created a subscription, for servers that
  keep history, HistoryRead (raw) fetches each subscribed signal's values after its last received
  sample and before its first live sample since the (re)subscription (at most ``backfill_max_s``
  back), so no value is delivered both live and back-filled. Pages follow continuation points, or
  timestamps when a server truncates a full page without one (asyncua's does). Back-filled samples
  go through ``backfill_sink`` when given, else through ``sink`` with GOOD downgraded to UNCERTAIN
  (``BACKFILL_QUALITY``): the frame has no flag bit yet, and a value read after the fact is, for
  alarms, less certain than a live one. Signals whose server has no history for them are counted
  in ``backfill_unsupported``. The initial value a server sends on (re)subscription may repeat the
  last sample before an outage (same timestamp, same value): points are identified downstream by
  series and time, so it is a no-op there.
- ``run()`` never raises anything but CancelledError: errors are counted in ``stats``, logged once
  per streak, and retried.
- **Refused certificate.** A server with strict certificate checks that does not (yet) trust our
  client certificate may answer OpenSecureChannel with a Bad result that asyncua surfaces as a bare
  AssertionError (shared/MEASURED.md trap 15), or refuse it with BadSecurityChecksFailed /
  BadCertificate*. Both give one line naming our certificate file, its SHA-1 thumbprint (how most
  servers name the file in their PKI ``rejected/`` folder) and the trust step; no traceback.
- **Bad status is a state.** A Bad StatusCode in a notification or read is the server saying the
  sensor is bad, not a failed operation of ours: it is counted per code in ``bad_by_status`` and as
  a signal state in ``bad_signals`` (gauge and transitions), not in ``errors``, so one failed sensor
  does not look like an error storm. The code travels with the sample (``status_sink``).
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import logging
import math
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

import numpy as np
from asyncua import Client, ua

from edge.config import DeadbandType, OpcuaGroup, OpcuaMode, OpcuaSettings, SecurityMode
from plantwire.logs import log_source
from plantwire.nodeid import parse_node_id
from plantwire.plant import Device, Quality, SignalTable
from plantwire.status import Status

from .opcua_decode import Decoded, decode_datavalues, finish
from .opcua_fastpath import ColumnsNotification, install
from .opcua_fastpath import read as fast_read
from .opcua_nodeid import NamespaceError, parse_nodes, resolve
from .opcua_security import SecurityConfigError, apply_security, read_credentials
from .schedule import next_tick_ns, raise_if_cancelled
from .stats import BadSignals, SourceStats, describe_signals
from .writes import DeviceDown, WriteFailed

__all__ = ["BACKFILL_QUALITY", "Backoff", "OpcuaSource", "ResolvedGroup", "Sink", "StatusSink", "resolve_groups"]

log = logging.getLogger(__name__)

Sink = Callable[[np.ndarray | int, np.ndarray, np.ndarray, np.ndarray | int], None]
#: A sink that also takes each sample's StatusCode (scalar or uint32 array, 0 = Good).
StatusSink = Callable[[np.ndarray | int, np.ndarray, np.ndarray, np.ndarray | int, np.ndarray | int], None]

_GOOD = int(Quality.GOOD)
_BAD = int(Quality.BAD)
_NEVER = np.iinfo(np.int64).max
#: Quality given to back-filled GOOD samples when no ``backfill_sink`` is wired (see module docstring).
BACKFILL_QUALITY = int(Quality.UNCERTAIN)
_DEADBAND_CODE = {DeadbandType.NONE: 0, DeadbandType.ABSOLUTE: 1, DeadbandType.PERCENT: 2}
_HISTORY_PAGE = 1000  # values per node per HistoryRead answer; the server pages the rest with continuation points
_LIMIT_NODES = (
    ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
    ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
    ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerHistoryReadData,
)


class SetupError(Exception):
    """The server answered but cannot serve this device as configured (e.g. the namespace is missing)."""


class _SessionLost(Exception):
    """The transport or session went away; the run loop reconnects."""


# --------------------------------------------------------------------------------------------
# Groups
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ResolvedGroup:
    """A group's effective settings (inheritance applied) and its signal rows."""

    name: str
    mode: OpcuaMode
    rows: np.ndarray  # uint32 SignalTable rows, in table order
    publishing_interval_ms: int
    sampling_interval_ms: int
    queue_size: int
    deadband: DeadbandType
    deadband_value: float
    poll_period_ms: int


def resolve_groups(settings: OpcuaSettings, ids: Sequence[str], rows: np.ndarray) -> list[ResolvedGroup]:
    """Assign each row to the first group whose pattern matches its id; the rest form the default group.

    Empty groups are dropped. Pure and cheap: runs once at start-up (fnmatch per signal and pattern).
    """
    groups: list[OpcuaGroup | None] = [*settings.groups, None]
    members: list[list[int]] = [[] for _ in groups]
    regexes = [re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in g.match)) for g in settings.groups]
    for row in rows.tolist():
        sid = ids[row]
        for k, rx in enumerate(regexes):
            if rx.match(sid):
                members[k].append(row)
                break
        else:
            members[-1].append(row)
    out: list[ResolvedGroup] = []
    for k, (g, m) in enumerate(zip(groups, members, strict=True)):
        if not m:
            continue
        pub = (g.publishing_interval_ms if g and g.publishing_interval_ms is not None
               else settings.publishing_interval_ms)
        samp = g.sampling_interval_ms if g and g.sampling_interval_ms is not None else settings.sampling_interval_ms
        queue = g.queue_size if g and g.queue_size is not None else settings.queue_size
        if queue is None:
            # Enough for one publishing interval of samples at the sampling rate (100 ms assumed when the
            # sampling interval is 0, "as fast as the server can"), so no change is lost server-side.
            queue = max(1, math.ceil(pub / (samp if samp > 0 else 100)))
        out.append(ResolvedGroup(
            name=(g.name or f"groups[{k}]") if g else "default",
            mode=g.mode if g else OpcuaMode.SUBSCRIBE,
            rows=np.asarray(m, dtype=np.uint32),
            publishing_interval_ms=pub,
            sampling_interval_ms=samp,
            queue_size=queue,
            deadband=g.deadband if g and g.deadband is not None else settings.deadband,
            deadband_value=g.deadband_value if g and g.deadband_value is not None else settings.deadband_value,
            poll_period_ms=g.poll_period_ms if g and g.poll_period_ms is not None else settings.poll_period_ms,
        ))
    return out


# --------------------------------------------------------------------------------------------
# Back-off
# --------------------------------------------------------------------------------------------
class Backoff:
    """Capped exponential back-off shortened by up to ``jitter`` (so gateways that lost a server together
    do not all retry in the same instant)."""

    def __init__(self, initial_s: float, max_s: float, jitter: float, rng: random.Random) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.jitter = jitter
        self._rng = rng
        self.attempts = 0

    def next_delay_s(self) -> float:
        base = min(self.max_s, self.initial_s * 2.0 ** min(self.attempts, 62))
        self.attempts += 1
        return base * (1.0 - self.jitter * self._rng.random())

    def reset(self) -> None:
        self.attempts = 0


# --------------------------------------------------------------------------------------------
# Per-session state
# --------------------------------------------------------------------------------------------
@dataclass(slots=True, eq=False)
class _Sub:
    """One server subscription: a slice of a subscribe group's rows."""

    group: ResolvedGroup
    rows: np.ndarray  # uint32
    subscription_id: int = 0
    stale_after_s: float = 0.0
    last_publish_s: float = 0.0  # monotonic; data or keep-alive
    restart: bool = False  # set by a Bad StatusChangeNotification
    has_data: bool = False  # a DataChangeNotification arrived (initial values are in)
    accepted: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint32))


# --------------------------------------------------------------------------------------------
# The source
# --------------------------------------------------------------------------------------------
class OpcuaSource:
    """Reads one OPC-UA server's signals (subscriptions and/or polling) and delivers them through ``sink``."""

    def __init__(
        self,
        device: Device,
        table: SignalTable,
        settings: OpcuaSettings,
        sink: Sink,
        stats: SourceStats,
        *,
        backfill_sink: Sink | None = None,
        rng: random.Random | None = None,
        fast_decode: bool = True,
        status_sink: StatusSink | None = None,
    ) -> None:
        """Resolve groups and check the credentials are readable (no network).

        Raises SecurityConfigError at start-up, not at the first connect, when a configured credential is
        missing: a typo must stop the daemon (systemd must not restart-loop on it), not retry forever.
        """
        read_credentials(settings.security)
        self.fast_decode = fast_decode  # decode PublishResponses from the bytes (opcua_fastpath); False: asyncua
        self.fast_decode_errors = 0
        self.fast_notifications = 0  # DataChangeNotifications decoded from the bytes
        self.device = device
        self.settings = settings
        self.sink = sink
        self.backfill_sink = backfill_sink
        self.status_sink = status_sink  # when given, live samples go there with their StatusCode instead of to sink
        self.stats = stats
        self.ids = table.ids
        self.rows = np.ascontiguousarray(table.signals_of(device.index), dtype=np.uint32)
        self.groups = resolve_groups(settings, table.ids, self.rows)
        # Node ids as the plant names them (any standard form; opcua_nodeid), namespaces resolved per connect.
        self._node_refs = parse_nodes({
            row: table.nodes[row] if table.nodes else f"nsu={device.namespace};s={table.ids[row]}"
            for row in self.rows.tolist()})
        self._mine = np.zeros(len(table), dtype=bool)
        self._mine[self.rows] = True
        self._last_ts = np.zeros(len(table), dtype=np.int64)  # newest sample per row (for back-fill)
        # Oldest live sample per row since its subscription was (re)created: back-fill stops there. Tracked
        # only while a back-fill is pending (np.minimum.at costs more than the rest of the ingest).
        self._first_live = np.full(len(table), _NEVER, dtype=np.int64)
        self._backfills_pending = 0
        self._backoff = Backoff(settings.reconnect_initial_s, settings.reconnect_max_s, settings.reconnect_jitter,
                                rng or random.Random())
        self._name = f"opcua {device.name} ({device.endpoint})"
        # Observability beyond SourceStats (read by tests and the health check).
        self.refused: dict[str, str] = {}  # signal id -> status name, from the latest connect
        self.subscriptions = 0  # server subscriptions of the current session
        self.watchdog_restarts = 0
        self.unknown_handles = 0  # notifications for handles that are not ours (dropped, counted)
        self.unconvertible = 0  # values that are not numbers (delivered BAD)
        self.backfilled = 0  # samples delivered by HistoryRead back-fill
        self.backfill_unsupported = 0  # signals whose history read was refused
        self.server_limits: dict[str, int] = {}
        self._subs: list[_Sub] = []
        self._client: Client | None = None
        self._ever_connected = False
        self._was_streaming = False  # a session delivered data and was then lost: back-fill the gap
        self._established = False  # the current session finished its setup (subscriptions, pollers)
        self._failing = False
        self._sink_failing = False
        self._nodeids: dict[int, ua.NodeId] = {}
        stats.bad_signals = BadSignals(len(table))

    # ---- public -------------------------------------------------------------------------------
    def resume_after(self, last_ts_ns: np.ndarray) -> None:
        """Back-fill from these per-signal source timestamps at the first session, as after a reconnect.

        Called before ``run()`` when the previous edge run crashed (edge/runmark.py): what it had read
        after its last flush died with it, and the server's history may still have it.
        """
        mine = self._mine & (last_ts_ns > 0)
        self._last_ts[mine] = np.maximum(self._last_ts[mine], last_ts_ns[mine])
        self._was_streaming = bool(mine.any()) and self.settings.backfill

    async def write(self, node: str, value: float | int | bool, variant: ua.VariantType) -> None:
        """Write ``value`` (as ``variant``) to the Value of ``node`` (plant node-id text) in this session.

        Used by ``edge.actions``: the request shares the session that serves the subscriptions (no second
        connection to the PLC), is bounded by ``timeout_s``, and resolves the namespace at each write
        (rare by construction). Raises DeviceDown without a session, WriteFailed on a Bad status,
        a missing namespace or a timeout.
        """
        client = self._client
        if client is None or not self._established:
            raise DeviceDown(f"{self._name} is not connected")
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                nid = resolve({0: parse_node_id(node)}, await client.get_namespace_array(), self.device)[0]
                await client.get_node(nid).write_value(ua.DataValue(ua.Variant(value, variant)))
        except TimeoutError as exc:
            raise WriteFailed(f"{self._name}: no answer to the write of {node} within {self.settings.timeout_s} s"
                              ) from exc
        except (NamespaceError, ValueError) as exc:
            raise WriteFailed(f"{self._name}: {node}: {exc}") from exc
        except ua.UaStatusCodeError as exc:
            raise WriteFailed(f"{self._name}: write of {node} refused: {exc}") from exc
        except (ConnectionError, OSError) as exc:
            raise DeviceDown(f"{self._name}: connection lost during the write ({exc})") from exc

    async def run(self) -> None:
        """Acquire until cancelled; only CancelledError escapes. Library log lines of this task name the server."""
        with log_source(self.device.name):
            await self._run()

    async def _run(self) -> None:
        try:
            while True:
                try:
                    await self._session()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # includes ExceptionGroup from the session's TaskGroup
                    self.stats.errors += 1
                    self._log_failure(exc)
                finally:
                    await self._teardown()
                raise_if_cancelled()  # a stop that a client library swallowed still stops the loop
                await asyncio.sleep(self._backoff.next_delay_s())
        finally:
            self.stats.connected = False

    # ---- one session ----------------------------------------------------------------------------
    async def _session(self) -> None:
        s = self.settings
        client = Client(self.device.endpoint, timeout=s.timeout_s, watchdog_intervall=max(2.0, s.timeout_s / 2))
        client.session_timeout = 60_000  # an orphaned session (we died) is reclaimed within a minute
        client.application_uri = s.security.application_uri
        client.name = client.description = f"plantwire edge ({self.device.name})"
        self._client = client
        lost = asyncio.Event()

        async def on_lost(exc: Exception) -> None:
            lost.set()

        client.connection_lost_callback = on_lost
        await apply_security(client, s.security, s.timeout_s)
        try:
            async with asyncio.timeout(s.timeout_s * 2 + 1):
                await client.connect()
        except Exception:
            self.stats.connect_failures += 1
            raise
        if self.fast_decode:
            install(client.uaclient.session, self._on_fast_decode_error)
        if self._ever_connected:
            self.stats.reconnects += 1
        self._ever_connected = True
        self.stats.connected = True
        try:
            self._nodeids = resolve(self._node_refs, await client.get_namespace_array(), self.device)
        except NamespaceError as exc:
            raise SetupError(str(exc)) from None
        await self._read_limits(client)

        resubscribed_ns = time.time_ns()
        backfill_from = self._last_ts.copy() if self._was_streaming and s.backfill else None
        if backfill_from is not None:
            self._backfills_pending += 1  # track first live samples from the first notification on
        self.refused = {}
        self._subs = []
        for group in self.groups:
            if group.mode is OpcuaMode.SUBSCRIBE:
                await self._subscribe_group(client, group)
        self.subscriptions = len(self._subs)
        log.info("%s: connected; %d signals, %d subscriptions, %d refused", self._name, len(self.rows),
                 len(self._subs), len(self.refused))
        self._failing = False
        self._backoff.reset()
        self._was_streaming = True
        self._established = True
        async with asyncio.TaskGroup() as tg:
            for group in self.groups:
                if group.mode is OpcuaMode.POLL:
                    tg.create_task(self._poll_loop(client, group, lost), name=f"{self._name} poll {group.name}")
            if backfill_from is not None:
                tg.create_task(self._backfill(client, backfill_from, resubscribed_ns), name=f"{self._name} backfill")
            await self._watch(client, lost, tg)

    async def _read_limits(self, client: Client) -> None:
        params = ua.ReadParameters()
        params.NodesToRead = [ua.ReadValueId(NodeId=ua.NodeId(i), AttributeId=ua.AttributeIds.Value)
                              for i in _LIMIT_NODES]
        values = await client.uaclient.read(params)
        limits = []
        for dv in values:
            v = dv.Value.Value if dv.StatusCode is not None and dv.StatusCode.is_good() and dv.Value else 0
            limits.append(int(v) if isinstance(v, int) and v > 0 else 0)
        self.server_limits = dict(zip(("max_nodes_per_read", "max_monitored_items_per_call",
                                       "max_nodes_per_history_read"), limits, strict=True))

    def _limit(self, name: str, configured: int) -> int:
        server = self.server_limits.get(name, 0)
        return min(configured, server) if server > 0 else configured

    async def _teardown(self) -> None:
        client, self._client = self._client, None
        if self._established:
            # One BAD sample per signal at the loss: the outage is visible, not a flat line.
            self._established = False
            self._count_status(Status.BAD_NO_COMMUNICATION, len(self.rows))
            self._deliver(time.time_ns(), self.rows, np.full(len(self.rows), np.nan), _BAD,
                          status=Status.BAD_NO_COMMUNICATION)
        self.stats.connected = False
        self._subs = []
        self.subscriptions = 0
        self._backfills_pending = 0  # their tasks ended with the session
        if client is None:
            return
        try:
            async with asyncio.timeout(min(self.settings.timeout_s, 5.0)):
                await client.disconnect()
        except Exception:  # a dead server cannot take part in closing; drop the socket
            log.debug("%s: disconnect failed", self._name, exc_info=True)
        try:
            client.disconnect_socket()
        except Exception:
            log.debug("%s: disconnect_socket failed", self._name, exc_info=True)

    def _log_failure(self, exc: BaseException) -> None:
        while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]
        refused = self._certificate_refused(exc)
        if refused is not None:
            if not self._failing:
                self._failing = True
                log.warning("%s: %s; reconnecting with back-off", self._name, refused)
            else:
                log.debug("%s: still refused: %s", self._name, refused)
            return
        if isinstance(exc, _SessionLost) or not str(exc):
            msg = str(exc) or type(exc).__name__
        else:
            msg = f"{type(exc).__name__}: {exc}"
        msg += self._hint(type(exc).__name__)
        if not self._failing:
            self._failing = True
            if not isinstance(exc, (OSError, TimeoutError, _SessionLost, SetupError, SecurityConfigError, ua.UaError)):
                log.warning("%s: unexpected failure; reconnecting with back-off", self._name, exc_info=exc)
                return
            log.warning("%s: %s; reconnecting with back-off", self._name, msg)
        else:
            log.debug("%s: still failing: %s", self._name, msg)

    def _on_fast_decode_error(self, exc: BaseException) -> None:
        """The byte-level decoder failed on a message (asyncua decodes it instead): count, log the first."""
        self.fast_decode_errors += 1
        if self.fast_decode_errors == 1:
            log.warning("%s: fast PublishResponse decoding failed; asyncua decodes such messages (logged once)",
                        self._name, exc_info=exc)

    def _certificate_refused(self, exc: BaseException) -> str | None:
        """The log line for a server that refuses our client certificate, or None for other failures.

        Matched on the failure, not its text: asyncua turns a Bad OpenSecureChannel answer into a bare
        AssertionError raised in ``open_secure_channel`` (trap 15); other servers say BadSecurityChecksFailed
        or BadCertificate* (status codes), which the other hint covers when they reach us as such.
        """
        sec = self.settings.security
        if sec.mode is SecurityMode.NONE or sec.certificate is None:
            return None
        if isinstance(exc, ua.UaStatusCodeError):
            name = ua.StatusCode(exc.code).name
            if not (name.startswith("BadCertificate") or name in ("BadSecurityChecksFailed",
                                                                  "BadSecurityPolicyRejected")):
                return None
            why = name
        elif isinstance(exc, AssertionError) and _raised_in(exc, "open_secure_channel"):
            why = "OpenSecureChannel refused"
        else:
            return None
        try:
            thumbprint = hashlib.sha1(sec.certificate.read_bytes(), usedforsecurity=False).hexdigest()
        except OSError:
            thumbprint = "unknown (certificate unreadable)"
        return (f"the server refuses our client certificate ({why}): trust {sec.certificate} (SHA-1 thumbprint "
                f"{thumbprint}) on the server. Servers with a file PKI (our simulator, open62541, node-opcua, "
                "UaExpert-style) keep refused certificates in their PKI rejected/ folder: move the file to "
                "trusted/certs/; Siemens: TIA Portal certificate manager; Kepware: Trusted Clients. The gateway "
                "retries and connects without a restart")

    def _hint(self, error: str) -> str:
        """What the operator should do about a refusal, for the log line."""
        sec = self.settings.security
        if error.startswith("BadCertificate") or error in ("BadSecurityChecksFailed", "BadSecurityPolicyRejected"):
            if sec.certificate is not None:
                return (f" (the server refuses our certificate {sec.certificate}: add it to the server's trusted "
                        "certificates; see edge/sources/opcua_security.py)")
        if error in ("BadUserAccessDenied", "BadIdentityTokenRejected", "BadIdentityTokenInvalid"):
            where = sec.credentials_file or "the environment"
            return f" (check {sec.username_key} / {sec.password_key} in {where})"
        return ""

    # ---- subscriptions --------------------------------------------------------------------------
    async def _subscribe_group(self, client: Client, group: ResolvedGroup) -> None:
        cap = self.settings.max_items_per_subscription
        for a in range(0, len(group.rows), cap):
            sub = _Sub(group=group, rows=group.rows[a : a + cap])
            await self._create_subscription(client, sub)
            self._subs.append(sub)

    async def _create_subscription(self, client: Client, sub: _Sub) -> None:
        g = sub.group
        s = self.settings
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=float(g.publishing_interval_ms),
            RequestedLifetimeCount=s.lifetime_count,
            RequestedMaxKeepAliveCount=s.keepalive_count,
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
            Priority=0,
        )
        result = await client.uaclient.create_subscription(params, partial(self._on_publish, sub))
        sub.subscription_id = int(result.SubscriptionId)
        interval_s = max(float(result.RevisedPublishingInterval), 1.0) / 1000.0
        keepalive = max(int(result.RevisedMaxKeepAliveCount or s.keepalive_count), 1)
        sub.stale_after_s = max(interval_s * keepalive * s.watchdog_margin, interval_s + 1.0) + s.timeout_s
        sub.last_publish_s = time.monotonic()
        sub.restart = False
        sub.has_data = False
        self._first_live[sub.rows] = _NEVER

        filt = None
        if g.deadband is not DeadbandType.NONE:
            filt = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValue,
                                       DeadbandType=_DEADBAND_CODE[g.deadband], DeadbandValue=g.deadband_value)
        per_call = self._limit("max_monitored_items_per_call", len(sub.rows) or 1)
        accepted: list[np.ndarray] = []
        refused_rows: list[int] = []
        rows = sub.rows
        for a in range(0, len(rows), per_call):
            chunk = rows[a : a + per_call]
            items = [self._item_request(row, g, filt) for row in chunk.tolist()]
            req = ua.CreateMonitoredItemsParameters(SubscriptionId=sub.subscription_id, ItemsToCreate=items,
                                                    TimestampsToReturn=ua.TimestampsToReturn.Both)
            results = await client.uaclient.create_monitored_items(req)
            if len(results) != len(items):
                raise SetupError(f"CreateMonitoredItems answered {len(results)} results for {len(items)} items")
            ok = np.fromiter((r.StatusCode.is_good() for r in results), dtype=bool, count=len(results))
            accepted.append(chunk[ok])
            if not ok.all():
                for row, r in zip(chunk[~ok].tolist(), [r for r in results if not r.StatusCode.is_good()],
                                  strict=True):
                    self.refused[self.ids[row]] = r.StatusCode.name
                    refused_rows.append(row)
        sub.accepted = np.concatenate(accepted) if accepted else np.zeros(0, dtype=np.uint32)
        if refused_rows:
            n = len(refused_rows)
            self.stats.errors += n
            self.stats.exceptions += n
            names = ", ".join(f"{self.ids[r]} ({self.refused[self.ids[r]]})" for r in refused_rows[:20])
            log.warning("%s: server refused %d monitored items of subscription %d: %s%s", self._name, n,
                        sub.subscription_id, names, " ..." if n > 20 else "")
            bad_rows = np.asarray(refused_rows, dtype=np.uint32)
            self._deliver(time.time_ns(), bad_rows, np.full(n, np.nan), _BAD)

    def _item_request(self, row: int, g: ResolvedGroup, filt: ua.DataChangeFilter | None
                      ) -> ua.MonitoredItemCreateRequest:
        params = ua.MonitoringParameters(ClientHandle=row, SamplingInterval=float(g.sampling_interval_ms),
                                         QueueSize=g.queue_size, DiscardOldest=True)
        if filt is not None:
            params.Filter = filt
        return ua.MonitoredItemCreateRequest(
            ItemToMonitor=ua.ReadValueId(NodeId=self._nodeids[row], AttributeId=ua.AttributeIds.Value),
            MonitoringMode=ua.MonitoringMode.Reporting,
            RequestedParameters=params,
        )

    def _on_publish(self, sub: _Sub, result: ua.PublishResult) -> None:
        """asyncua's publish loop calls this with every PublishResult of ``sub`` (data or keep-alive)."""
        sub.last_publish_s = time.monotonic()
        data = result.NotificationMessage.NotificationData
        if not data:
            return  # keep-alive
        try:
            for notif in data:
                if isinstance(notif, ColumnsNotification):  # decoded from the bytes (opcua_fastpath)
                    self.fast_notifications += 1
                    if len(notif):
                        sub.has_data = True
                        self._ingest_columns(notif.handles, notif.decoded(time.time_ns()))
                elif isinstance(notif, ua.DataChangeNotification):
                    if notif.MonitoredItems:
                        sub.has_data = True
                        self._ingest(notif.MonitoredItems)
                elif isinstance(notif, ua.StatusChangeNotification):
                    if not notif.Status.is_good():
                        # BadTimeout: the server dropped the subscription; BadShutdown: asyncua lost the link.
                        sub.restart = True
                        log.info("%s: subscription %d status %s", self._name, sub.subscription_id,
                                 notif.Status.name)
        except Exception:
            self.stats.errors += 1
            log.exception("%s: failed to handle a notification of subscription %d", self._name, sub.subscription_id)

    def _ingest(self, items: list[ua.MonitoredItemNotification]) -> None:
        """asyncua-decoded items (the fallback path): columns from the objects."""
        handles = np.fromiter((it.ClientHandle for it in items), dtype=np.int64, count=len(items))
        self._ingest_columns(handles, decode_datavalues([it.Value for it in items], time.time_ns()))

    def _ingest_columns(self, handles: np.ndarray, dec: Decoded) -> None:
        ts, values, quality, status = dec.ts_ns, dec.value, dec.quality, dec.status
        mine = self._mine
        if handles.min() < 0 or handles.max() >= mine.shape[0] or not mine[handles].all():
            ok = (handles >= 0) & (handles < mine.shape[0])
            ok[ok] = mine[handles[ok]]
            dropped = len(handles) - int(np.count_nonzero(ok))
            self.unknown_handles += dropped
            self.stats.errors += dropped
            self.stats.malformed += dropped
            log.debug("%s: %d notifications for unknown client handles", self._name, dropped)
            handles, ts, values, quality, status = handles[ok], ts[ok], values[ok], quality[ok], status[ok]
            if not len(handles):
                return
            refused = int(np.count_nonzero(status == Status.BAD_TYPE_MISMATCH)) if dec.unconvertible else 0
            dec = Decoded(ts, values, quality, int(np.count_nonzero(quality == _BAD)) - refused, refused, status)
        self._count_bad(dec)
        rows = handles.astype(np.uint32)
        np.maximum.at(self._last_ts, rows, ts)
        if self._backfills_pending:
            np.minimum.at(self._first_live, rows, ts)
        self._deliver(ts, rows, values, quality, status=status)

    def _count_bad(self, dec: Decoded) -> None:
        """Bad statuses by code (a sensor state, not our error); unconvertible values are a config error."""
        if dec.bad_status or dec.unconvertible:
            self.stats.count_bad_status(dec.status[dec.quality == _BAD])
        if dec.unconvertible:
            self.unconvertible += dec.unconvertible
            self.stats.malformed += dec.unconvertible
            self.stats.errors += dec.unconvertible

    def _count_status(self, code: int, n: int) -> None:
        by = self.stats.bad_by_status
        by[code] = by.get(code, 0) + n

    # ---- watchdog -------------------------------------------------------------------------------
    async def _watch(self, client: Client, lost: asyncio.Event, tg: asyncio.TaskGroup) -> None:
        """Until the session is lost: restart subscriptions that went silent or were dropped by the server."""
        period_s = 0.5 if not self._subs else min(0.5, min(sub.stale_after_s for sub in self._subs) / 4)
        while True:
            try:
                await asyncio.wait_for(lost.wait(), timeout=period_s)
            except TimeoutError:
                pass
            raise_if_cancelled()  # Python 3.11's wait_for can swallow a cancel that lands as it times out
            if lost.is_set():
                raise _SessionLost("connection lost")
            now = time.monotonic()
            for sub in self._subs:
                silent_s = now - sub.last_publish_s
                if not sub.restart and silent_s < sub.stale_after_s:
                    continue
                if not sub.restart:
                    log.warning("%s: subscription %d silent for %.1f s (limit %.1f s); re-creating it",
                                self._name, sub.subscription_id, silent_s, sub.stale_after_s)
                self.watchdog_restarts += 1
                self.stats.errors += 1
                old = sub.subscription_id
                try:
                    await client.uaclient.delete_subscriptions([old])
                except Exception:
                    log.debug("%s: deleting subscription %d failed", self._name, old, exc_info=True)
                client.uaclient._subscription_callbacks.pop(old, None)  # asyncua keeps it when delete failed
                if lost.is_set():
                    raise _SessionLost("connection lost")
                since = self._last_ts.copy()
                restarted_ns = time.time_ns()
                if self.settings.backfill:
                    self._backfills_pending += 1
                await self._create_subscription(client, sub)  # failure -> reconnect
                if self.settings.backfill:  # what the silent subscription missed, where the server keeps it
                    tg.create_task(self._backfill(client, since, restarted_ns, [sub]),
                                   name=f"{self._name} backfill sub {sub.subscription_id}")

    # ---- polling --------------------------------------------------------------------------------
    async def _poll_loop(self, client: Client, group: ResolvedGroup, lost: asyncio.Event) -> None:
        per_read = self._limit("max_nodes_per_read", self.settings.max_nodes_per_read)
        chunks: list[tuple[np.ndarray, ua.ReadParameters]] = []
        for a in range(0, len(group.rows), per_read):
            rows = group.rows[a : a + per_read]
            params = ua.ReadParameters(TimestampsToReturn=ua.TimestampsToReturn.Neither)
            params.NodesToRead = [ua.ReadValueId(NodeId=self._nodeids[r], AttributeId=ua.AttributeIds.Value)
                                  for r in rows.tolist()]
            chunks.append((rows, params))
        in_flight = asyncio.Semaphore(self.settings.reads_in_flight)
        period_ns = group.poll_period_ms * 1_000_000
        next_tick = next_tick_ns(time.time_ns(), group.poll_period_ms)
        while not lost.is_set():
            delay_ns = next_tick - time.time_ns()
            if delay_ns > 0:
                await asyncio.sleep(delay_ns / 1e9)
            tick = next_tick
            started = time.perf_counter()
            self.stats.polls += 1
            self.stats.last_poll_ns = tick
            ok = await asyncio.gather(*(self._read_chunk(client, rows, params, tick, in_flight)
                                        for rows, params in chunks))
            raise_if_cancelled()
            self.stats.failing_blocks = ok.count(False)
            if all(ok):
                self.stats.last_good_poll_ns = tick
            self.stats.last_poll_duration_s = elapsed_s = time.perf_counter() - started
            self.stats.poll_duration.observe(elapsed_s)
            next_tick = tick + period_ns
            now = time.time_ns()
            if now >= next_tick:
                skipped = (now - next_tick) // period_ns + 1
                self.stats.missed_ticks += skipped
                next_tick += skipped * period_ns

    async def _read_chunk(self, client: Client, rows: np.ndarray, params: ua.ReadParameters, tick_ns: int,
                          in_flight: asyncio.Semaphore) -> bool:
        """Read one chunk of a poll and deliver it (BAD on failure); whether the read succeeded."""
        async with in_flight:
            try:
                answer: ColumnsNotification | list[ua.DataValue]
                if self.fast_decode:
                    answer = await fast_read(client.uaclient.session, params)
                else:
                    answer = await client.uaclient.read(params)
                if len(answer) != len(rows):
                    raise ua.UaError(f"Read answered {len(answer)} values for {len(rows)} nodes")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.errors += 1
                if isinstance(exc, TimeoutError):
                    self.stats.timeouts += 1
                    code = Status.BAD_TIMEOUT
                else:
                    self.stats.exceptions += 1
                    code = exc.code if isinstance(exc, ua.UaStatusCodeError) else Status.BAD_COMMUNICATION_ERROR
                self._count_status(code, len(rows))
                log.debug("%s: read of %d nodes failed: %r", self._name, len(rows), exc)
                self._deliver(tick_ns, rows, np.full(len(rows), np.nan), _BAD, status=code)
                return False
        if isinstance(answer, ColumnsNotification):
            dec = finish(answer.codes, answer.values, answer.convertible, np.full(len(rows), tick_ns, dtype=np.int64))
        else:
            dec = decode_datavalues(answer, tick_ns, use_timestamps=False)
        self._count_bad(dec)
        self._deliver(tick_ns, rows, dec.value, dec.quality, status=dec.status)
        return True

    # ---- back-fill ------------------------------------------------------------------------------
    async def _backfill(self, client: Client, last_ts: np.ndarray, until_ns: int, subs: list[_Sub] | None = None
                        ) -> None:
        """HistoryRead each subscribed signal's gap (last sample, new subscription) and deliver it marked.

        ``subs``: the subscriptions whose signals to fill (default: all of the session's).
        """
        try:  # the caller counted this back-fill in _backfills_pending before (re)creating the subscriptions
            await self._backfill_inner(client, last_ts, until_ns, self._subs if subs is None else subs)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.stats.errors += 1
            log.warning("%s: history back-fill failed; the gap stays open", self._name, exc_info=True)
        finally:
            self._backfills_pending -= 1

    async def _backfill_inner(self, client: Client, last_ts: np.ndarray, until_ns: int, subs: list[_Sub]) -> None:
        # Wait for the new subscriptions' initial values: history is then read up to (excluding) the first
        # live sample of each signal, so the value the server re-sends on subscription is not delivered twice.
        longest_s = max((sub.group.publishing_interval_ms for sub in subs), default=0) / 1000.0
        deadline = time.monotonic() + 3 * longest_s + self.settings.timeout_s
        while not all(sub.has_data for sub in subs) and time.monotonic() < deadline:
            await asyncio.sleep(min(0.05, longest_s))
        rows_all = np.concatenate([sub.accepted for sub in subs]) if subs else np.zeros(0, np.uint32)
        starts = last_ts[rows_all]
        floor_ns = until_ns - int(self.settings.backfill_max_s * 1e9)
        keep = starts > 0
        rows_all, starts = rows_all[keep], np.maximum(starts[keep], floor_ns)
        if rows_all.size == 0:
            return
        per_call = self._limit("max_nodes_per_history_read", self.settings.max_nodes_per_read)
        end = datetime.fromtimestamp(until_ns / 1e9, tz=UTC)
        total = 0
        # Work items: row -> (start of the next read, continuation point, newest timestamp delivered). Rows
        # that share a start go in one request. A page that is full but has no continuation point may be
        # truncated (asyncua's own server does that): the row is read again from its newest timestamp.
        after = {int(r): int(last_ts[r]) for r in rows_all.tolist()}
        first_start = int(starts.min())
        pending: list[tuple[int, int, bytes | None]] = [(r, first_start, None) for r in after]
        while pending:
            by_start: dict[int, list[tuple[int, bytes | None]]] = {}
            for row, start_ns, cp in pending:
                by_start.setdefault(start_ns, []).append((row, cp))
            pending = []
            for start_ns, entries in by_start.items():
                details = ua.ReadRawModifiedDetails(
                    IsReadModified=False, StartTime=datetime.fromtimestamp(start_ns / 1e9, tz=UTC), EndTime=end,
                    NumValuesPerNode=_HISTORY_PAGE, ReturnBounds=False)
                for a in range(0, len(entries), per_call):
                    chunk = entries[a : a + per_call]
                    params = ua.HistoryReadParameters(
                        HistoryReadDetails=details, TimestampsToReturn=ua.TimestampsToReturn.Both,
                        ReleaseContinuationPoints=False,
                        NodesToRead=[ua.HistoryReadValueId(NodeId=self._nodeids[r], ContinuationPoint=cp)
                                     for r, cp in chunk])
                    results = await client.uaclient.history_read(params)
                    for (row, _), res in zip(chunk, results, strict=True):
                        if not res.StatusCode.is_good():
                            self.backfill_unsupported += 1
                            continue
                        dvs = getattr(res.HistoryData, "DataValues", None) or []
                        first_live = int(self._first_live[row])
                        upper = first_live if first_live != _NEVER else until_ns
                        n, newest = self._deliver_history(row, dvs, after[row], upper)
                        total += n
                        if res.ContinuationPoint:
                            pending.append((row, start_ns, res.ContinuationPoint))
                        elif len(dvs) >= _HISTORY_PAGE and start_ns < newest < upper:
                            pending.append((row, newest, None))
                        after[row] = max(after[row], newest)
        self.backfilled += total
        log.info("%s: back-filled %d samples of %d signals from history", self._name, total, len(rows_all))

    def _deliver_history(self, row: int, dvs: list[ua.DataValue], after_ns: int, before_ns: int) -> tuple[int, int]:
        """Deliver one signal's history samples with after_ns < ts < before_ns; (how many, newest ts of the page)."""
        if not dvs:
            return 0, 0
        dec = decode_datavalues(dvs, before_ns)
        ts = np.broadcast_to(dec.ts_ns, dec.value.shape)
        newest = int(ts.max())
        keep = (ts > after_ns) & (ts < before_ns)
        m = int(np.count_nonzero(keep))
        if not m:
            return 0, newest
        ts, values, quality = np.ascontiguousarray(ts[keep]), dec.value[keep], dec.quality[keep]
        rows = np.full(m, row, dtype=np.uint32)
        if self.backfill_sink is not None:
            self._deliver(ts, rows, values, quality, sink=self.backfill_sink)
        else:
            quality[quality == _GOOD] = BACKFILL_QUALITY
            self._deliver(ts, rows, values, quality, status=dec.status[keep])
        return m, newest

    def _log_went_bad(self, rows: np.ndarray, codes: np.ndarray) -> None:
        """One line per delivery in which signals turned BAD, naming them, their nodes and the status."""
        where = [self._nodeids[r].to_string() if r in self._nodeids else "?" for r in rows[:5].tolist()]
        log.warning("%s: %d signal%s reported BAD by the server: %s; check the sensors and their wiring, or the "
                    "node's configuration on the server (state in source_signals_bad; logged on change)",
                    self._name, len(rows), "" if len(rows) == 1 else "s",
                    describe_signals(self.ids, rows, codes, where))

    # ---- delivery -------------------------------------------------------------------------------
    def _deliver(self, ts_ns: np.ndarray | int, rows: np.ndarray, values: np.ndarray, quality: np.ndarray | int,
                 *, sink: Sink | None = None, status: np.ndarray | int = 0) -> None:
        stats = self.stats
        n = len(rows)
        if np.ndim(quality) == 0:
            n_bad = n if int(quality) == _BAD else 0  # type: ignore[arg-type]
        else:
            n_bad = int(np.count_nonzero(quality == _BAD))
        stats.samples_good += n - n_bad
        stats.samples_bad += n_bad
        went_bad = stats.bad_signals.update(rows, quality)
        if went_bad is not None and np.ndim(status) == 1:  # the server's verdict (a loss is logged elsewhere)
            self._log_went_bad(rows[went_bad], status[went_bad])  # type: ignore[index]
        if n_bad < n:
            newest = int(np.max(ts_ns)) if np.ndim(ts_ns) else int(ts_ns)  # type: ignore[arg-type]
            if newest > stats.last_sample_ns:
                stats.last_sample_ns = newest
        try:
            if sink is None and self.status_sink is not None:
                self.status_sink(ts_ns, rows, values, quality, status)
            else:
                (sink or self.sink)(ts_ns, rows, values, quality)
        except Exception:
            stats.errors += 1
            if not self._sink_failing:
                self._sink_failing = True
                log.exception("%s: sink failed; these samples are lost (logged once per streak)", self._name)
            return
        self._sink_failing = False


def _raised_in(exc: BaseException, function: str) -> bool:
    """True when ``function`` is on the traceback of ``exc`` (where it was raised, not what it says)."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == function:
            return True
        tb = tb.tb_next
    return False
