"""OpcuaSource against real asyncua servers on free loopback ports (started by the tests themselves)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from asyncua import Server, ua

from edge.config import OpcuaSettings
from edge.sources.opcua import OpcuaSource
from edge.sources.stats import SourceStats
from plantwire.plant import PlantConfig, Quality, SignalTable, expand
from tests.asyncua_fast import fast_init

pytestmark = pytest.mark.integration

NAMESPACE = "urn:plantwire:test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_table(port: int, machines: int = 3, signals: int = 5) -> SignalTable:
    """One OPC-UA device with ``machines`` x ``signals`` signals named ``m<i>.s<j>``."""
    return expand(PlantConfig.model_validate({
        "site": "test",
        "templates": {"t": {"signals": [{"name": "s{j}", "count": signals}]}},
        "devices": [{"name": "opc", "protocol": "opcua", "port": port, "namespace": NAMESPACE}],
        "machines": [{"name": "m{i}" if machines > 1 else "m1", "template": "t", "count": machines, "device": "opc"}],
    }))


class OpcServer:
    """A minimal asyncua server holding one Double variable per signal id (``ns=<idx>;s=<id>``)."""

    def __init__(self, port: int, ids: list[str], *, skip: frozenset[str] = frozenset(),
                 history: bool = False, limits: dict[int, int] | None = None,
                 types: dict[str, tuple[Any, ua.VariantType]] | None = None, history_db: Any = None) -> None:
        self.port = port
        self.ids = [i for i in ids if i not in skip]
        self.history = history
        self.limits = limits or {}
        self.types = types or {}
        self.history_db = history_db  # SQLite file: history survives a restart (as on PLCs that keep it on disk)
        self.server: Server | None = None
        self.nodes: dict[str, Any] = {}

    async def start(self) -> None:
        server = Server()
        await fast_init(server)  # a fresh server, without rebuilding the standard address space (tests/asyncua_fast.py)
        if self.history_db is not None:
            from asyncua.server.history_sql import HistorySQLite

            class StringIdHistory(HistorySQLite):  # asyncua 2.1 quotes string ids into table names, then refuses them
                def _get_table_name(self, node_id: ua.NodeId) -> str:
                    return f"{node_id.NamespaceIndex}_{node_id.Identifier}"

            storage = StringIdHistory(str(self.history_db))
            await storage.init()
            server.iserver.history_manager.set_storage(storage)
        server.set_endpoint(f"opc.tcp://127.0.0.1:{self.port}/plantwire")
        # An unrelated namespace first, so the device's index is not trivially 1 or 2.
        await server.register_namespace("urn:other")
        idx = await server.register_namespace(NAMESPACE)
        objects = server.nodes.objects
        self.nodes = {}
        for sid in self.ids:
            initial, vtype = self.types.get(sid, (0.0, ua.VariantType.Double))
            self.nodes[sid] = await objects.add_variable(ua.NodeId(sid, idx), sid, ua.Variant(initial, vtype))
        for node_id, value in self.limits.items():
            await server.get_node(ua.NodeId(node_id)).write_value(ua.Variant(value, ua.VariantType.UInt32))
        if self.history:
            await server.historize_node_data_change(list(self.nodes.values()), count=10_000)
        await server.start()
        self.server = server

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    async def write(self, sid: str, value: Any, status: int = ua.StatusCodes.Good,
                    variant_type: ua.VariantType = ua.VariantType.Double) -> None:
        dv = ua.DataValue(ua.Variant(value, variant_type), StatusCode=ua.StatusCode(status),
                          SourceTimestamp=datetime.now(UTC))
        await self.nodes[sid].write_value(dv)

    async def write_all(self, values: dict[str, float]) -> None:
        now = datetime.now(UTC)  # asyncua's history cannot read back values without a SourceTimestamp
        for sid, v in values.items():
            await self.nodes[sid].write_value(ua.DataValue(ua.Variant(v, ua.VariantType.Double), SourceTimestamp=now))

    def subscription_count(self) -> int:
        assert self.server is not None
        return len(self.server.iserver.subscription_service.subscriptions)


@dataclass
class Recorder:
    """A sink that keeps copies of every chunk (one tuple per sink call)."""

    chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)

    def __call__(self, ts: Any, rows: np.ndarray, values: np.ndarray, quality: Any) -> None:
        n = len(rows)
        self.chunks.append((np.broadcast_to(np.asarray(ts, dtype=np.int64), (n,)).copy(), rows.copy(),
                            values.copy(), np.broadcast_to(np.asarray(quality, dtype=np.uint8), (n,)).copy()))

    def columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if not self.chunks:
            return (np.zeros(0, np.int64), np.zeros(0, np.uint32), np.zeros(0), np.zeros(0, np.uint8))
        return tuple(np.concatenate(c) for c in zip(*self.chunks, strict=True))  # type: ignore[return-value]

    def latest(self) -> dict[int, tuple[float, int]]:
        """row -> (value, quality) of the last sample delivered for it."""
        _, rows, values, quality = self.columns()
        return {int(r): (float(v), int(q)) for r, v, q in zip(rows, values, quality, strict=True)}


async def wait_for(cond: Callable[[], bool], timeout_s: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(source: OpcuaSource) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(source.run(), name="opcua source under test")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled()  # run() never ends any other way


def run(coro: Awaitable[None]) -> None:
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    asyncio.run(coro)  # type: ignore[arg-type]


FAST = OpcuaSettings(publishing_interval_ms=50, timeout_s=2.0, reconnect_initial_s=0.2, reconnect_max_s=1.0,
                     keepalive_count=5, lifetime_count=15)


def settings(**kw: Any) -> OpcuaSettings:
    return FAST.model_copy(update=kw)


# --------------------------------------------------------------------------------------------
def test_values_arrive_with_their_rows_values_and_quality() -> None:
    async def main() -> None:
        port = free_port()
        table = make_table(port)
        server = OpcServer(port, table.ids)
        await server.start()
        sink, stats = Recorder(), SourceStats()
        source = OpcuaSource(table.devices[0], table, settings(), sink, stats)
        async with running(source):
            await wait_for(lambda: stats.samples_good >= len(table), what="initial values")
            t0 = time.time_ns()
            expected = {sid: 10.0 * row + 0.25 for row, sid in enumerate(table.ids)}
            await server.write_all(expected)
            await wait_for(lambda: all(sink.latest().get(r, (0,))[0] == v
                                       for r, v in enumerate(expected.values())), what="written values")
            assert stats.connected and stats.errors == 0 and stats.samples_bad == 0
            ts, rows, _, quality = sink.columns()
            assert set(rows.tolist()) == set(range(len(table)))
            assert np.all(quality == Quality.GOOD)
            recent = ts > t0 - 1_000_000_000
            assert recent.any() and np.all(ts[recent] < time.time_ns())  # source timestamps, ns since epoch
            assert stats.last_sample_ns >= t0
            assert source.fast_notifications > 0 and source.fast_decode_errors == 0  # the byte-level path ran
        await server.stop()

    run(main())


def test_status_codes_and_types_map_to_quality() -> None:
    async def main() -> None:
        port = free_port()
        table = make_table(port, machines=1, signals=6)
        server = OpcServer(port, table.ids, types={"m1.s3": (False, ua.VariantType.Boolean),
                                                   "m1.s4": (0, ua.VariantType.Int32),
                                                   "m1.s5": ("", ua.VariantType.String)})
        await server.start()
        sink, stats = Recorder(), SourceStats()
        source = OpcuaSource(table.devices[0], table, settings(), sink, stats)
        async with running(source):
            await wait_for(lambda: stats.samples_good + stats.samples_bad >= len(table), what="initial values")
            assert stats.samples_bad == 1  # the String node's initial value
            await server.write("m1.s1", 1.5, ua.StatusCodes.BadSensorFailure)
            await server.write("m1.s2", 2.5, ua.StatusCodes.UncertainLastUsableValue)
            await server.write("m1.s3", True, variant_type=ua.VariantType.Boolean)
            await server.write("m1.s4", -7, variant_type=ua.VariantType.Int32)
            await server.write("m1.s5", "12.5", variant_type=ua.VariantType.String)  # not a number: BAD
            await server.write("m1.s6", 6.5)
            await wait_for(lambda: sink.latest().get(5, (0.0, 0))[0] == 6.5, what="last write")
            latest = sink.latest()
            v, q = latest[0]
            assert q == Quality.BAD and np.isnan(v)
            assert latest[1] == (2.5, Quality.UNCERTAIN)
            assert latest[2] == (1.0, Quality.GOOD)
            assert latest[3] == (-7.0, Quality.GOOD)
            v, q = latest[4]
            assert q == Quality.BAD and np.isnan(v)
            assert latest[5] == (6.5, Quality.GOOD)
            # A Bad status is the sensor's state, kept by code (issue 14), not an exception of ours; a String
            # node is a configuration error (malformed, BadTypeMismatch).
            assert stats.samples_bad == 3 and stats.exceptions == 0 and stats.malformed == 2 and stats.errors == 2
            assert stats.bad_by_status == {ua.StatusCodes.BadSensorFailure: 1, ua.StatusCodes.BadTypeMismatch: 2}
            assert stats.bad_signals.count == 2 and stats.bad_signals.entered == 2 and stats.bad_signals.left == 0
            assert source.unconvertible == 2
        await server.stop()

    run(main())


def test_more_items_than_the_cap_make_several_subscriptions() -> None:
    async def main() -> None:
        port = free_port()
        table = make_table(port, machines=4, signals=5)  # 20 signals
        limit = ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall
        server = OpcServer(port, table.ids, limits={limit: 3})
        await server.start()
        sink, stats = Recorder(), SourceStats()
        source = OpcuaSource(table.devices[0], table, settings(max_items_per_subscription=7), sink, stats)
        async with running(source):
            await wait_for(lambda: stats.samples_good >= len(table), what="initial values")
            assert source.subscriptions == 3 and server.subscription_count() == 3  # 7 + 7 + 6
            assert source.server_limits["max_monitored_items_per_call"] == 3
            await server.write_all({sid: float(row) for row, sid in enumerate(table.ids)})
            await wait_for(lambda: all(sink.latest().get(r, (-1.0,))[0] == r for r in range(len(table))),
                           what="values on every subscription")
        await server.stop()

    run(main())


def test_refused_items_are_reported_by_signal_id() -> None:
    async def main() -> None:
        port = free_port()
        table = make_table(port, machines=2, signals=3)
        server = OpcServer(port, table.ids, skip=frozenset({"m2.s2"}))
        await server.start()
        sink, stats = Recorder(), SourceStats()
        source = OpcuaSource(table.devices[0], table, settings(), sink, stats)
        async with running(source):
            await wait_for(lambda: stats.samples_good >= len(table) - 1, what="initial values")
            assert source.refused == {"m2.s2": "BadNodeIdUnknown"}
            row = table.ids.index("m2.s2")
            v, q = sink.latest()[row]
            assert q == Quality.BAD and np.isnan(v)
            assert stats.errors == 1 and stats.samples_bad == 1
        await server.stop()

    run(main())


def test_reconnects_after_the_server_restarts() -> None:
    async def main() -> None:
        port = free_port()
        table = make_table(port, machines=2, signals=3)
        server = OpcServer(port, table.ids)
        await server.start()
        sink, stats = Recorder(), SourceStats()
        source = OpcuaSource(table.devices[0], table, settings(), sink, stats)
        async with running(source):
            await wait_for(lambda: stats.samples_good >= len(table), what="initial values")
            await server.stop()
            await wait_for(lambda: not stats.connected, what="loss noticed")
            # The outage is visible: one BAD sample per signal.
            await wait_for(lambda: all(q == Quality.BAD for _, q in sink.latest().values()), what="BAD marks")
            await wait_for(lambda: stats.connect_failures >= 1, what="a failed connect while the server is down")
            await server.start()
            await wait_for(lambda: stats.connected, timeout_s=30, what="reconnect")
            await server.write_all({sid: 100.0 + row for row, sid in enumerate(table.ids)})
            await wait_for(lambda: all(sink.latest().get(r, (0.0,))[0] == 100.0 + r for r in range(len(table))),
                           what="data after the restart")
            assert stats.reconnects == 1 and stats.connect_failures >= 1
            assert source.subscriptions == 1 and server.subscription_count() == 1
        await server.stop()

    run(main())


def test_watchdog_recreates_a_silent_subscription_and_back_fills_it() -> None:
    async def main() -> None:
        port = free_port()
        table = make_table(port, machines=1, signals=3)
        server = OpcServer(port, table.ids, history=True)
        await server.start()
        sink, stats = Recorder(), SourceStats()
        source = OpcuaSource(table.devices[0], table, settings(keepalive_count=3, lifetime_count=100), sink, stats)
        async with running(source):
            await wait_for(lambda: stats.samples_good >= len(table), what="initial values")
            assert server.server is not None
            service = server.server.iserver.subscription_service
            # The server forgets the subscription while the connection stays up: only silence tells.
            ours = [sub.subscription_id for sub in source._subs]  # not the server's own history subscription
            await service.delete_subscriptions(ours)
            for k in (1, 2):  # written while nobody listens; the server historizes them
                for row, sid in enumerate(table.ids):
                    await server.write(sid, 10.0 * k + row)
                await asyncio.sleep(0.05)
            await wait_for(lambda: source.watchdog_restarts >= 1, timeout_s=20, what="watchdog restart")
            await wait_for(lambda: source.subscriptions == 1 and source._subs[0].subscription_id not in ours
                           and source._subs[0].has_data, what="subscription re-created, initial values in")
            await server.write_all({sid: 42.0 for sid in table.ids})

            def live_again() -> bool:  # (back-filled samples may be delivered after live ones: look at all)
                _, rows, values, _ = sink.columns()
                return set(rows[values == 42.0].tolist()) == set(range(len(table)))

            await wait_for(live_again, what="data again")
            assert stats.reconnects == 0 and stats.connected
            await wait_for(lambda: source.backfilled >= len(table), what="back-fill")
            # Round 1 comes from history (back-filled, UNCERTAIN); round 2 is the re-created subscription's
            # initial value.
            _, rows, values, quality = sink.columns()
            for row in range(len(table)):
                assert quality[(rows == row) & (values == 10.0 + row)].tolist() == [Quality.UNCERTAIN]
                assert quality[(rows == row) & (values == 20.0 + row)].tolist() == [Quality.GOOD]
            assert source.backfilled == len(table)
        await server.stop()

    run(main())


# --------------------------------------------------------------------------------------------
class Proxy:
    """A TCP forwarder that can cut the line (all connections dropped, new ones refused) and restore it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


