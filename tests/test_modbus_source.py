"""ModbusSource against real pymodbus servers on free loopback ports (plus a silent and a lying one)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edge.config import ModbusSettings
from edge.sources.modbus import BreakerPolicy, BreakerState, CircuitBreaker, ModbusSource
from edge.sources.modbus_codec import encode_registers
from edge.sources.schedule import next_tick_ns
from edge.sources.stats import SourceStats
from plantwire.plant import (
    BYTE_ORDER_ORDER,
    TABLE_ORDER,
    TYPE_ORDER,
    PlantConfig,
    Quality,
    RegisterType,
    SignalTable,
    Table,
    expand,
)

pytestmark = pytest.mark.integration

MIXED_TEMPLATE: dict[str, Any] = {"signals": [
    {"name": "f32", "type": "float32"},
    {"name": "f32_cdab", "type": "float32", "byte_order": "CDAB"},
    {"name": "f64_badc", "type": "float64", "byte_order": "BADC"},
    {"name": "i16", "type": "int16", "scale": 0.1},
    {"name": "u16_dcba", "type": "uint16", "byte_order": "DCBA"},
    {"name": "i32", "type": "int32", "value_offset": -100.0},
    {"name": "u32_cdab", "type": "uint32", "byte_order": "CDAB"},
    {"name": "i64_dcba", "type": "int64", "byte_order": "DCBA"},
    {"name": "running", "type": "bit", "bit": 3},
    {"name": "alarm", "type": "bit", "bit": 12, "offset": 18},  # same status word as `running`
    {"name": "flag", "type": "bool"},
    {"name": "in_f32", "type": "float32", "table": "input", "scale": 2.0},
    {"name": "coil", "type": "bool", "table": "coil"},
    {"name": "di", "type": "bool", "table": "discrete"},
]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_table(devices: list[tuple[int, int, str]], machines_per_device: int = 2) -> SignalTable:
    """A plant of the mixed template on Modbus devices given as (port, unit id, byte order)."""
    return expand(PlantConfig.model_validate({
        "site": "test",
        "templates": {"mixed": MIXED_TEMPLATE},
        "devices": [{"name": f"plc{i}", "protocol": "modbus", "port": port, "unit_id": unit, "byte_order": order}
                    for i, (port, unit, order) in enumerate(devices)],
        "machines": [{"name": f"m{i}_{{i}}", "template": "mixed", "count": machines_per_device, "device": f"plc{i}"}
                     for i in range(len(devices))],
    }))


def raw_value(row: int, reg_type: RegisterType) -> float | int:
    return {
        RegisterType.FLOAT32: 1.25 * (row + 1),
        RegisterType.FLOAT64: 1e9 + row + 0.5,
        RegisterType.INT16: -3 * (row + 1),
        RegisterType.UINT16: 60000 - row,
        RegisterType.INT32: -100000 - row,
        RegisterType.UINT32: 3_000_000_000 + row,
        RegisterType.INT64: -(2**40) - row,
        RegisterType.BIT: row % 2,
        RegisterType.BOOL: 1,
    }[reg_type]


def expected_values(table: SignalTable, rows: np.ndarray) -> np.ndarray:
    out = []
    for r in rows.tolist():
        rt = TYPE_ORDER[table.reg_type[r]]
        raw = float(raw_value(r, rt))
        if rt is RegisterType.FLOAT32:
            raw = struct.unpack(">f", struct.pack(">f", raw))[0]
        out.append(raw * table.scale[r] + table.value_offset[r])
    return np.array(out)


def device_image(table: SignalTable, device: int) -> dict[Table, dict[int, int]]:
    """Register (or bit) contents that make every signal of the device read its raw_value."""
    image: dict[Table, dict[int, int]] = {t: {} for t in Table}
    for r in table.signals_of(device).tolist():
        tbl, rt = TABLE_ORDER[table.table[r]], TYPE_ORDER[table.reg_type[r]]
        raw, addr = raw_value(r, rt), int(table.address[r])
        if tbl in (Table.COIL, Table.DISCRETE):
            image[tbl][addr] = int(raw)
            continue
        for j, word in enumerate(encode_registers(raw, rt, BYTE_ORDER_ORDER[table.byte_order[r]], int(table.bit[r]))):
            image[tbl][addr + j] = image[tbl].get(addr + j, 0) | word
    return image


async def start_server(port: int, unit: int, image: dict[Table, dict[int, int]],
                       holding_limit: int | None = None) -> ModbusTcpServer:
    """A pymodbus server holding ``image``; registers at or above ``holding_limit`` do not exist."""
    def block(tbl: Table, bits: bool) -> list[SimData]:
        words = image.get(tbl, {})
        size = max(words, default=0) + 1
        if holding_limit is not None and tbl is Table.HOLDING:
            size = holding_limit
        if bits:
            return [SimData(0, values=[bool(words.get(a, 0)) for a in range(size)], datatype=DataType.BITS)]
        return [SimData(0, values=[words.get(a, 0) for a in range(size)], datatype=DataType.REGISTERS)]

    device = SimDevice(id=unit, simdata=(block(Table.COIL, True), block(Table.DISCRETE, True),
                                         block(Table.HOLDING, False), block(Table.INPUT, False)))
    server = ModbusTcpServer(device, address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    return server


@dataclass
class Collector:
    """A sink that copies every poll, with the wall time it was called."""

    calls: list[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)

    def __call__(self, ts_ns: np.ndarray | int, signals: np.ndarray, values: np.ndarray,
                 quality: np.ndarray | int) -> None:
        assert np.ndim(ts_ns) == 0 and signals.dtype == np.uint32 and values.dtype == np.float64
        q = np.broadcast_to(np.asarray(quality, dtype=np.uint8), values.shape).copy()
        self.calls.append((time.time_ns(), int(ts_ns), signals.copy(), values.copy(), q))

    def last(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        _, _, sig, val, q = self.calls[-1]
        order = np.argsort(sig)
        return sig[order], val[order], q[order]


async def run_for(seconds: float, *sources: ModbusSource, until: Callable[[], bool] | None = None) -> None:
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(s.run(), name=f"modbus-{s.device.name}") for s in sources]
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (until and until()):
            await asyncio.sleep(0.02)
        for t in tasks:
            t.cancel()


@contextlib.asynccontextmanager
async def servers(table: SignalTable, **kw: Any) -> AsyncIterator[list[ModbusTcpServer]]:
    started = [await start_server(d.port, d.unit_id, device_image(table, d.index), **kw) for d in table.devices]
    try:
        yield started
    finally:
        for s in started:
            await s.shutdown()


def fast_settings(**kw: Any) -> ModbusSettings:
    return ModbusSettings(**{"period_ms": 100, "timeout_s": 0.3, "max_gap": 4, **kw})


FAST_BREAKER = BreakerPolicy(failures_to_open=2, backoff_initial_s=0.3, backoff_max_s=0.6)


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("connections", [1, 3])
def test_mixed_types_and_orders_read_right(connections: int) -> None:
    async def main() -> None:
        table = make_table([(free_port(), 1, "ABCD"), (free_port(), 17, "DCBA")])
        async with servers(table):
            sinks = [Collector(), Collector()]
            stats = [SourceStats(), SourceStats()]
            sources = [ModbusSource(d, table, fast_settings(connections_per_device=connections), sinks[i], stats[i])
                       for i, d in enumerate(table.devices)]
            await run_for(3.0, *sources, until=lambda: all(len(s.calls) >= 2 for s in sinks))
        for dev, sink, st in zip(table.devices, sinks, stats, strict=True):
            sig, val, q = sink.last()
            rows = table.signals_of(dev.index)
            assert sig.tolist() == rows.tolist()
            assert (q == Quality.GOOD).all()
            np.testing.assert_array_equal(val, expected_values(table, rows))
            assert st.errors == 0 and st.samples_bad == 0 and st.samples_good == len(sink.calls) * len(rows)
            assert st.last_sample_ns == sink.calls[-1][1]
            assert not st.connected  # closed on cancellation
        assert len(sources[0]._lanes) == min(connections, len(sources[0].plan.blocks))

    run(main())


def test_exception_response_marks_its_block_bad_and_carries_on() -> None:
    async def main() -> None:
        table = make_table([(free_port(), 1, "ABCD")], machines_per_device=2)
        source_stats = SourceStats()
        sink = Collector()
        source = ModbusSource(table.devices[0], table, fast_settings(max_gap=4), sink, source_stats)
        blocks = [b for b in source.plan.blocks if b.table is Table.HOLDING]
        assert len(blocks) == 2  # one per machine: the stride leaves a gap wider than max_gap
        async with servers(table, holding_limit=blocks[1].start):  # second machine's registers missing
            await run_for(3.0, source, until=lambda: len(sink.calls) >= 4)
        sig, val, q = sink.last()
        in_missing = (table.table[sig] == TABLE_ORDER.index(Table.HOLDING)) & (table.address[sig] >= blocks[1].start)
        assert in_missing.any() and (~in_missing).any()
        assert (q[in_missing] == Quality.BAD).all() and np.isnan(val[in_missing]).all()
        assert (q[~in_missing] == Quality.GOOD).all()
        np.testing.assert_array_equal(val[~in_missing], expected_values(table, sig[~in_missing]))
        assert source_stats.exceptions >= 4 and source_stats.timeouts == 0
        assert source_stats.breaker_opens == 0  # the device answers: one bad block must not silence it
        assert source_stats.samples_bad == int(in_missing.sum()) * len(sink.calls)

    run(main())


async def silent_server(port: int) -> asyncio.Server:
    """Accepts connections and never answers: the worst kind of dead slave."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while await reader.read(1024):
                pass
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


