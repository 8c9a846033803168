"""A real Modbus slave stops: the detector stack raises one DEVICE alarm for it, not one BAD/SILENT alarm per signal,
and its neighbour on another slave stays quiet (ModbusSource -> FrameBuffer -> DetectorStack, as the edge runs)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np
import pytest

from edge.detectors.events import Phase, Scope
from edge.detectors.settings import AnalyticsSettings, QualitySettings
from edge.detectors.stack import DetectorStack
from edge.frames import FrameBuffer
from edge.kernels.kinds import Kind
from edge.sources.modbus import ModbusSource
from edge.sources.stats import SourceStats
from tests.test_modbus_source import FAST_BREAKER, device_image, fast_settings, free_port, make_table, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_stopped_modbus_slave_raises_one_device_alarm() -> None:
    table = make_table([(free_port(), 1, "ABCD"), (free_port(), 1, "ABCD")], machines_per_device=2)
    settings = AnalyticsSettings(quality=QualitySettings(bad_s=0.5, device_s=0.5, silent_s=2.0))
    stack = DetectorStack.from_table(table, settings)
    buffer = FrameBuffer(1_000_000)
    events: list[tuple[float, int, int, int, int]] = []
    t0 = time.monotonic()

    def drain() -> None:
        if len(buffer):
            f = buffer.drain()
            r = stack.process(f.signal, f.value, f.quality, f.ts_ns)
            events.extend((time.monotonic() - t0, int(e["phase"]), int(e["scope"]), int(e["entity"]), int(e["kind"]))
                          for e in r.events)

    async def wait_until(cond: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not cond():
            assert time.monotonic() < deadline, "condition not met in time"
            await asyncio.sleep(0.05)
            drain()

    async def main() -> None:
        stats = [SourceStats(), SourceStats()]
        sources = [ModbusSource(d, table, fast_settings(), buffer.append, st, breaker=FAST_BREAKER)
                   for d, st in zip(table.devices, stats, strict=True)]
        servers = [await start_server(d.port, d.unit_id, device_image(table, d.index)) for d in table.devices]
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(s.run(), name=f"modbus-{s.device.name}") for s in sources]
                await wait_until(lambda: all(s.samples_good > 5 * len(table) for s in stats), 20.0)
                await servers[0].shutdown()
                stopped = time.monotonic() - t0
                await wait_until(lambda: any(e[2] == Scope.DEVICE and e[1] == Phase.OPEN for e in events), 20.0)
                # long enough for every per-signal data-quality judgement to have fired, were it not folded
                await wait_until(lambda: time.monotonic() - t0 > stopped + 3.0, 10.0)
                for t in tasks:
                    t.cancel()
        finally:
            for s in servers[1:]:
                await s.shutdown()
        assert not stats[0].connected or stats[0].samples_bad > 0

    asyncio.run(main())
    opened = [e for e in events if e[1] == Phase.OPEN]
    assert [(e[2], e[3], e[4]) for e in opened] == [(Scope.DEVICE, 0, int(Kind.DEVICE))], opened
    n_dev0 = int(np.count_nonzero(table.device == 0))
    assert n_dev0 > 1  # one alarm stands for all of them