def test_outage_gap_is_back_filled_from_history(monkeypatch: pytest.MonkeyPatch) -> None:
    import edge.sources.opcua as opcua_module

    monkeypatch.setattr(opcua_module, "_HISTORY_PAGE", 2)  # the gap spans several pages (continuation points)

    async def main() -> None:
        port = free_port()
        proxy = Proxy(port)
        table = make_table(proxy.port, machines=1, signals=4)
        server = OpcServer(port, table.ids, history=True)
        await server.start()
        await proxy.start()
        sink, stats = Recorder(), SourceStats()
        source = OpcuaSource(table.devices[0], table, settings(), sink, stats)
        written: list[tuple[int, float]] = []
        async with running(source):
            await wait_for(lambda: stats.samples_good >= len(table), what="initial values")

            async def write_round(k: int) -> None:
                for row, sid in enumerate(table.ids):
                    await server.write(sid, 1000.0 * k + row)
                    written.append((row, 1000.0 * k + row))

            await write_round(1)
            await wait_for(lambda: sink.latest()[len(table) - 1][0] == 1000.0 + len(table) - 1, what="live data")
            await proxy.cut()
            await wait_for(lambda: not stats.connected, what="loss noticed")
            for k in range(2, 6):  # the gap: the server keeps writing and historizing
                await write_round(k)
                await asyncio.sleep(0.05)
            await proxy.start()
            await wait_for(lambda: source.backfilled > 0, timeout_s=30, what="back-fill")
            await write_round(6)
            await wait_for(lambda: sink.latest()[len(table) - 1][0] == 6000.0 + len(table) - 1, what="live again")
            _, rows, values, quality = sink.columns()
            got = {(int(r), float(v)) for r, v in zip(rows, values, strict=True) if not np.isnan(v)}
            missing = [w for w in written if w not in got]
            assert not missing, f"gap samples missing: {missing}"
            gap = np.isin(values, [1000.0 * k + r for k in range(2, 6) for r in range(len(table))])
            last = values == 5000.0 + np.arange(len(table))[rows.astype(np.int64) % len(table)]
            # Back-filled samples are marked; the last gap value is the subscription's initial value (live).
            assert np.all(quality[gap & ~last] == Quality.UNCERTAIN)
            assert np.all(quality[last] == Quality.GOOD) and np.count_nonzero(last) == len(table)  # not twice
            assert source.backfilled == 3 * len(table) and stats.reconnects == 1
        await proxy.cut()
        await server.stop()

    run(main())