def test_dead_slaves_do_not_delay_the_others() -> None:
    period_ms, timeout_s = 100, 0.3

    async def main() -> None:
        refused = free_port()  # nothing listens there
        table = make_table([(free_port(), 1, "ABCD"), (free_port(), 1, "ABCD"), (refused, 1, "CDAB")])
        good, silent, _dead = table.devices
        sinks = [Collector() for _ in range(3)]
        stats = [SourceStats() for _ in range(3)]
        settings = ModbusSettings(period_ms=period_ms, timeout_s=timeout_s, max_gap=4)
        sources = [ModbusSource(d, table, settings, sinks[i], stats[i], breaker=FAST_BREAKER, rng=random.Random(1))
                   for i, d in enumerate(table.devices)]
        server = await start_server(good.port, good.unit_id, device_image(table, good.index))
        quiet = await silent_server(silent.port)
        try:
            await run_for(2.0, *sources)
        finally:
            await server.shutdown()
            quiet.close()

        period_ns = period_ms * 1_000_000
        called, ts = (np.array([c[i] for c in sinks[0].calls]) for i in (0, 1))
        assert len(ts) >= 12
        assert (np.diff(ts) == period_ns).all() and stats[0].missed_ticks == 0  # not one tick lost
        assert ((called - ts) < timeout_s * 1e9).all()  # never delayed by a timeout
        assert stats[0].samples_bad == 0

        for i in (1, 2):  # the dead ones: everything delivered, BAD, breaker open, ticks kept
            assert all((c[4] == Quality.BAD).all() and np.isnan(c[3]).all() for c in sinks[i].calls)
            assert stats[i].breaker_opens >= 1 and stats[i].polls_short_circuited >= 1
            # Every tick was either delivered or counted as missed (a probe's timeout overruns the period).
            assert len(sinks[i].calls) + stats[i].missed_ticks >= len(ts) - 2
            assert stats[i].polls == len(sinks[i].calls)
            short = [c for c in sinks[i].calls if c[0] - c[1] < 20e6]
            assert len(short) >= len(sinks[i].calls) // 2  # served at once while the breaker is open
        assert stats[1].timeouts >= 2 and stats[1].connect_failures == 0
        assert stats[2].connect_failures >= 2 and stats[2].timeouts == 0

    run(main())


