"""Modbus TCP slaves that answer reads straight from the simulator's register images.

Why not pymodbus's datastores: they keep one Python int per register and build every response
register by register (``struct.pack`` per word); at 12,000 signals and 10 Hz that alone would eat
a core. Here the server's request classes for function codes 1-4 are replaced (pymodbus's
``custom_pdu`` hook) by ones whose ``datastore_update`` asks an :class:`ImageStore` for the bytes:
a slice of the numpy image for registers, ``np.packbits`` for coils. The response object carries
those bytes and encodes as them, so a 125-register read costs a few microseconds.

Behaviour a gateway under test sees, chosen to match real PLCs:
- Reads past the end of a table answer exception 0x02 (illegal data address); writes answer 0x01
  (illegal function): the process image is read-only. The exception is the command area a plant's
  machines declare (``simulators.commands``: holding registers from 0xF000, FC 3 reads them,
  FC 6 / FC 16 write them, an out-of-range value answers 0x03).
- A unit id the port does not serve answers 0x0B (gateway target failed to respond), as a Modbus
  TCP gateway does for a slave that is not there.
- Per unit, a :class:`UnitMode` set by the fault schedule or a test: ``exception`` answers every
  read with a chosen exception code, ``timeout`` swallows requests (the client times out),
  ``slow`` answers after a delay. ``ModbusSlave.stop()``/``start()`` make the slave dead or back.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.pdu.bit_message import (
    ReadCoilsRequest,
    ReadCoilsResponse,
    ReadDiscreteInputsRequest,
    ReadDiscreteInputsResponse,
)
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    ReadInputRegistersRequest,
    ReadInputRegistersResponse,
)
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from .commands import COMMAND_BASE, CommandPoints
from .encoding import DeviceImage

__all__ = ["ImageStore", "ModbusSlave", "UnitMode", "UnitState"]

log = logging.getLogger(__name__)


class UnitMode(enum.StrEnum):
    NORMAL = "normal"
    EXCEPTION = "exception"
    TIMEOUT = "timeout"
    SLOW = "slow"


@dataclass(slots=True)
class UnitState:
    """How one unit currently misbehaves (NORMAL: it does not)."""

    mode: UnitMode = UnitMode.NORMAL
    exception_code: int = int(ExcCodes.DEVICE_FAILURE)
    delay_s: float = 0.0


@dataclass(slots=True)
class ServeStats:
    requests: int = 0
    exceptions: int = 0
    swallowed: int = 0


class _RawBody:
    """Mixin for responses whose body (after the function code) is precomputed bytes."""

    body: bytes = b""

    def encode(self) -> bytes:
        return self.body

    def __str__(self) -> str:  # pymodbus formats PDUs for debug lines; keep that cheap
        return f"{type(self).__name__}({len(self.body)} bytes)"


class _HoldingResponse(_RawBody, ReadHoldingRegistersResponse):
    pass


class _InputResponse(_RawBody, ReadInputRegistersResponse):
    pass


class _CoilsResponse(_RawBody, ReadCoilsResponse):
    pass


class _DiscreteResponse(_RawBody, ReadDiscreteInputsResponse):
    pass


_RESPONSE: dict[int, type[ModbusPDU]] = {1: _CoilsResponse, 2: _DiscreteResponse, 3: _HoldingResponse,
                                         4: _InputResponse}


class _ImageRead:
    """Mixin for read requests: answer from the ImageStore the server holds as its context."""

    function_code: int
    address: int
    count: int
    transaction_id: int

    async def datastore_update(self, context: ImageStore, device_id: int) -> ModbusPDU:  # type: ignore[override]
        return await context.read(self.function_code, self.address, self.count, device_id, self.transaction_id)

    def __str__(self) -> str:
        return f"{type(self).__name__}(fc={self.function_code}, {self.address}+{self.count})"


class _HoldingRequest(_ImageRead, ReadHoldingRegistersRequest):  # type: ignore[misc]
    pass


class _InputRequest(_ImageRead, ReadInputRegistersRequest):  # type: ignore[misc]
    pass


class _CoilsRequest(_ImageRead, ReadCoilsRequest):  # type: ignore[misc]
    pass


class _DiscreteRequest(_ImageRead, ReadDiscreteInputsRequest):  # type: ignore[misc]
    pass


_CUSTOM_PDUS: list[type[ModbusPDU]] = [_HoldingRequest, _InputRequest, _CoilsRequest, _DiscreteRequest]


@dataclass
class ImageStore:
    """The 'datastore' of one TCP server: unit id -> device image, plus each unit's misbehaviour."""

    units: dict[int, DeviceImage]
    state: dict[int, UnitState] = field(default_factory=dict)
    stats: ServeStats = field(default_factory=ServeStats)
    commands: CommandPoints | None = None
    on_command: Callable[[], None] | None = None  # after every accepted command write

    def __post_init__(self) -> None:
        for unit in self.units:
            self.state.setdefault(unit, UnitState())

    async def read(self, fc: int, address: int, count: int, unit: int, transaction_id: int) -> ModbusPDU:
        """The response to a read of ``count`` registers/bits at ``address`` (function code ``fc``)."""
        self.stats.requests += 1
        image = self.units.get(unit)
        if image is None:
            self.stats.exceptions += 1
            return ExceptionResponse(fc, ExcCodes.GATEWAY_NO_RESPONSE)
        st = self.state[unit]
        if st.mode is UnitMode.TIMEOUT:
            self.stats.swallowed += 1
            raise NoSuchIdException(f"unit {unit} is simulating a timeout")  # server sends nothing
        if st.mode is UnitMode.EXCEPTION:
            self.stats.exceptions += 1
            return ExceptionResponse(fc, st.exception_code)
        if st.mode is UnitMode.SLOW and st.delay_s > 0:
            await asyncio.sleep(st.delay_s)
        if fc == 3 and address >= COMMAND_BASE and self.commands is not None:
            regs = self.commands.modbus_read(image.device, address, count)
            if regs is None:
                self.stats.exceptions += 1
                return ExceptionResponse(fc, ExcCodes.ILLEGAL_ADDRESS)
            resp = _RESPONSE[fc](dev_id=unit, transaction_id=transaction_id)
            resp.body = bytes((2 * count,)) + b"".join(r.to_bytes(2, "big") for r in regs)  # type: ignore[attr-defined]
            return resp
        if fc in (3, 4):
            buf = image.holding if fc == 3 else image.input
            a, b = 2 * address, 2 * (address + count)
            if b > buf.size:
                self.stats.exceptions += 1
                return ExceptionResponse(fc, ExcCodes.ILLEGAL_ADDRESS)
            body = bytes((2 * count,)) + buf[a:b].tobytes()
        else:
            buf = image.coil if fc == 1 else image.discrete
            if address + count > buf.size:
                self.stats.exceptions += 1
                return ExceptionResponse(fc, ExcCodes.ILLEGAL_ADDRESS)
            packed = np.packbits(buf[address : address + count], bitorder="little").tobytes()
            body = bytes((len(packed),)) + packed
        resp = _RESPONSE[fc](dev_id=unit, transaction_id=transaction_id)
        resp.body = body  # type: ignore[attr-defined]
        return resp

    # pymodbus's stock PDUs (writes, diagnostics) call these; only the command area is writable.
    async def async_getValues(self, device_id: int, func_code: int, address: int,
                              count: int = 1) -> ExcCodes | list[int]:
        image = self.units.get(device_id)
        if func_code in (6, 16) and image is not None and self.commands is not None:
            regs = self.commands.modbus_read(image.device, address, count)
            if regs is not None:
                return regs
        return ExcCodes.ILLEGAL_FUNCTION

    async def async_setValues(self, device_id: int, func_code: int, address: int, values: object) -> ExcCodes | None:
        self.stats.requests += 1
        image = self.units.get(device_id)
        if image is None:
            self.stats.exceptions += 1
            return ExcCodes.GATEWAY_NO_RESPONSE
        st = self.state[device_id]
        if st.mode is UnitMode.TIMEOUT:
            self.stats.swallowed += 1
            raise NoSuchIdException(f"unit {device_id} is simulating a timeout")
        if st.mode is UnitMode.EXCEPTION:
            self.stats.exceptions += 1
            return ExcCodes(st.exception_code)
        if func_code not in (6, 16) or self.commands is None or not isinstance(values, list):
            self.stats.exceptions += 1
            return ExcCodes.ILLEGAL_FUNCTION
        refused = self.commands.modbus_write(image.device, address, [int(v) for v in values])
        if refused is not None:
            self.stats.exceptions += 1
            return ExcCodes.ILLEGAL_FUNCTION if refused == "address" else ExcCodes.ILLEGAL_VALUE
        if self.on_command is not None:
            self.on_command()
        return None

    def device_ids(self) -> list[int]:
        return list(self.units)