def test_server_restart_with_persistent_history_leaves_no_gap(tmp_path: Any) -> None:
    """The issue's scenario: a server restarts mid-run; values it recorded before we were back are back-filled."""

    async def main() -> None:
        port = free_port()
        table = make_table(port, machines=1, signals=3)
        server = OpcServer(port, table.ids, history=True, history_db=tmp_path / "history.db")
        await server.start()
        sink, stats = Recorder(), SourceStats()
        cfg = settings(reconnect_initial_s=0.5, reconnect_max_s=0.5, reconnect_jitter=0.0)
        source = OpcuaSource(table.devices[0], table, cfg, sink, stats)
        # The restarted server must record values before the gateway is back. A slow back-off raced with a slow
        # server start on a loaded box (the gateway came back before the writes); instead, reconnect attempts
        # fail as refused while the gate is shut, as if the server were still unreachable.
        gate = asyncio.Event()
        gate.set()
        real_session = source._session

        async def gated_session() -> None:
            if not gate.is_set():
                raise ConnectionRefusedError("held off by the test")
            await real_session()

        source._session = gated_session  # type: ignore[method-assign]
        written: list[tuple[int, float]] = []

        async def write_round(k: int) -> None:
            for row, sid in enumerate(table.ids):
                await server.write(sid, 100.0 * k + row)
                written.append((row, 100.0 * k + row))

        async with running(source):
            await wait_for(lambda: stats.samples_good >= len(table), what="initial values")
            await write_round(1)
            await wait_for(lambda: sink.latest()[len(table) - 1][0] == 100.0 + len(table) - 1, what="live data")
            await server.stop()
            await wait_for(lambda: not stats.connected, what="loss noticed")
            gate.clear()
            await server.start()
            for k in (2, 3, 4):  # recorded while the gateway is still backing off
                await write_round(k)
                await asyncio.sleep(0.05)
            assert not stats.connected
            gate.set()
            await wait_for(lambda: source.backfilled > 0, timeout_s=30, what="back-fill")
            await write_round(5)
            await wait_for(lambda: sink.latest()[len(table) - 1][0] == 500.0 + len(table) - 1, what="live again")
            _, rows, values, _ = sink.columns()
            got = {(int(r), float(v)) for r, v in zip(rows, values, strict=True) if not np.isnan(v)}
            assert [w for w in written if w not in got] == []
            assert stats.reconnects == 1
        await server.stop()

    run(main())


