"""Modbus TCP acquisition: one ``ModbusSource`` polls one device and hands each poll to a sink as columns.

Behaviour a plant engineer relies on, and why:

- **Wall-clock ticks.** Polls run at every multiple of ``period_ms`` of ``time.time_ns()``, so all
  devices sample together and drift never accumulates. Every sample of a poll carries the tick
  time as ``ts_ns`` (aligned timestamps make cross-device analytics line up).
- **A late poll polls late rather than not at all.** When a poll ends after its next tick (a slow device,
  a busy box), the most recent tick that has passed is polled at once, stamped with that tick's time and
  counted in ``late_polls``: a plant engineer expects a 10 Hz poll to read at 10 Hz, and a value read
  up to one period after its tick is worth more than no value. Older ticks (more than one period
  behind) are skipped and counted in ``missed_ticks``, not queued: catching up a backlog would stamp
  old times on values read now, and a device slower than its period would never catch up.
- **One sink call per poll.** ``sink(ts_ns, signals, values, quality)`` gets every signal of the
  device: uint32 SignalTable rows, float64 values, and quality as the scalar ``Quality.GOOD`` when
  all reads succeeded, else a uint8 array. The arrays are reused on the next poll: the sink must
  copy what it keeps (FrameBuffer.append does).
- **Nothing silently missing.** A block whose read fails (exception response, timeout, malformed
  or wrong-length response, connection down) delivers its signals as NaN with quality BAD, and is
  counted in the stats. After a timeout the rest of that connection's blocks in this poll are not
  tried (the device is not answering; waiting a timeout per block would stall the poll), and are
  delivered BAD too.
- **Circuit breaker per device.** A poll fails when none of its blocks could be read. After
  ``failures_to_open`` consecutive failed polls the breaker opens: the connections are closed and
  every tick delivers BAD samples at once, without touching the network, so a dead slave costs
  nothing and never delays anything. After a jittered, capped, exponentially growing back-off the
  breaker half-opens: the next tick reconnects and polls for real; success closes the breaker,
  failure re-opens it with a doubled back-off. Exception responses on every block count as a
  failed poll too: a Modbus gateway answers "target device failed to respond" (0x0B) for a dead
  slave behind it. One misconfigured block alone does not trip it, as the others still succeed.
- **Pipelining.** pymodbus 3.16 serialises requests on one connection (a lock around each
  transaction), so a connection's blocks are read one after another; ``connections_per_device``
  > 1 spreads the blocks over several connections that are read concurrently (one connection is
  latency-bound, see shared/MEASURED.md).
- **Cheap responses.** pymodbus decodes every register into a Python int (and formats it into a
  debug string) per response; the client here registers response classes that keep the raw
  payload bytes instead, which the vectorised codec copies into its image in one step.
- **Reconnects** are ours, not pymodbus's (its reconnect task is disabled): a poll that finds a
  connection down connects it, bounded by ``timeout_s``; the breaker spaces the attempts out.
  Connection state changes are logged once each, never per poll.
- ``run()`` never raises anything but CancelledError: unexpected errors are logged, counted, and
  the next tick proceeds.

What the log says, for the engineer commissioning a device (each case one line that names the
device, the block and what to do, then counted in ``stats`` instead of logged again):

- **Exception response**: once per device, block and exception code, with the code's meaning and
  a remedy (02 ILLEGAL DATA ADDRESS: check the register map, or lower ``max_gap`` so blocks do not
  span unmapped registers; 03: lower ``max_block_registers``; 0B: the device behind the gateway
  does not answer). Counted per code in ``exceptions_by_code``.
- **No answer while TCP is up**: if nothing ever came back from the device since start-up (not
  even a late answer, which pymodbus's trace hook sees before discarding it) it is "no response
  from unit N at host:port; check the unit id" (a Modbus TCP server does not answer a unit id it
  does not serve; counted in ``no_response``). If answers did come, it is too slow for
  ``timeout_s``. Logged on the second consecutive poll with a timeout (one miss is weather, and
  gives a late answer time to arrive), not per poll. pymodbus closes a connection after a few
  unanswered requests; that close and the reconnect after it are not reported as "connection
  lost" / "connected", nor is the breaker's own close.
- **Implausible values**: registers that decode to NaN or inf are delivered BAD
  (BadDataEncodingInvalid); when most floats of a block look absurd (NaN, inf, |x| > 1e9 for
  float32) on its first good read after start-up or a reload, one warning suggests checking the
  byte and word order.

Every BAD sample carries the OPC-UA status code nearest to its cause (``plantwire.status``):
BadTimeout, BadNoCommunication (no answer at all, or the breaker is open), BadNotConnected,
BadDeviceFailure / BadOutOfRange / BadNotSupported (exception responses), BadDecodingError
(malformed), BadDataEncodingInvalid (NaN/inf); counted per code in ``bad_by_status``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.bit_message import ReadCoilsResponse, ReadDiscreteInputsResponse
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse, ReadInputRegistersResponse

from edge.config import ModbusSettings
from plantwire.logs import log_source
from plantwire.plant import TABLE_ORDER, Device, Quality, SignalTable, Table
from plantwire.status import Status, status_name

from .modbus_codec import Codec
from .modbus_plan import Block, ReadPlan, plan_device
from .schedule import next_tick_ns, raise_if_cancelled
from .stats import BadSignals, SourceStats, describe_signals
from .writes import DeviceDown, WriteFailed

__all__ = ["BreakerPolicy", "BreakerState", "CircuitBreaker", "ModbusSource", "Sink", "StatusSink"]

log = logging.getLogger(__name__)

Sink = Callable[[np.ndarray | int, np.ndarray, np.ndarray, np.ndarray | int], None]
#: A sink that also takes each sample's OPC-UA StatusCode (scalar or uint32 array, 0 = Good).
StatusSink = Callable[[np.ndarray | int, np.ndarray, np.ndarray, np.ndarray | int, np.ndarray | int], None]

_GOOD = int(Quality.GOOD)
_BAD = int(Quality.BAD)


# --------------------------------------------------------------------------------------------
# Raw responses: keep the payload bytes, skip pymodbus's per-register Python decoding.
# --------------------------------------------------------------------------------------------
class _RawPayload:
    """Mixin: ``decode`` stores the data bytes after the byte count; length is checked by the codec."""

    payload: bytes

    def decode(self, data: bytes) -> None:
        self.payload = data[1 : 1 + data[0]] if data else b""

    def __str__(self) -> str:  # pymodbus formats every PDU for a debug line, even with debug off
        return f"{type(self).__name__}(fc={self.function_code}, {len(self.payload)} bytes)"  # type: ignore[attr-defined]


class RawHoldingRegistersResponse(_RawPayload, ReadHoldingRegistersResponse):
    pass


class RawInputRegistersResponse(_RawPayload, ReadInputRegistersResponse):
    pass


class RawCoilsResponse(_RawPayload, ReadCoilsResponse):
    pass


class RawDiscreteInputsResponse(_RawPayload, ReadDiscreteInputsResponse):
    pass


_RAW_RESPONSES: tuple[type[ModbusPDU], ...] = (
    RawHoldingRegistersResponse, RawInputRegistersResponse, RawCoilsResponse, RawDiscreteInputsResponse,
)
_READ_METHOD = {
    Table.HOLDING: "read_holding_registers",
    Table.INPUT: "read_input_registers",
    Table.COIL: "read_coils",
    Table.DISCRETE: "read_discrete_inputs",
}
_FUNCTION_CODE = {Table.HOLDING: 3, Table.INPUT: 4, Table.COIL: 1, Table.DISCRETE: 2}
_TABLE_WORDS = {Table.HOLDING: "holding registers", Table.INPUT: "input registers", Table.COIL: "coils",
                Table.DISCRETE: "discrete inputs"}

#: Modbus exception code -> (name, what to do, status code of the block's samples).
EXCEPTION_CODES: dict[int, tuple[str, str, int]] = {
    1: ("ILLEGAL FUNCTION", "the device does not serve this table (function code); check the signal's table "
        "in the register map", Status.BAD_NOT_SUPPORTED),
    2: ("ILLEGAL DATA ADDRESS", "check the register map (addresses, and whether the vendor counts from 0 or 1), "
        "or lower modbus.max_gap so that one read does not span unmapped registers", Status.BAD_OUT_OF_RANGE),
    3: ("ILLEGAL DATA VALUE", "the device refuses a read this long; lower modbus.max_block_registers",
        Status.BAD_OUT_OF_RANGE),
    4: ("SERVER DEVICE FAILURE", "the device failed while reading these addresses; check the device",
        Status.BAD_DEVICE_FAILURE),
    5: ("ACKNOWLEDGE", "the device is busy with a long operation; lower the poll rate", Status.BAD_DEVICE_FAILURE),
    6: ("SERVER DEVICE BUSY", "the device is busy; lower the poll rate or use fewer connections_per_device",
        Status.BAD_DEVICE_FAILURE),
    8: ("MEMORY PARITY ERROR", "the device reports a memory fault; check the device", Status.BAD_DEVICE_FAILURE),
    10: ("GATEWAY PATH UNAVAILABLE", "the gateway has no route to this unit id; check the gateway's routing table "
         "and the unit id", Status.BAD_NO_COMMUNICATION),
    11: ("GATEWAY TARGET DEVICE FAILED TO RESPOND", "the device behind the gateway does not answer; check its "
         "unit id, wiring and power", Status.BAD_NO_COMMUNICATION),
}
#: A float32 register pair whose magnitude exceeds this is implausible for a process value.
ABSURD_FLOAT32 = 1e9


# --------------------------------------------------------------------------------------------
# Circuit breaker
# --------------------------------------------------------------------------------------------
class BreakerState(enum.Enum):
    CLOSED = "closed"  # polling normally
    OPEN = "open"  # serving BAD without touching the network until the back-off expires
    HALF_OPEN = "half_open"  # the next poll is a probe


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a device's breaker opens and how long it stays open.

    The n-th consecutive opening waits ``min(backoff_max_s, backoff_initial_s * 2**(n-1))``, shortened
    by a random fraction of up to ``jitter`` so that many devices that died together (a switch
    reboot) do not all retry in the same tick.
    """

    failures_to_open: int = 3
    backoff_initial_s: float = 2.0
    backoff_max_s: float = 60.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.failures_to_open < 1 or self.backoff_initial_s <= 0 or self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(f"invalid breaker policy {self}")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")