def test_stop_is_not_lost_when_a_poll_swallows_the_cancellation() -> None:
    """A client library that eats CancelledError (or turns it into TimeoutError) must not hang the stop."""
    swallow = True

    async def main() -> None:
        table = make_table([(free_port(), 1, "ABCD")])
        async with servers(table):
            source = ModbusSource(table.devices[0], table, fast_settings(period_ms=50), Collector(), SourceStats())

            async def swallowing_poll(tick_ns: int) -> None:
                try:
                    await asyncio.sleep(5.0)
                except asyncio.CancelledError:
                    if not swallow:
                        raise

            source._poll = swallowing_poll  # type: ignore[method-assign]
            task = asyncio.create_task(source.run())
            await asyncio.sleep(0.2)
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=2.0)
            try:
                assert task in done and task.cancelled()  # stopped within one poll
            finally:
                nonlocal_stop(task)

    def nonlocal_stop(task: asyncio.Task[None]) -> None:
        nonlocal swallow
        swallow = False  # let a failing run end instead of hanging the suite
        task.cancel()

    run(main())


def test_wall_clock_alignment() -> None:
    period_ms = 50

    async def main() -> None:
        table = make_table([(free_port(), 1, "ABCD"), (free_port(), 2, "CDAB")], machines_per_device=1)
        sinks = [Collector(), Collector()]
        sources = [ModbusSource(d, table, fast_settings(period_ms=period_ms), sinks[i], SourceStats())
                   for i, d in enumerate(table.devices)]
        async with servers(table):
            await run_for(0.8, *sources)
        period_ns = period_ms * 1_000_000
        ticks = [{c[1] for c in s.calls} for s in sinks]
        for s in sinks:
            assert len(s.calls) >= 8
            assert all(c[1] % period_ns == 0 for c in s.calls)  # on the wall-clock grid
            assert all(0 <= c[0] - c[1] < period_ns for c in s.calls)  # delivered within its own period
        assert len(ticks[0] & ticks[1]) >= min(len(ticks[0]), len(ticks[1])) - 1  # devices sample together

    run(main())