def test_poll_groups_read_in_bulk_on_ticks() -> None:
    async def main() -> None:
        port = free_port()
        table = make_table(port, machines=2, signals=5)
        server = OpcServer(port, table.ids)
        await server.start()
        sink, stats = Recorder(), SourceStats()
        cfg = OpcuaSettings.model_validate({**FAST.model_dump(), "max_nodes_per_read": 2, "reads_in_flight": 2,
                                            "groups": [{"name": "slow", "match": ["m2.*"], "mode": "poll",
                                                        "poll_period_ms": 100}]})
        source = OpcuaSource(table.devices[0], table, cfg, sink, stats)
        polled = [table.ids.index(f"m2.s{j}") for j in range(1, 6)]
        assert [g.name for g in source.groups] == ["slow", "default"]
        async with running(source):
            await server.write_all({sid: 7.0 + row for row, sid in enumerate(table.ids)})
            await wait_for(lambda: stats.polls >= 3, what="polls")
            await wait_for(lambda: all(sink.latest().get(r, (0.0,))[0] == 7.0 + r for r in range(len(table))),
                           what="values of both groups")
            assert source.subscriptions == 1  # only the default group subscribes
            ts, rows, _, quality = sink.columns()
            mask = np.isin(rows, polled)
            assert np.all(ts[mask] % 100_000_000 == 0)  # polled samples carry their wall-clock tick
            assert np.all(quality[mask] == Quality.GOOD)
            # Each poll delivers every polled signal, in chunks of max_nodes_per_read.
            per_tick = np.unique(ts[mask], return_counts=True)[1]
            assert np.all(per_tick[:-1] == len(polled))
        await server.stop()

    run(main())