class CircuitBreaker:
    """Consecutive-failure breaker with capped, jittered exponential back-off (monotonic seconds)."""

    def __init__(self, policy: BreakerPolicy, rng: random.Random) -> None:
        self.policy = policy
        self._rng = rng
        self.state = BreakerState.CLOSED
        self.failures = 0  # consecutive failed polls
        self.opens = 0  # consecutive openings without a success in between
        self.retry_at_s = 0.0
        self.backoff_s = 0.0

    def allow(self, now_s: float) -> bool:
        """May this tick touch the network? Moves OPEN to HALF_OPEN when the back-off has expired."""
        if self.state is BreakerState.OPEN:
            if now_s < self.retry_at_s:
                return False
            self.state = BreakerState.HALF_OPEN
        return True

    def record(self, success: bool, now_s: float) -> BreakerState | None:
        """Account a poll; returns the new state when it changed, else None."""
        before = self.state
        if success:
            self.failures = 0
            self.opens = 0
            self.state = BreakerState.CLOSED
        else:
            self.failures += 1
            if self.state is BreakerState.HALF_OPEN or self.failures >= self.policy.failures_to_open:
                self.opens += 1
                p = self.policy
                base = min(p.backoff_max_s, p.backoff_initial_s * 2.0 ** min(self.opens - 1, 62))
                self.backoff_s = base * (1.0 - p.jitter * self._rng.random())
                self.retry_at_s = now_s + self.backoff_s
                self.state = BreakerState.OPEN
        return self.state if self.state is not before else None


