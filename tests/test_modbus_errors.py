"""What a commissioning engineer reads when a Modbus device is misconfigured, slow or answers
nonsense: one actionable line per case, counted in stats, no library hex dumps.

Real pymodbus servers on free loopback ports; a tiny TCP relay in front of one makes it slow, or
silent for unit ids it does not serve (what modbus-serial and many PLCs do, MEASURED.md trap 14).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import struct
from collections.abc import AsyncIterator

import numpy as np
import pytest

from edge.sources.modbus import BreakerPolicy, ModbusSource
from edge.sources.stats import SourceStats
from plantwire.plant import PlantConfig, Quality, SignalTable, Table, expand
from plantwire.ports import free_port
from plantwire.status import Status
from tests.test_modbus_source import (
    FAST_BREAKER,
    Collector,
    device_image,
    fast_settings,
    make_table,
    run,
    run_for,
    start_server,
)

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def relay(listen_port: int, target_port: int, *, delay_s: float = 0.0,
                serve_unit: int | None = None) -> AsyncIterator[None]:
    """Forward Modbus TCP frames to ``target_port``; answers come ``delay_s`` late; requests for another
    unit id than ``serve_unit`` get no answer at all (the connection stays up)."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", target_port)

        async def requests() -> None:
            while True:
                head = await reader.readexactly(7)
                length = struct.unpack(">H", head[4:6])[0]
                body = await reader.readexactly(length - 1)
                if serve_unit is None or head[6] == serve_unit:
                    up_w.write(head + body)

        async def answers() -> None:
            while data := await up_r.read(4096):
                if delay_s:
                    await asyncio.sleep(delay_s)
                writer.write(data)

        with contextlib.suppress(Exception):
            await asyncio.gather(requests(), answers())
        writer.close()
        up_w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    try:
        yield
    finally:
        server.close()


def warnings_of(out: io.StringIO, logger: str = "") -> list[str]:
    return [line for line in out.getvalue().splitlines() if (" WARNING " in line or " ERROR " in line)
            and logger in line]


# ---------------------------------------------------------------------------------------------


def test_exception_response_is_logged_once_with_its_meaning(log_text: io.StringIO) -> None:
    async def main() -> tuple[SourceStats, Collector, ModbusSource]:
        table = make_table([(free_port(), 1, "ABCD")], machines_per_device=2)
        stats, sink = SourceStats(), Collector()
        source = ModbusSource(table.devices[0], table, fast_settings(), sink, stats)
        holding = [b for b in source.plan.blocks if b.table is Table.HOLDING]
        server = await start_server(table.devices[0].port, 1, device_image(table, 0), holding_limit=holding[1].start)
        try:
            await run_for(10.0, source, until=lambda: len(sink.calls) >= 5)
        finally:
            await server.shutdown()
        return stats, sink, source

    stats, _, _ = asyncio.run(main())
    ours = warnings_of(log_text, "edge.sources.modbus")
    assert len(ours) == 1, ours  # five polls, one line
    line = ours[0]
    assert "plc0" in line and "unit 1" in line and "exception 02 ILLEGAL DATA ADDRESS" in line
    assert "holding registers 30-" in line and "check the register map" in line
    assert stats.exceptions >= 5 and stats.exceptions_by_code == {2: stats.exceptions}
    assert set(stats.bad_by_status) == {Status.BAD_OUT_OF_RANGE}
    assert stats.bad_by_status[Status.BAD_OUT_OF_RANGE] == stats.samples_bad > 0
    assert stats.bad_signals.count == 11 and stats.bad_signals.entered == 11  # a state, not a count per poll
    assert stats.failing_blocks == 1 and stats.last_good_poll_ns == 0


def test_silent_unit_id_is_named_not_reported_as_connection_lost(log_text: io.StringIO) -> None:
    async def main() -> SourceStats:
        backend, front = free_port(), free_port()
        table = make_table([(front, 5, "ABCD")], machines_per_device=1)  # the device serves unit 1, not 5
        stats, sink = SourceStats(), Collector()
        source = ModbusSource(table.devices[0], table, fast_settings(timeout_s=0.2), sink, stats, breaker=FAST_BREAKER)
        server = await start_server(backend, 1, device_image(table, 0))
        try:
            async with relay(front, backend, serve_unit=1):
                await run_for(15.0, source, until=lambda: stats.no_response >= 4 and stats.breaker_opens >= 1)
        finally:
            await server.shutdown()
        return stats

    stats = asyncio.run(main())
    ours = warnings_of(log_text, "edge.sources.modbus")
    silent = [line for line in ours if "no response from unit 5 at 127.0.0.1:" in line]
    assert len(silent) == 1 and "check the unit id" in silent[0], ours
    assert not [line for line in ours if "connection lost" in line], ours
    assert stats.no_response >= 4 and stats.timeouts >= stats.no_response and stats.exceptions == 0
    assert Status.BAD_NO_COMMUNICATION in stats.bad_by_status