def test_groups_resolve_first_match_and_inherit() -> None:
    port = free_port()
    table = make_table(port, machines=2, signals=3)
    cfg = OpcuaSettings.model_validate({
        "publishing_interval_ms": 1000, "sampling_interval_ms": 250, "deadband": "absolute", "deadband_value": 0.5,
        "groups": [
            {"name": "fast", "match": ["m1.s1", "m2.s1"], "publishing_interval_ms": 100, "sampling_interval_ms": 50},
            {"match": ["m1.*"], "deadband": "percent", "deadband_value": 2.0},
        ],
    })
    source = OpcuaSource(table.devices[0], table, cfg, Recorder(), SourceStats())
    by_name = {g.name: g for g in source.groups}
    assert set(by_name) == {"fast", "groups[1]", "default"}
    fast, m1, default = by_name["fast"], by_name["groups[1]"], by_name["default"]
    assert [table.ids[r] for r in fast.rows] == ["m1.s1", "m2.s1"]
    assert [table.ids[r] for r in m1.rows] == ["m1.s2", "m1.s3"]
    assert [table.ids[r] for r in default.rows] == ["m2.s2", "m2.s3"]
    assert (fast.publishing_interval_ms, fast.sampling_interval_ms, fast.queue_size) == (100, 50, 2)
    assert (fast.deadband.value, fast.deadband_value) == ("absolute", 0.5)  # inherited
    assert (m1.deadband.value, m1.deadband_value, m1.queue_size) == ("percent", 2.0, 4)


def test_deadband_filters_small_changes_on_the_server() -> None:
    async def main() -> None:
        port = free_port()
        table = make_table(port, machines=1, signals=2)
        server = OpcServer(port, table.ids)
        await server.start()
        sink, stats = Recorder(), SourceStats()
        cfg = OpcuaSettings.model_validate({**FAST.model_dump(), "groups": [
            {"match": ["m1.s1"], "deadband": "absolute", "deadband_value": 1.0}]})
        source = OpcuaSource(table.devices[0], table, cfg, sink, stats)
        async with running(source):
            await wait_for(lambda: stats.samples_good >= len(table), what="initial values")
            for v in (0.2, 0.4, 5.0, 5.5, 9.0):
                for sid in table.ids:
                    await server.write(sid, v)
                await asyncio.sleep(0.1)
            await wait_for(lambda: sink.latest()[0][0] == 9.0 and sink.latest()[1][0] == 9.0, what="last values")
            _, rows, values, _ = sink.columns()
            assert values[rows == 0].tolist() == [0.0, 5.0, 9.0]  # changes under 1.0 filtered by the server
            assert values[rows == 1].tolist() == [0.0, 0.2, 0.4, 5.0, 5.5, 9.0]
        await server.stop()

    run(main())


# --------------------------------------------------------------------------------------------
class StrictUsers:
    """Server-side user manager: one user name and password, everything else refused."""

    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user, password

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> Any:
        from asyncua.crypto.permission_rules import User, UserRole

        if username == self.user and password == self.password:
            return User(role=UserRole.User)
        return None


def test_sign_and_encrypt_with_generated_certificate_trust_step_and_user(tmp_path: Any,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    from asyncua.common.utils import ServiceError
    from asyncua.crypto import cert_gen, uacrypto
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID

    async def main() -> None:
        port = free_port()
        table = make_table(port, machines=1, signals=3)
        server_key, server_cert = tmp_path / "server.pem", tmp_path / "server.der"
        await cert_gen.setup_self_signed_certificate(server_key, server_cert, "urn:test:server", "localhost",
                                                     [ExtendedKeyUsageOID.SERVER_AUTH], {})
        trusted: set[bytes] = set()

        async def validator(cert: Any, app: Any) -> None:  # the server's trust list
            if cert.public_bytes(serialization.Encoding.DER) not in trusted:
                raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)

        opc = OpcServer(port, table.ids)

        async def start_secure() -> None:
            orig_start = Server.start

            async def start(self: Server) -> None:
                await self.set_application_uri("urn:test:server")
                await self.load_certificate(str(server_cert))
                await self.load_private_key(str(server_key))
                self.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
                self.set_certificate_validator(validator)
                self.iserver.user_manager = StrictUsers("operator", "s3cret")
                await orig_start(self)

            Server.start = start  # type: ignore[method-assign]
            try:
                await opc.start()
            finally:
                Server.start = orig_start  # type: ignore[method-assign]

        await start_secure()
        env = tmp_path / "opcua.env"
        env.write_text("# OPC-UA login\nOPC_USER=operator\nOPC_PASSWORD='s3cret'\n")
        cert, key = tmp_path / "pki" / "client.der", tmp_path / "pki" / "client.pem"
        cfg = OpcuaSettings.model_validate({**FAST.model_dump(), "security": {
            "mode": "SignAndEncrypt", "certificate": cert, "private_key": key, "credentials_file": env,
            "username_key": "OPC_USER", "password_key": "OPC_PASSWORD"}})
        sink, stats = Recorder(), SourceStats()
        source = OpcuaSource(table.devices[0], table, cfg, sink, stats)
        async with running(source):
            # First run: the pair is generated, the server does not trust it yet and refuses us.
            await wait_for(lambda: stats.connect_failures >= 1, what="refused connect")
            assert cert.exists() and key.exists() and not stats.connected and stats.samples_good == 0
            assert any("BadCertificateUntrusted" in r.getMessage() and str(cert) in r.getMessage()
                       for r in caplog.records), [r.getMessage() for r in caplog.records]
            # The trust step (an operator moves the certificate to the server's trusted list); back-off retries.
            client_cert = await uacrypto.load_certificate(str(cert))
            trusted.add(client_cert.public_bytes(serialization.Encoding.DER))
            await wait_for(lambda: stats.samples_good >= len(table), timeout_s=30, what="secure data")
            assert stats.connected
        # The key is not regenerated on the next start (the server trusts this certificate).
        assert (await uacrypto.load_certificate(str(cert))).public_bytes(serialization.Encoding.DER) in trusted
        await opc.stop()

    caplog.set_level(logging.INFO, logger="edge.sources.opcua")
    run(main())