# --------------------------------------------------------------------------------------------
# The source
# --------------------------------------------------------------------------------------------
class _Outcome(enum.Enum):
    OK = 0
    FAILED = 1  # counted as an error
    NOT_TRIED = 2  # skipped after an earlier timeout or connect failure on the same connection


class _Silence(enum.Enum):
    """Why the device is not answering, as last logged (a change is logged, a repeat is not)."""

    ANSWERING = "answering"
    NO_RESPONSE = "no_response"  # nothing ever came back: wrong unit id, or nothing behind a gateway
    SLOW = "slow"  # answered before, now misses timeout_s


def _spread(blocks: tuple[Block, ...], connections: int) -> list[list[int]]:
    """Assign block indices to connections, largest first to the least loaded; each list in address order."""
    n = max(1, min(connections, len(blocks)))
    load = [0] * n
    lanes: list[list[int]] = [[] for _ in range(n)]
    for k in sorted(range(len(blocks)), key=lambda k: -blocks[k].nbytes):
        lane = load.index(min(load))
        lanes[lane].append(k)
        load[lane] += blocks[k].nbytes + 12  # a request's fixed cost, in payload-byte terms
    return [sorted(lane) for lane in lanes]


class ModbusSource:
    """Polls one Modbus TCP device on wall-clock ticks and delivers every poll through ``sink``."""

    def __init__(
        self,
        device: Device,
        table: SignalTable,
        settings: ModbusSettings,
        sink: Sink,
        stats: SourceStats,
        *,
        breaker: BreakerPolicy | None = None,
        rng: random.Random | None = None,
        status_sink: StatusSink | None = None,
    ) -> None:
        """Plan and prepare decoding (no network). Raises PlanError when a signal cannot be read.

        ``status_sink``: when given, polls go there with each sample's StatusCode instead of to ``sink``.
        """
        self.device = device
        self.settings = settings
        self.sink = sink
        self.stats = stats
        self.plan: ReadPlan = plan_device(
            table, device.index, max_block_registers=settings.max_block_registers,
            max_block_bits=settings.max_block_bits, max_gap=settings.max_gap,
        )
        self.codec = Codec.from_table(self.plan, table)
        self.signals = self.codec.signals
        n = len(self.codec)
        self._quality = np.zeros(n, dtype=np.uint8)
        self._all_bad = np.full(n, np.nan, dtype=np.float64)
        self._lanes = _spread(self.plan.blocks, settings.connections_per_device)
        self._outcome = [_Outcome.OK] * len(self.plan.blocks)
        self._status = [0] * len(self.plan.blocks)  # StatusCode of each failed block in this poll
        self._ever_answered = False  # any response arrived since start-up, even one too late to use
        self._silence = _Silence.ANSWERING
        self._silent_polls = 0  # consecutive polls with a timeout
        self._timeout_block = -1  # a block that timed out in this poll (for the log line)
        self._exception_logged: set[tuple[int, int]] = set()  # (block, code) already logged
        self._checked_plausible = [False] * len(self.plan.blocks)  # first good read of each block checked
        self._invalid = np.zeros(n, dtype=bool)
        self._status_col = np.zeros(n, dtype=np.uint32)
        self.status_sink = status_sink
        stats.bad_signals = BadSignals(len(table))
        self._ids = table.ids
        self._table_col = table.table
        self._address = table.address
        self.breaker = CircuitBreaker(breaker or BreakerPolicy(), rng or random.Random())
        self._period_ns = settings.period_ms * 1_000_000
        # pymodbus bounds each response wait by timeout_s; one guard per lane and poll (cheaper than one
        # per request) bounds the rest, should pymodbus ever wait elsewhere.
        self._lane_guard_s = [settings.timeout_s * (len(lane) + 1) + 0.5 for lane in self._lanes]
        self._clients: list[AsyncModbusTcpClient] = []
        self._lane_up: list[bool] = []
        self._ever_connected: list[bool] = []
        self._link_logged: bool | None = None  # device-level state last logged
        self._sink_failing = False
        self._name = f"modbus {device.name} ({device.host}:{device.port} unit {device.unit_id})"

    # ---- public -------------------------------------------------------------------------------
    async def run(self) -> None:
        """Poll until cancelled; only CancelledError escapes. Library log lines of this task name the device."""
        with log_source(self.device.name):
            await self._run()

    async def _run(self) -> None:
        self._clients = [self._make_client(lane) for lane in range(len(self._lanes))]
        self._lane_up = [False] * len(self._clients)
        self._ever_connected = [False] * len(self._clients)
        period = self._period_ns
        try:
            next_tick = next_tick_ns(time.time_ns(), self.settings.period_ms)
            while True:
                delay_ns = next_tick - time.time_ns()
                if delay_ns > 0:
                    await asyncio.sleep(delay_ns / 1e9)
                tick = next_tick
                started = time.perf_counter()
                try:
                    await self._poll(tick)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.stats.errors += 1
                    log.exception("%s: poll failed unexpectedly; continuing", self._name)
                raise_if_cancelled()  # a stop that a client library swallowed still stops the loop
                self.stats.last_poll_duration_s = elapsed_s = time.perf_counter() - started
                self.stats.poll_duration.observe(elapsed_s)
                next_tick = tick + period
                now = time.time_ns()
                if now >= next_tick:  # overran: poll the latest tick that has passed now, skip older ones
                    skipped = (now - next_tick) // period
                    self.stats.missed_ticks += skipped
                    self.stats.late_polls += 1
                    next_tick += skipped * period
        finally:
            for client in self._clients:
                client.close()
            self.stats.connected = False

    async def write(self, address: int, registers: list[int] | None = None, coil: bool | None = None) -> None:
        """Write holding ``registers`` (FC 6 / FC 16) or one ``coil`` (FC 5) over this source's connection.

        Used by ``edge.actions``. The request goes on the first connection between this source's block
        reads (pymodbus serialises requests per connection), so a poll waits for at most one write, and
        the write is bounded by ``timeout_s``. Raises DeviceDown when the breaker is open or the
        connection is down (nothing is sent, no reconnect is attempted: the poll loop owns that), and
        WriteFailed on an exception response or a timeout.
        """
        if not self._clients or not self._lane_up or not self._lane_up[0] or self.breaker.state is BreakerState.OPEN:
            raise DeviceDown(f"{self._name} is not connected")
        client = self._clients[0]
        unit = self.plan.unit_id
        try:
            async with asyncio.timeout(self.settings.timeout_s + 0.5):
                if coil is not None:
                    response = await client.write_coil(address, coil, device_id=unit)
                elif registers is not None and len(registers) == 1:
                    response = await client.write_register(address, registers[0], device_id=unit)
                elif registers:
                    response = await client.write_registers(address, registers, device_id=unit)
                else:
                    raise ValueError("write needs registers or a coil")
        except (TimeoutError, ModbusIOException) as exc:
            self.stats.errors += 1
            raise WriteFailed(f"{self._name}: no answer to the write at {address} within {self.settings.timeout_s} s"
                              ) from exc
        except (ConnectionException, OSError) as exc:
            raise DeviceDown(f"{self._name}: connection lost during the write ({exc})") from exc
        except ModbusException as exc:
            raise WriteFailed(f"{self._name}: write at {address} failed: {exc}") from exc
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            raise WriteFailed(f"{self._name}: write at {address} answered exception {code:#04x}")

    # ---- one poll -----------------------------------------------------------------------------
    async def _poll(self, tick_ns: int) -> None:
        stats = self.stats
        stats.last_poll_ns = tick_ns
        if not self.breaker.allow(time.monotonic()):
            stats.polls_short_circuited += 1
            stats.failing_blocks = len(self.plan.blocks)
            self._count_status(Status.BAD_NO_COMMUNICATION, len(self._all_bad))
            self._deliver(tick_ns, self._all_bad, _BAD, good=0, status=Status.BAD_NO_COMMUNICATION)
            return
        self._timeout_block = -1
        if len(self._lanes) == 1:
            await self._read_lane(0)
        else:
            await asyncio.gather(*(self._read_lane(lane) for lane in range(len(self._lanes))))

        outcome = self._outcome
        values = self.codec.decode()
        failed = [k for k, o in enumerate(outcome) if o is not _Outcome.OK]
        stats.failing_blocks = len(failed)
        self._note_silence(failed)
        invalid = self.codec.invalid(values, self._invalid)
        if not failed and not invalid:
            stats.last_good_poll_ns = tick_ns
            self._deliver(tick_ns, values, _GOOD, good=len(values))
        else:
            quality = self._quality
            quality.fill(_GOOD)
            status = self._status_col
            status.fill(0)
            if invalid:
                # NaN/inf from a register is not a measurement (often a wrong word order): BAD, not GOOD.
                quality[self._invalid] = _BAD
                status[self._invalid] = Status.BAD_DATA_ENCODING_INVALID
                self._count_status(Status.BAD_DATA_ENCODING_INVALID, invalid)
            for k in failed:
                rows = self.codec.block_rows[k]
                values[rows] = np.nan
                if invalid:
                    self._count_status(Status.BAD_DATA_ENCODING_INVALID, -int(np.count_nonzero(quality[rows])))
                quality[rows] = _BAD
                code = self._status[k] or Status.BAD_COMMUNICATION_ERROR
                status[rows] = code
                self._count_status(code, len(rows))
            n_bad = int(np.count_nonzero(quality))
            if not failed:
                stats.last_good_poll_ns = tick_ns
            self._deliver(tick_ns, values, quality, good=len(values) - n_bad, status=status)
        self._check_plausible(outcome, values)
        self._record_poll(success=len(failed) < len(outcome) or not outcome)

    def _count_status(self, code: int, n: int) -> None:
        if n:
            by = self.stats.bad_by_status
            by[code] = by.get(code, 0) + n

    def _block_text(self, k: int) -> str:
        b = self.plan.blocks[k]
        rows = self.codec.signals[self.codec.block_rows[k]]
        first = self._ids[int(rows[0])] if len(rows) else "-"
        plural = "" if len(rows) == 1 else "s"
        return f"{_TABLE_WORDS[b.table]} {b.start}-{b.start + b.count - 1} ({len(rows)} signal{plural} from {first})"

    def _note_silence(self, failed: list[int]) -> None:
        """Log when the device stops answering in time, and when it answers again (once per streak)."""
        k = self._timeout_block
        d = self.device
        if k < 0:
            if len(failed) < len(self._outcome):
                self._silent_polls = 0
                if self._silence is not _Silence.ANSWERING:
                    log.info("%s: answering again", self._name)
                    self._silence = _Silence.ANSWERING
            return
        self._silent_polls += 1
        if self._silent_polls < 2 and self._silence is _Silence.ANSWERING:
            return  # one miss is weather; and a slow device's late answer may still be on its way
        state = _Silence.SLOW if self._ever_answered else _Silence.NO_RESPONSE
        if state is self._silence:
            return
        self._silence = state
        if state is _Silence.NO_RESPONSE:
            log.warning("%s: no response from unit %d at %s:%d within %.1f s although TCP is up (reading %s); "
                        "check the unit id (a Modbus TCP server ignores unit ids it does not serve), or raise "
                        "modbus.timeout_s if the device is that slow", self._name, d.unit_id, d.host, d.port,
                        self.settings.timeout_s, self._block_text(k))
        else:
            log.warning("%s: no answer within timeout_s=%.1f s reading %s, although the device answered before; "
                        "it is slow or overloaded: raise modbus.timeout_s or modbus.period_ms (late answers are "
                        "discarded)", self._name, self.settings.timeout_s, self._block_text(k))

    def _check_plausible(self, outcome: list[_Outcome], values: np.ndarray) -> None:
        """On each block's first good read, warn once if most of its floats look like a wrong byte/word order."""
        checked = self._checked_plausible
        for k, o in enumerate(outcome):
            if checked[k] or o is not _Outcome.OK:
                continue
            checked[k] = True
            rows = self.codec.block_rows[k]
            rows = rows[self.codec.is_float[rows]]
            mask = self.codec.implausible(rows, ABSURD_FLOAT32)
            floats, absurd = len(rows), int(np.count_nonzero(mask))
            if floats and absurd * 2 > floats:
                sample = ", ".join(f"{self._ids[int(self.codec.signals[r])]} = {values[r]:.6g}"
                                   for r in rows[mask][:3].tolist())
                log.warning("%s: %d of %d float values of %s look implausible (%s); check byte_order (word order) "
                            "for this device or signal: vendors often ship CDAB (word swap) where the default is "
                            "ABCD", self._name, absurd, floats, self._block_text(k), sample)

    async def _read_lane(self, lane: int) -> None:
        """Read one connection's blocks in order, recording each block's outcome."""
        blocks = self._lanes[lane]
        outcome = self._outcome
        for k in blocks:
            outcome[k] = _Outcome.NOT_TRIED
        client = self._clients[lane]
        if not client.connected:
            self._lane_down(lane)
            if not await self._connect(lane):
                for k in blocks:
                    self._status[k] = Status.BAD_NOT_CONNECTED
                if blocks:
                    outcome[blocks[0]] = _Outcome.FAILED  # counted once per lane, not per block
                return
        try:
            async with asyncio.timeout(self._lane_guard_s[lane]):
                await self._read_blocks(lane, client, blocks)
        except TimeoutError:
            k = next(k for k in blocks if outcome[k] is _Outcome.NOT_TRIED)
            outcome[k] = _Outcome.FAILED
            self.stats.errors += 1
            self.stats.timeouts += 1
            self._timeout_block = k
        for k in blocks:
            if outcome[k] is _Outcome.NOT_TRIED and not self._status[k]:
                self._status[k] = Status.BAD_TIMEOUT

    async def _read_blocks(self, lane: int, client: AsyncModbusTcpClient, blocks: list[int]) -> None:
        stats = self.stats
        outcome = self._outcome
        unit = self.plan.unit_id
        status = self._status
        for k in blocks:
            status[k] = 0
        for k in blocks:
            block = self.plan.blocks[k]
            read: Callable[..., Awaitable[ModbusPDU]] = getattr(client, _READ_METHOD[block.table])
            try:
                response = await read(block.start, count=block.count, device_id=unit)
            except ModbusIOException as exc:
                # No answer within timeout_s: do not spend another timeout per remaining block.
                outcome[k] = _Outcome.FAILED
                stats.errors += 1
                stats.timeouts += 1
                self._timeout_block = k
                if not self._ever_answered:
                    stats.no_response += 1
                    status[k] = Status.BAD_NO_COMMUNICATION
                else:
                    status[k] = Status.BAD_TIMEOUT
                log.debug("%s: block %s timed out: %s", self._name, block, exc)
                return
            except ConnectionException as exc:
                outcome[k] = _Outcome.FAILED
                status[k] = Status.BAD_NOT_CONNECTED
                stats.errors += 1
                stats.connect_failures += 1
                self._lane_down(lane)
                log.debug("%s: connection lost reading %s: %s", self._name, block, exc)
                return
            except ModbusException as exc:
                outcome[k] = _Outcome.FAILED
                status[k] = Status.BAD_DECODING_ERROR
                stats.errors += 1
                stats.malformed += 1
                log.debug("%s: block %s failed: %s", self._name, block, exc)
                continue
            self._ever_answered = True
            if response.isError():
                outcome[k] = _Outcome.FAILED
                stats.errors += 1
                stats.exceptions += 1
                self._exception_response(k, int(getattr(response, "exception_code", 0) or 0))
                continue
            payload = getattr(response, "payload", None)
            if (payload is None or response.function_code != _FUNCTION_CODE[block.table]
                    or not self.codec.load(k, payload)):
                outcome[k] = _Outcome.FAILED
                status[k] = Status.BAD_DECODING_ERROR
                stats.errors += 1
                stats.malformed += 1
                continue
            outcome[k] = _Outcome.OK

    def _log_went_bad(self, went_bad: np.ndarray, status: np.ndarray) -> None:
        """Signals whose registers turned NaN/inf (failed blocks are logged by their own cause)."""
        nan = went_bad[status[went_bad] == Status.BAD_DATA_ENCODING_INVALID]
        if not len(nan):
            return
        rows = self.signals[nan]
        where = [f"{_TABLE_WORDS[TABLE_ORDER[int(self._table_col[r])]]} {int(self._address[r])}"
                 for r in rows[:5].tolist()]
        log.warning("%s: %d signal%s decode to NaN or inf, delivered BAD: %s; the device reports no valid value "
                    "(failed sensor?) or the byte_order is wrong (logged on change)", self._name, len(nan),
                    "" if len(nan) == 1 else "s", describe_signals(self._ids, rows, None, where))

    def _exception_response(self, k: int, code: int) -> None:
        """Count an exception response by code; log it once per block and code with what to do."""
        by = self.stats.exceptions_by_code
        by[code] = by.get(code, 0) + 1
        name, remedy, status = EXCEPTION_CODES.get(code, ("UNKNOWN EXCEPTION", "see the device's manual",
                                                          Status.BAD_DEVICE_FAILURE))
        self._status[k] = status
        if (k, code) in self._exception_logged:
            return
        self._exception_logged.add((k, code))
        log.warning("%s: exception %02d %s reading %s; %s (samples BAD as %s; logged once per block and code)",
                    self._name, code, name, self._block_text(k), remedy, status_name(status))

    def _deliver(self, tick_ns: int, values: np.ndarray, quality: np.ndarray | int, *, good: int,
                 status: np.ndarray | int = 0) -> None:
        stats = self.stats
        stats.polls += 1
        stats.samples_good += good
        stats.samples_bad += len(values) - good
        if good:
            stats.last_sample_ns = tick_ns
        went_bad = stats.bad_signals.update(self.signals, quality)
        if went_bad is not None and np.ndim(status) == 1:
            self._log_went_bad(went_bad, status)  # type: ignore[arg-type]
        try:
            if self.status_sink is not None:
                self.status_sink(tick_ns, self.signals, values, quality, status)
            else:
                self.sink(tick_ns, self.signals, values, quality)
        except Exception:
            stats.errors += 1
            if not self._sink_failing:
                self._sink_failing = True
                log.exception("%s: sink failed; samples of this poll are lost (logged once per streak)", self._name)
            return
        self._sink_failing = False

    def _record_poll(self, *, success: bool) -> None:
        change = self.breaker.record(success, time.monotonic())
        if change is None:
            return
        b = self.breaker
        if change is BreakerState.OPEN:
            self.stats.breaker_opens += 1
            self.stats.breaker_open = True
            level = logging.WARNING if b.opens == 1 else logging.DEBUG
            log.log(level, "%s: %d failed polls, serving BAD samples; next try in %.1f s",
                    self._name, b.failures, b.backoff_s)
            for lane, client in enumerate(self._clients):
                client.close()  # a fresh connection on the probe; some PLC stacks wedge otherwise
                self._lane_down(lane, quiet=True)  # our own close: the line above says why
        elif change is BreakerState.CLOSED:
            self.stats.breaker_open = False
            log.info("%s: polling again", self._name)

    # ---- connections --------------------------------------------------------------------------
    def _make_client(self, lane: int) -> AsyncModbusTcpClient:
        client = AsyncModbusTcpClient(
            self.device.host,
            port=self.device.port,
            name=f"{self.device.name}#{lane}",
            timeout=self.settings.timeout_s,
            retries=0,
            reconnect_delay=0,  # reconnects are ours, spaced by the breaker
            trace_connect=partial(self._on_connection, lane),
            trace_pdu=self._on_pdu,
        )
        for cls in _RAW_RESPONSES:
            client.register(cls)
        return client

    async def _connect(self, lane: int) -> bool:
        try:
            async with asyncio.timeout(self.settings.timeout_s + 0.5):
                ok = await self._clients[lane].connect()
        except (TimeoutError, OSError, ModbusException):
            ok = False
        if not ok:
            self.stats.errors += 1
            self.stats.connect_failures += 1
            if self._link_logged is not False:
                self._link_logged = False
                log.warning("%s: cannot connect; retrying with back-off", self._name)
            return False
        # connection_made has run (trace_connect) by the time connect() returns.
        return True

    def _on_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        """pymodbus's trace_pdu: sees every response, including one that came too late to be used."""
        if not sending:
            self._ever_answered = True
        return pdu

    def _on_connection(self, lane: int, up: bool, *_: Any) -> None:
        """pymodbus's trace_connect: called on connection made and on connection lost."""
        if up:
            if self._ever_connected[lane]:
                self.stats.reconnects += 1
            self._ever_connected[lane] = True
        was_up = self._lane_up[lane]
        self._lane_up[lane] = up
        # pymodbus closes a connection after a few unanswered requests: the silence was logged already.
        self._update_link(quiet=not up and was_up and self._silence is not _Silence.ANSWERING)

    def _lane_down(self, lane: int, *, quiet: bool = False) -> None:
        if self._lane_up and self._lane_up[lane]:
            self._lane_up[lane] = False
            self._update_link(quiet=quiet)

    def _update_link(self, *, quiet: bool = False) -> None:
        """Publish the device-level state and log its changes; a breaker probe's connect and drop is quiet."""
        up = all(self._lane_up)
        self.stats.connected = up
        # A breaker probe, or pymodbus reconnecting after it dropped a silent connection: not news.
        probing = self.breaker.opens > 0 or self._silence is not _Silence.ANSWERING
        if up and self._link_logged is not True:
            self._link_logged = True
            log.log(logging.DEBUG if probing else logging.INFO, "%s: connected (%d connection%s)", self._name,
                    len(self._lane_up), "" if len(self._lane_up) == 1 else "s")
        elif not up and self._link_logged is True:
            self._link_logged = False
            log.log(logging.DEBUG if quiet else logging.WARNING, "%s: connection lost", self._name)