def test_slow_device_writes_a_few_lines_without_hex_dumps(log_text: io.StringIO) -> None:
    """A device answering later than timeout_s at every poll: a handful of lines, no frame dumps."""
    async def main() -> SourceStats:
        backend, front = free_port(), free_port()
        table = make_table([(front, 1, "ABCD")], machines_per_device=1)
        stats, sink = SourceStats(), Collector()
        # No breaker opening: every tick goes to the network, the worst case for the log.
        settings = fast_settings(period_ms=200, timeout_s=0.1)
        source = ModbusSource(table.devices[0], table, settings, sink, stats,
                              breaker=BreakerPolicy(failures_to_open=10_000))
        server = await start_server(backend, 1, device_image(table, 0))
        try:
            async with relay(front, backend, delay_s=0.15):
                await run_for(20.0, source, until=lambda: stats.timeouts >= 15)
        finally:
            await server.shutdown()
        return stats

    stats = asyncio.run(main())
    text = log_text.getvalue()
    assert stats.timeouts >= 15
    lines = warnings_of(log_text)
    assert len(lines) <= 6, lines  # 15+ failed polls
    slow = [line for line in lines if "edge.sources.modbus" in line and "slow or overloaded" in line]
    assert len(slow) == 1 and "raise modbus.timeout_s" in slow[0]
    library = [line for line in lines if "pymodbus" in line]
    assert library and all("[plc0]" in line for line in library)  # names the device pymodbus does not
    assert ">>>>>" not in text and "0x0 0x" not in text  # no frame dumps, ours or another device's
    assert "connection lost" not in text
    assert text.count("connected (1 connection)") == 1  # pymodbus's drop-and-reconnect after silence is not news
    assert len(text) < 4000


# ---- implausible decoding ------------------------------------------------------------------------

FLOATS = {"signals": [{"name": f"t{i}", "type": "float32"} for i in range(4)]}


def float_table(port: int, order: str) -> SignalTable:
    return expand(PlantConfig.model_validate({
        "site": "test", "templates": {"f": FLOATS},
        "devices": [{"name": "plc0", "protocol": "modbus", "port": port, "unit_id": 1, "byte_order": order}],
        "machines": [{"name": "m1", "template": "f", "count": 1, "device": "plc0"}],
    }))


def float_image(values: list[float], order: str) -> dict[Table, dict[int, int]]:
    regs: dict[int, int] = {}
    for i, v in enumerate(values):
        hi, lo = struct.unpack(">HH", struct.pack(">f", v))
        regs[2 * i], regs[2 * i + 1] = (hi, lo) if order == "ABCD" else (lo, hi)
    return {Table.HOLDING: regs}


def test_nan_and_inf_registers_are_bad_and_a_wrong_word_order_is_named(log_text: io.StringIO) -> None:
    values = [21.5, float("nan"), 1013.25, float("inf")]

    async def main(order_on_wire: str) -> tuple[SourceStats, Collector]:
        port = free_port()
        table = float_table(port, "ABCD")
        stats, sink = SourceStats(), Collector()
        source = ModbusSource(table.devices[0], table, fast_settings(), sink, stats)
        server = await start_server(port, 1, float_image(values, order_on_wire))
        try:
            await run_for(10.0, source, until=lambda: len(sink.calls) >= 3)
        finally:
            await server.shutdown()
        return stats, sink

    stats, sink = asyncio.run(main("ABCD"))
    _, val, q = sink.last()
    assert q.tolist() == [Quality.GOOD, Quality.BAD, Quality.GOOD, Quality.BAD]
    np.testing.assert_array_equal(val[[0, 2]], [21.5, 1013.25])
    assert stats.bad_by_status == {Status.BAD_DATA_ENCODING_INVALID: 2 * len(sink.calls)}
    assert stats.bad_signals.count == 2 and stats.errors == 0
    nan = warnings_of(log_text, "edge.sources.modbus")
    assert len(nan) == 1, nan  # on the change, not per poll; two of four is a sensor matter, not an order
    assert "2 signals decode to NaN or inf" in nan[0] and "m1.t1 (holding registers 2)" in nan[0]
    assert "m1.t3 (holding registers 6)" in nan[0] and "implausible" not in nan[0]

    stats, sink = asyncio.run(main("CDAB"))  # the vendor swaps words; the config says ABCD
    order = [line for line in warnings_of(log_text, "edge.sources.modbus")[1:] if "implausible" in line]
    assert len(order) == 1, order  # one warning, not one per poll
    assert "plc0" in order[0] and "holding registers 0-7" in order[0] and "byte_order" in order[0]
    assert "CDAB" in order[0]


def test_no_warning_on_a_clean_run(log_text: io.StringIO) -> None:
    async def main() -> None:
        table = make_table([(free_port(), 1, "ABCD")], machines_per_device=1)
        sink = Collector()
        source = ModbusSource(table.devices[0], table, fast_settings(), sink, SourceStats())
        server = await start_server(table.devices[0].port, 1, device_image(table, 0))
        try:
            await run_for(10.0, source, until=lambda: len(sink.calls) >= 3)
        finally:
            await server.shutdown()

    run(main())
    assert not warnings_of(log_text), log_text.getvalue()