def test_wrong_password_is_refused_with_a_clear_error(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        port = free_port()
        table = make_table(port, machines=1, signals=2)
        opc = OpcServer(port, table.ids)
        orig_start = Server.start

        async def start(self: Server) -> None:
            self.iserver.user_manager = StrictUsers("operator", "s3cret")
            await orig_start(self)

        Server.start = start  # type: ignore[method-assign]
        try:
            await opc.start()
        finally:
            Server.start = orig_start  # type: ignore[method-assign]
        env = tmp_path / "opcua.env"
        env.write_text("OPC_USER=operator\nOPC_PASSWORD=wrong\n")
        cfg = OpcuaSettings.model_validate({**FAST.model_dump(), "security": {
            "credentials_file": env, "username_key": "OPC_USER", "password_key": "OPC_PASSWORD"}})
        stats = SourceStats()
        source = OpcuaSource(table.devices[0], table, cfg, Recorder(), stats)
        async with running(source):
            await wait_for(lambda: stats.connect_failures >= 2, what="refused logins")
            assert not stats.connected and stats.samples_good == 0
        messages = [r.getMessage() for r in caplog.records if r.name == "edge.sources.opcua"]
        assert any("BadUserAccessDenied" in m or "BadIdentityTokenRejected" in m for m in messages), messages
        await opc.stop()

    caplog.set_level(logging.INFO, logger="edge.sources.opcua")
    run(main())


def test_credentials_come_from_an_env_file_or_the_environment(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge.config import OpcuaSecurity
    from edge.sources.opcua_security import SecurityConfigError, read_credentials

    env = tmp_path / "creds.env"
    env.write_text('# comment\n\nU = "op erator"\nP=pa=ss\n')
    sec = OpcuaSecurity(credentials_file=env, username_key="U", password_key="P")
    assert read_credentials(sec) == ("op erator", "pa=ss")
    monkeypatch.setenv("PW_USER", "u1")
    monkeypatch.delenv("PW_PASS", raising=False)
    with pytest.raises(SecurityConfigError, match="PW_PASS not set in the environment"):
        read_credentials(OpcuaSecurity(username_key="PW_USER", password_key="PW_PASS"))
    monkeypatch.setenv("PW_PASS", "p1")
    assert read_credentials(OpcuaSecurity(username_key="PW_USER", password_key="PW_PASS")) == ("u1", "p1")
    assert read_credentials(OpcuaSecurity()) is None
    env.write_text("no equals sign\n")
    with pytest.raises(SecurityConfigError, match=r"creds.env:1: expected KEY=value"):
        read_credentials(sec)
    # The source checks at construction (start-up), before any network.
    table = make_table(free_port(), machines=1, signals=1)
    with pytest.raises(SecurityConfigError, match=r"creds\.env:1"):
        OpcuaSource(table.devices[0], table, OpcuaSettings(security=sec), Recorder(), SourceStats())


def test_security_settings_are_validated_without_the_network() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="needs certificate and private_key"):
        OpcuaSettings.model_validate({"security": {"mode": "Sign"}})
    with pytest.raises(ValidationError, match="username_key and password_key go together"):
        OpcuaSettings.model_validate({"security": {"username_key": "U"}})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        OpcuaSettings.model_validate({"security": {"password": "plain"}})  # never in the config
    with pytest.raises(ValidationError, match="lifetime_count"):
        OpcuaSettings.model_validate({"keepalive_count": 10, "lifetime_count": 20})


# ---- decoding (no server) -------------------------------------------------------------------
def test_decode_maps_status_types_and_timestamps() -> None:
    from edge.sources.opcua_decode import datetime_to_ns, decode_datavalues

    src = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    srv = datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC)
    dvs = [
        ua.DataValue(ua.Variant(1.5, ua.VariantType.Double), SourceTimestamp=src, ServerTimestamp=srv),
        ua.DataValue(ua.Variant(7, ua.VariantType.UInt16), ServerTimestamp=srv),  # no source time
        ua.DataValue(ua.Variant(True, ua.VariantType.Boolean)),  # no time at all: fallback
        ua.DataValue(ua.Variant(3.0, ua.VariantType.Float), StatusCode=ua.StatusCode(ua.StatusCodes.BadOutOfService)),
        ua.DataValue(ua.Variant(4.0, ua.VariantType.Double),
                     StatusCode=ua.StatusCode(ua.StatusCodes.UncertainSensorNotAccurate)),
        ua.DataValue(ua.Variant([1.0, 2.0], ua.VariantType.Double)),  # an array is not a sample
        ua.DataValue(ua.Variant("5", ua.VariantType.String)),
        ua.DataValue(ua.Variant(None)),
    ]
    dec = decode_datavalues(dvs, fallback_ns=42)
    assert dec.ts_ns.tolist()[:3] == [datetime_to_ns(src), datetime_to_ns(srv), 42]
    assert datetime_to_ns(src) == 1767323045123456000
    assert dec.quality.tolist() == [0, 0, 0, 2, 1, 2, 2, 2]
    assert dec.value[[0, 1, 2, 4]].tolist() == [1.5, 7.0, 1.0, 4.0]
    assert np.isnan(dec.value[[3, 5, 6, 7]]).all()
    assert (dec.bad_status, dec.unconvertible) == (1, 3)
    # The fast path (all numeric) gives the same answer as the slow one for the numeric samples.
    fast = decode_datavalues(dvs[:5], fallback_ns=42)
    assert fast.quality.tolist() == dec.quality.tolist()[:5]
    np.testing.assert_array_equal(fast.value, dec.value[:5])
    polled = decode_datavalues(dvs[:2], fallback_ns=7, use_timestamps=False)
    assert polled.ts_ns.tolist() == [7, 7]