def test_reconnects_after_the_server_restarts() -> None:
    async def main() -> None:
        table = make_table([(free_port(), 1, "ABCD")], machines_per_device=1)
        dev = table.devices[0]
        sink, stats = Collector(), SourceStats()
        source = ModbusSource(dev, table, fast_settings(), sink, stats, breaker=FAST_BREAKER)
        image = device_image(table, dev.index)
        server = await start_server(dev.port, dev.unit_id, image)
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(source.run(), name="modbus-restart")
            await wait_until(lambda: stats.samples_good > 0 and stats.connected)
            await server.shutdown()
            await wait_until(lambda: stats.samples_bad > 0 and not stats.connected)
            server = await start_server(dev.port, dev.unit_id, image)
            bad_before = stats.samples_bad
            await wait_until(lambda: stats.connected and sink.calls and (sink.calls[-1][4] == 0).all()
                             and stats.samples_bad > bad_before - 1)
            task.cancel()
        await server.shutdown()
        assert stats.reconnects >= 1
        _, val, q = sink.last()
        assert (q == Quality.GOOD).all()
        np.testing.assert_array_equal(val, expected_values(table, np.sort(source.signals)))

    run(main())


async def wait_until(cond: Callable[[], Any], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def lying_server(port: int) -> asyncio.Server:
    """Answers every read with one register fewer than asked: a malformed response."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while True:
                head = await reader.readexactly(12)
                tid, _, _, unit, fc, _, count = struct.unpack(">HHHBBHH", head)
                body = b"\x00" * (2 * (count - 1)) if fc in (3, 4) else b"\x00" * max(0, (count + 7) // 8 - 1)
                pdu = bytes([fc, len(body)]) + body
                writer.write(struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu)
                await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


def test_malformed_responses_are_bad_and_trip_the_breaker() -> None:
    async def main() -> None:
        table = make_table([(free_port(), 1, "ABCD")], machines_per_device=1)
        sink, stats = Collector(), SourceStats()
        source = ModbusSource(table.devices[0], table, fast_settings(), sink, stats, breaker=FAST_BREAKER)
        srv = await lying_server(table.devices[0].port)
        try:
            await run_for(3.0, source, until=lambda: stats.breaker_opens >= 1 and len(sink.calls) >= 3)
        finally:
            srv.close()
        assert stats.malformed >= 2 and stats.timeouts == 0 and stats.breaker_opens >= 1
        assert all((c[4] == Quality.BAD).all() and np.isnan(c[3]).all() for c in sink.calls)
        assert stats.samples_good == 0

    run(main())


def test_sink_errors_do_not_stop_polling() -> None:
    async def main() -> None:
        table = make_table([(free_port(), 1, "ABCD")], machines_per_device=1)
        stats = SourceStats()
        calls = 0

        def broken_sink(*_: Any) -> None:
            nonlocal calls
            calls += 1
            raise OverflowError("frame buffer full")

        source = ModbusSource(table.devices[0], table, fast_settings(), broken_sink, stats)
        async with servers(table):
            await run_for(3.0, source, until=lambda: calls >= 3)
        assert calls >= 3 and stats.errors >= 3

    run(main())


# ---- pure parts --------------------------------------------------------------------------------


def test_breaker_opens_backs_off_and_recovers() -> None:
    policy = BreakerPolicy(failures_to_open=3, backoff_initial_s=1.0, backoff_max_s=5.0, jitter=0.2)
    b = CircuitBreaker(policy, random.Random(7))
    now = 100.0
    assert b.record(False, now) is None and b.record(False, now) is None
    assert b.record(False, now) is BreakerState.OPEN
    assert 0.8 <= b.backoff_s <= 1.0
    assert not b.allow(now + 0.5)
    assert b.allow(now + 1.0) and b.state is BreakerState.HALF_OPEN
    backoffs = []
    for _ in range(6):  # each failed probe re-opens at once, with a doubled, capped back-off
        assert b.record(False, now) is BreakerState.OPEN
        backoffs.append(b.backoff_s)
        assert b.allow(b.retry_at_s)
    assert [math.ceil(x) for x in backoffs] == [2, 4, 5, 5, 5, 5]
    assert all(0.8 * c <= x <= c for x, c in zip(backoffs, [2, 4, 5, 5, 5, 5], strict=True))
    assert b.record(True, now) is BreakerState.CLOSED and b.failures == 0
    assert b.record(False, now) is None  # counting starts again from zero


def test_breaker_jitter_spreads_retries() -> None:
    policy = BreakerPolicy(failures_to_open=1, backoff_initial_s=10.0, backoff_max_s=10.0, jitter=0.5)
    delays = set()
    for seed in range(20):
        b = CircuitBreaker(policy, random.Random(seed))
        b.record(False, 0.0)
        delays.add(round(b.backoff_s, 3))
    assert len(delays) > 10 and min(delays) >= 5.0 and max(delays) <= 10.0


def test_next_tick_is_the_next_multiple_of_the_period() -> None:
    assert next_tick_ns(1_000_000_000, 1000) == 2_000_000_000
    assert next_tick_ns(1_999_999_999, 1000) == 2_000_000_000
    assert next_tick_ns(2_000_000_001, 250) == 2_250_000_000
