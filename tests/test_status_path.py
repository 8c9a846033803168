"""Which Bad it was travels from the source through the frame buffer and the wire to the line protocol."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from cloud.sinks.lineproto import SeriesPrefixes, build_lines
from edge.frames import FrameBuffer
from edge.sources.modbus import ModbusSource
from edge.sources.stats import SourceStats
from plantwire import wire
from plantwire.plant import Quality, Table
from plantwire.ports import free_port
from plantwire.status import Status
from tests.test_modbus_source import device_image, fast_settings, make_table, run_for, start_server

pytestmark = pytest.mark.integration


def test_modbus_exception_status_reaches_the_line_protocol() -> None:
    table = make_table([(free_port(), 1, "ABCD")], machines_per_device=2)
    buffer = FrameBuffer(100_000)

    async def main() -> None:
        source = ModbusSource(table.devices[0], table, fast_settings(), buffer.append, SourceStats(),
                              status_sink=buffer.append)
        holding = [b for b in source.plan.blocks if b.table is Table.HOLDING]
        server = await start_server(table.devices[0].port, 1, device_image(table, 0), holding_limit=holding[1].start)
        try:
            await run_for(10.0, source, until=lambda: len(buffer) >= 3 * len(source.signals))
        finally:
            await server.shutdown()

    asyncio.run(main())
    frame = buffer.drain()
    assert frame.status is not None
    bad = frame.quality == Quality.BAD
    assert bad.any() and (~bad).any()
    assert (frame.status[bad] == Status.BAD_OUT_OF_RANGE).all() and (frame.status[~bad] == 0).all()

    payload = wire.encode_batch(gateway="gw", boot_epoch_ns=1, seq=1, table_hash=b"\0" * 8, ts_ns=frame.ts_ns,
                                signal=frame.signal, value=frame.value, quality=frame.quality,
                                version=wire.VERSION_V3, status=frame.status)
    batch = wire.decode_batch(payload)
    assert batch.status is not None and np.array_equal(batch.status, frame.status)
    prefixes = SeriesPrefixes.build("samples", site="s", gateway="gw", ids=table.ids,
                                    machines=[table.machine_ids[m] for m in table.machine])
    text = build_lines(prefixes, batch.ts_ns, batch.signal, batch.value, batch.quality, batch.status).tobytes()
    lines = text.decode().splitlines()
    assert sum('status="BadOutOfRange"' in line for line in lines) == int(bad.sum())
    assert all(("status=" in line) == ("quality=2i" in line) for line in lines)