def test_notifications_for_unknown_handles_are_counted_not_delivered() -> None:
    table = make_table(free_port(), machines=2, signals=2)
    sink, stats = Recorder(), SourceStats()
    source = OpcuaSource(table.devices[0], table, FAST, sink, stats)
    items = [ua.MonitoredItemNotification(ClientHandle=h, Value=ua.DataValue(ua.Variant(float(h))))
             for h in (1, 99, 3, 2**31)]
    source._ingest(items)
    _, rows, values, _ = sink.columns()
    assert rows.tolist() == [1, 3] and values.tolist() == [1.0, 3.0]
    assert source.unknown_handles == 2 and stats.malformed == 2 and stats.samples_good == 2


# ---- the byte-level fast path against asyncua + decode_datavalues (the reference) -------------
_SCALARS: list[tuple[ua.VariantType, Callable[[np.random.Generator], Any]]] = [
    (ua.VariantType.Double, lambda r: float(r.normal() * 1e3)),
    (ua.VariantType.Float, lambda r: float(np.float32(r.normal()))),
    (ua.VariantType.Int16, lambda r: int(r.integers(-2**15, 2**15))),
    (ua.VariantType.UInt16, lambda r: int(r.integers(0, 2**16))),
    (ua.VariantType.Int32, lambda r: int(r.integers(-2**31, 2**31))),
    (ua.VariantType.UInt32, lambda r: int(r.integers(0, 2**32))),
    (ua.VariantType.Int64, lambda r: int(r.integers(-2**62, 2**62))),
    (ua.VariantType.UInt64, lambda r: int(r.integers(0, 2**63))),
    (ua.VariantType.SByte, lambda r: int(r.integers(-128, 128))),
    (ua.VariantType.Byte, lambda r: int(r.integers(0, 256))),
    (ua.VariantType.Boolean, lambda r: bool(r.integers(0, 2))),
]
_STATUSES = [ua.StatusCodes.Good, ua.StatusCodes.BadSensorFailure, ua.StatusCodes.UncertainLastUsableValue,
             ua.StatusCodes.GoodClamped, ua.StatusCodes.BadNoCommunication]


def _random_item(r: np.random.Generator, handle: int, *, vtype: int | None, odd: bool) -> Any:
    from datetime import timedelta

    base = datetime(2026, 5, 1, tzinfo=UTC) + timedelta(microseconds=int(r.integers(0, 10**12)))
    k = vtype if vtype is not None else int(r.integers(0, len(_SCALARS)))
    variant_type, make = _SCALARS[k]
    dv = ua.DataValue(ua.Variant(make(r), variant_type))
    if vtype is None or odd:
        if r.random() < 0.3:
            dv.StatusCode = ua.StatusCode(_STATUSES[int(r.integers(0, len(_STATUSES)))])
        dv.SourceTimestamp = base if r.random() < 0.7 else None
        dv.ServerTimestamp = base + timedelta(milliseconds=3) if r.random() < 0.5 else None
        if odd and r.random() < 0.1:
            dv.SourceTimestamp = datetime(1601, 1, 1, tzinfo=UTC)  # the OPC-UA null DateTime
        if odd and r.random() < 0.05:
            dv.Value = ua.Variant("not a number", ua.VariantType.String)
        if odd and r.random() < 0.05:
            dv.Value = ua.Variant([1.0, 2.0], ua.VariantType.Double)
    else:
        dv.SourceTimestamp = base
    return ua.MonitoredItemNotification(ClientHandle=handle, Value=dv)


