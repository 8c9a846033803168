"""Probe a Modbus TCP unit: which addresses of each table answer, and which raise exceptions.

A Modbus server cannot be browsed; it can only be asked. For each table (coils, discrete inputs,
holding and input registers) the probe walks the addresses from 0 to ``max_address``:

1. Read a full block (125 registers / 2,000 bits). An answer marks the whole block as answering.
2. An exception response means some address in the block is not served. Bisect the count
   (read ``start .. start+k``) to find where the answering run ends: about 7 reads.
3. From the first address that raises, probe single addresses at growing steps (1, 2, 4, ...
   capped at ``probe_step``) until one answers, then bisect back to the first that does. The
   addresses between are an exception range, with the exception code of the first refusal.

Bounded: an empty 10,000-register table costs ~10,000 / ``probe_step`` reads, a served one about one
read per block plus ~10 per boundary; ``max_reads`` caps a table (the rest is reported as not
probed). A run of answering addresses shorter than ``probe_step`` that lies wholly inside an
exception range can be missed: lower ``probe_step`` for a device with sparse, tiny blocks.

Exception 01 (illegal function) ends a table at once: the device does not have it. A read that
gets no answer at all ends the probe with DiscoveryError: a Modbus TCP server that does not serve
the unit id stays silent (modbus-serial does), which looks exactly like a slow device, so the
message names both causes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from plantwire.plant import Table

from .errors import DiscoveryError

__all__ = ["EXCEPTION_NAMES", "ProbeResult", "ProbeSettings", "Range", "TableProbe", "probe_unit"]

EXCEPTION_NAMES = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
                   4: "server device failure", 6: "server device busy", 10: "gateway path unavailable",
                   11: "gateway target failed to respond"}
_BLOCK = {Table.HOLDING: 125, Table.INPUT: 125, Table.COIL: 2000, Table.DISCRETE: 2000}

Progress = Callable[[Table, int, int], None]  # (table, next address, reads so far)


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    max_address: int = 9999  # highest address probed (0-based), per table
    probe_step: int = 8  # largest step between single-address probes inside an exception range
    max_reads: int = 20_000  # per table
    timeout_s: float = 2.0


@dataclass(frozen=True, slots=True)
class Range:
    """Addresses ``start`` .. ``end - 1`` (0-based) of one table; ``exception`` None when they answer."""

    table: Table
    start: int
    end: int
    exception: int | None = None


@dataclass(slots=True)
class TableProbe:
    table: Table
    ranges: list[Range] = field(default_factory=list)
    reads: int = 0
    probed_to: int = 0  # first address not probed (== max_address + 1 when complete)

    @property
    def answering(self) -> list[Range]:
        return [r for r in self.ranges if r.exception is None]


@dataclass(slots=True)
class ProbeResult:
    host: str
    port: int
    unit: int
    tables: dict[Table, TableProbe] = field(default_factory=dict)


class _NoAnswer(Exception):
    pass


async def probe_unit(host: str, port: int, unit: int, settings: ProbeSettings, *,
                     tables: tuple[Table, ...] = (Table.COIL, Table.DISCRETE, Table.HOLDING, Table.INPUT),
                     progress: Progress | None = None) -> ProbeResult:
    """Probe every table of one unit; DiscoveryError when the device is unreachable or silent."""
    client = AsyncModbusTcpClient(host, port=port, timeout=settings.timeout_s, retries=0)
    where = f"{host}:{port} unit {unit}"
    try:
        async with asyncio.timeout(settings.timeout_s * 2 + 1):
            connected = await client.connect()
    except TimeoutError:
        connected = False
    if not connected:
        client.close()
        raise DiscoveryError(f"{where}: cannot connect within {settings.timeout_s:g} s "
                             "(is the host reachable and a Modbus TCP server listening on that port?)")
    result = ProbeResult(host, port, unit)
    try:
        for table in tables:
            walker = _TableWalker(client, unit, table, settings, progress)
            try:
                result.tables[table] = await walker.run()
            except _NoAnswer as exc:
                raise DiscoveryError(
                    f"{where}: no answer within {settings.timeout_s:g} s to a read of {table.value} {exc}: "
                    "either the unit id is wrong (a Modbus TCP server stays silent for a unit it does not "
                    "serve; try --unit) or the device is slower than --timeout-s") from None
    finally:
        client.close()
    return result


class _TableWalker:
    def __init__(self, client: AsyncModbusTcpClient, unit: int, table: Table, settings: ProbeSettings,
                 progress: Progress | None) -> None:
        self.client = client
        self.unit = unit
        self.table = table
        self.s = settings
        self.progress = progress
        self.probe = TableProbe(table)
        self._last_progress = 0.0

    async def _read(self, address: int, count: int) -> int | None:
        """None when the addresses answer, else the exception code; _NoAnswer on silence."""
        self.probe.reads += 1
        fn = {Table.HOLDING: self.client.read_holding_registers, Table.INPUT: self.client.read_input_registers,
              Table.COIL: self.client.read_coils, Table.DISCRETE: self.client.read_discrete_inputs}[self.table]
        try:
            response = await fn(address, count=count, device_id=self.unit)
        except ConnectionException as exc:
            raise DiscoveryError(f"connection lost while probing {self.table.value} {address}: {exc}") from None
        except ModbusIOException:
            raise _NoAnswer(f"{address}..{address + count - 1}") from None
        except ModbusException as exc:
            raise DiscoveryError(f"{self.table.value} {address}: {exc}") from None
        if response.isError():
            return int(getattr(response, "exception_code", 0) or 0)
        return None

    def _add(self, start: int, end: int, exception: int | None) -> None:
        ranges = self.probe.ranges
        if ranges and ranges[-1].end == start and ranges[-1].exception == exception:
            ranges[-1] = Range(self.table, ranges[-1].start, end, exception)
        else:
            ranges.append(Range(self.table, start, end, exception))

    def _report(self, address: int) -> None:
        now = time.monotonic()
        if self.progress is not None and now - self._last_progress >= 1.0:
            self._last_progress = now
            self.progress(self.table, address, self.probe.reads)

    async def run(self) -> TableProbe:
        limit = self.s.max_address + 1
        p = 0
        while p < limit:
            if self.probe.reads >= self.s.max_reads:
                break
            self._report(p)
            n = min(_BLOCK[self.table], limit - p)
            code = await self._read(p, n)
            if code is None:
                self._add(p, p + n, None)
                p += n
                continue
            if code == 1:  # illegal function: the device has no such table
                self._add(p, limit, 1)
                p = limit
                break
            lo, hi = 0, n  # read(p, lo) answers (trivially for 0), read(p, hi) raises
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if await self._read(p, mid) is None:
                    lo = mid
                else:
                    hi = mid
            if lo:
                self._add(p, p + lo, None)
                p += lo
            p = await self._skip_exceptions(p, limit, code)
        self.probe.probed_to = min(p, limit)
        return self.probe

    async def _skip_exceptions(self, first_bad: int, limit: int, code: int) -> int:
        """Walk an exception range from ``first_bad``; return the first answering address (or limit)."""
        last_bad, step = first_bad, 1
        while True:
            if self.probe.reads >= self.s.max_reads:
                self._add(first_bad, last_bad + 1, code)
                return last_bad + 1
            q = last_bad + step
            if q >= limit:
                self._add(first_bad, limit, code)
                return limit
            self._report(q)
            if await self._read(q, 1) is not None:
                last_bad, step = q, min(step * 2, self.s.probe_step)
                continue
            lo, hi = last_bad, q  # lo raises, hi answers: find the first answering address
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if await self._read(mid, 1) is None:
                    hi = mid
                else:
                    lo = mid
            self._add(first_bad, hi, code)
            return hi