class ModbusSlave:
    """One Modbus TCP server (host, port) answering for one or more unit ids from their images."""

    def __init__(self, host: str, port: int, units: dict[int, DeviceImage], name: str = "", *,
                 commands: CommandPoints | None = None, on_command: Callable[[], None] | None = None) -> None:
        self.host = host
        self.port = port
        self.name = name or f"{host}:{port}"
        self.store = ImageStore(units, commands=commands, on_command=on_command)
        self._server: ModbusTcpServer | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Listen (raises OSError-like RuntimeError if the port is taken)."""
        if self._server is not None:
            return
        # pymodbus insists on a SimDevice; it is never consulted since our requests read the store.
        placeholder = SimDevice(id=0, simdata=[SimData(0, values=[0], datatype=DataType.REGISTERS)])
        server = ModbusTcpServer(placeholder, address=(self.host, self.port), custom_pdu=_CUSTOM_PDUS,
                                 ignore_missing_devices=True)
        server.context = self.store  # type: ignore[assignment]
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:  # pymodbus says only "could not start listen"
            raise RuntimeError(f"Modbus slave {self.name} cannot listen on {self.host}:{self.port} "
                               "(port taken or address not local?)") from exc
        self._server = server

    async def stop(self) -> None:
        """Close the listener and every connection (a dead or rebooting PLC)."""
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()