@pytest.mark.parametrize("case", ["uniform", "uniform_bool", "mixed", "odd"])
def test_fast_path_matches_asyncua_decoding(case: str) -> None:
    from asyncua.common.utils import Buffer
    from asyncua.ua.ua_binary import from_binary, struct_to_binary

    from edge.sources.opcua_decode import decode_datavalues
    from edge.sources.opcua_fastpath import _itemwise, _uniform, parse_datachange

    r = np.random.default_rng(7)
    paths = set()
    for trial in range(40):
        n = int(r.integers(1, 300))
        vtype = {"uniform": 0, "uniform_bool": 10}.get(case)
        items = [_random_item(r, int(h), vtype=vtype, odd=case == "odd") for h in r.integers(0, 2**32, n)]
        body = struct_to_binary(ua.DataChangeNotification(MonitoredItems=items))
        fast = parse_datachange(body)
        paths.add(fast is not None)
        if case.startswith("uniform"):  # one structured frombuffer, no per-item Python
            assert _uniform(memoryview(body), n) is not None
        elif case == "mixed":
            assert _uniform(memoryview(body), n) is None and _itemwise(memoryview(body), n) is not None
        if fast is None:  # only for content asyncua must decode (strings, arrays)
            assert case == "odd"
            continue
        ref_items = from_binary(ua.DataChangeNotification, Buffer(body)).MonitoredItems
        ref = decode_datavalues([it.Value for it in ref_items], fallback_ns=123)
        got = fast.decoded(fallback_ns=123)
        assert fast.handles.tolist() == [it.ClientHandle for it in ref_items], trial
        np.testing.assert_array_equal(got.ts_ns, ref.ts_ns)
        np.testing.assert_array_equal(got.value, ref.value)  # NaN == NaN here
        np.testing.assert_array_equal(got.quality, ref.quality)
        assert (got.bad_status, got.unconvertible) == (ref.bad_status, ref.unconvertible)
    assert True in paths  # the fast path was exercised, not only the fallback


def test_fast_publish_response_matches_asyncua() -> None:
    from asyncua.common.utils import Buffer
    from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary

    from edge.sources.opcua_fastpath import ColumnsNotification, parse_publish_response

    r = np.random.default_rng(3)
    items = [_random_item(r, h, vtype=0, odd=False) for h in range(50)]
    message = ua.NotificationMessage(SequenceNumber=17, PublishTime=datetime(2026, 5, 1, tzinfo=UTC),
                                     NotificationData=[ua.DataChangeNotification(MonitoredItems=items),
                                                       ua.StatusChangeNotification(Status=ua.StatusCode(0))])
    response = ua.PublishResponse(Parameters=ua.PublishResult(
        SubscriptionId=5, AvailableSequenceNumbers=[16, 17], MoreNotifications=True, NotificationMessage=message,
        Results=[ua.StatusCode(ua.StatusCodes.BadSequenceNumberUnknown)]))
    data = struct_to_binary(response)
    ref = struct_from_binary(ua.PublishResponse, Buffer(data))
    got = parse_publish_response(Buffer(data))
    assert got is not None
    assert got.Parameters.SubscriptionId == 5 and got.Parameters.AvailableSequenceNumbers == [16, 17]
    assert got.Parameters.MoreNotifications and got.Parameters.Results == ref.Parameters.Results
    msg = got.Parameters.NotificationMessage
    assert (msg.SequenceNumber, msg.PublishTime) == (17, ref.Parameters.NotificationMessage.PublishTime)
    cols, status = msg.NotificationData
    assert isinstance(cols, ColumnsNotification) and cols.handles.tolist() == list(range(50))
    assert status == ref.Parameters.NotificationMessage.NotificationData[1]
    # A response of another type is left to asyncua.
    assert parse_publish_response(Buffer(struct_to_binary(ua.ReadResponse()))) is None


@pytest.mark.parametrize("case", ["uniform", "mixed", "odd"])
def test_fast_read_response_matches_asyncua(case: str) -> None:
    from asyncua.common.utils import Buffer
    from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary

    from edge.sources.opcua_decode import decode_datavalues
    from edge.sources.opcua_fastpath import parse_read_response

    r = np.random.default_rng(11)
    fast_seen = False
    for _ in range(30):
        n = int(r.integers(1, 200))
        dvs = [_random_item(r, 0, vtype=0 if case == "uniform" else None, odd=case == "odd").Value for _ in range(n)]
        data = struct_to_binary(ua.ReadResponse(Results=dvs))
        got = parse_read_response(Buffer(data))
        if got is None:
            assert case == "odd"
            continue
        fast_seen = True
        ref = decode_datavalues(struct_from_binary(ua.ReadResponse, Buffer(data)).Results, fallback_ns=5)
        dec = got.decoded(fallback_ns=5)
        assert len(got) == n and got.handles.size == 0
        np.testing.assert_array_equal(dec.ts_ns, ref.ts_ns)
        np.testing.assert_array_equal(dec.value, ref.value)
        np.testing.assert_array_equal(dec.quality, ref.quality)
    assert fast_seen
