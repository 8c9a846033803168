"""The plant model: machine templates instantiated N times on devices (Modbus slaves, OPC-UA servers).

A plant file is the signal catalogue that both the simulator (which serves it) and the edge gateway
(which reads it) use, so a 15,000-signal plant is a few dozen lines, not 15,000. It answers "which
signals exist and where is each one read from", nothing about MQTT or InfluxDB.

Expansion rules (chosen to match how integrators lay out PLC register maps):
- A device group with ``count: n`` expands to n devices named by formatting ``name`` with
  ``i`` = 1..n; device k listens on ``port + (k-1) * port_step`` (the simulator serves one slave per
  port, as separate PLCs on distinct IPs would be).
- A machine group with ``count: n`` expands to n machines named ``name.format(i=1..n)``; machine k
  goes on device ``floor(k * ndev / n)`` of its device group, so consecutive machines share a PLC.
- Within a Modbus device, each machine occupies a contiguous register block: template signals are
  laid out in order (or at their explicit ``offset``), and each machine's block starts at the next
  multiple of ``machine_stride`` (default: block size rounded up to 10) after the previous one.
- A signal id is ``<machine>.<signal>``; on OPC-UA its node id is ``ns=<ns>;s=<signal id>``.
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator


class Protocol(enum.StrEnum):
    MODBUS = "modbus"
    OPCUA = "opcua"


class RegisterType(enum.StrEnum):
    """Wire types a Modbus register map uses; ``bit`` is a single bit inside one 16-bit register."""

    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    BOOL = "bool"
    BIT = "bit"


REGISTER_WIDTH: dict[RegisterType, int] = {
    RegisterType.INT16: 1,
    RegisterType.UINT16: 1,
    RegisterType.INT32: 2,
    RegisterType.UINT32: 2,
    RegisterType.INT64: 4,
    RegisterType.FLOAT32: 2,
    RegisterType.FLOAT64: 4,
    RegisterType.BOOL: 1,
    RegisterType.BIT: 1,
}


class ByteOrder(enum.StrEnum):
    """Byte and word order of multi-register values, in the vendor notation.

    ABCD is big-endian bytes and words (Modbus standard); CDAB swaps words (common on Schneider,
    Siemens converters); BADC swaps bytes in each word; DCBA is fully little-endian.
    """

    ABCD = "ABCD"
    CDAB = "CDAB"
    BADC = "BADC"
    DCBA = "DCBA"


class Table(enum.StrEnum):
    HOLDING = "holding"
    INPUT = "input"
    COIL = "coil"
    DISCRETE = "discrete"


class Quality(enum.IntEnum):
    """Per-sample quality carried in frames and on the wire (uint8)."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SignalTemplate(_Strict):
    """One signal of a machine template: what it measures and how it is encoded and simulated."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_{}:]+$")]
    count: int = Field(default=1, ge=1, le=1000, description="repeat as name.format(j=1..count)")
    unit: str = ""
    kind: str = "generic"
    type: RegisterType = RegisterType.FLOAT32
    table: Table = Table.HOLDING
    offset: int | None = Field(default=None, ge=0, description="register offset inside the machine block")
    bit: int = Field(default=0, ge=0, le=15, description="bit index for type 'bit'")
    byte_order: ByteOrder | None = None
    scale: float = 1.0
    value_offset: float = 0.0
    # Simulation shape (simple signals; the full physics lives in simulators/).
    base: float = 0.0
    amplitude: float = 1.0
    period_s: float = Field(default=600.0, gt=0)
    noise: float = Field(default=0.05, ge=0)
    low: float | None = None
    high: float | None = None


class MachineTemplate(_Strict):
    description: str = ""
    signals: Annotated[list[SignalTemplate], Field(min_length=1)]

    @field_validator("signals")
    @classmethod
    def _unique_names(cls, signals: list[SignalTemplate]) -> list[SignalTemplate]:
        seen: set[str] = set()
        for s in signals:
            if s.count > 1 and "{j" not in s.name:
                raise ValueError(f"signal {s.name!r} has count {s.count} but no '{{j}}' placeholder")
            if s.count > 1 and s.offset is not None:
                raise ValueError(f"signal {s.name!r}: an explicit offset cannot be repeated (count > 1)")
            for name, _ in _repeat(s):
                if name in seen:
                    raise ValueError(f"duplicate signal name {name!r}")
                seen.add(name)
        return signals

    def expanded(self) -> list[tuple[str, SignalTemplate]]:
        """(signal name, template) for every signal, repeated signals spelled out in order."""
        return [pair for s in self.signals for pair in _repeat(s)]


def _repeat(s: SignalTemplate) -> list[tuple[str, SignalTemplate]]:
    if s.count == 1:
        return [(s.name.format(j=1) if "{j" in s.name else s.name, s)]
    return [(s.name.format(j=j), s) for j in range(1, s.count + 1)]


class DeviceGroup(_Strict):
    """One or more devices of one protocol; ``count`` > 1 needs ``{i}`` in the name."""

    name: str
    protocol: Protocol
    count: int = Field(default=1, ge=1, le=10_000)
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    port_step: int = Field(default=1, ge=0)
    # Modbus
    unit_id: int = Field(default=1, ge=0, le=255)
    byte_order: ByteOrder = ByteOrder.ABCD
    machine_stride: int | None = Field(default=None, ge=1)
    # OPC-UA
    path: str = "/plantwire"
    namespace: str = "urn:plantwire:sim"


class MachineGroup(_Strict):
    name: str
    template: str
    device: str
    count: int = Field(default=1, ge=1, le=100_000)


class PlantConfig(_Strict):
    site: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    templates: dict[str, MachineTemplate]
    devices: Annotated[list[DeviceGroup], Field(min_length=1)]
    machines: Annotated[list[MachineGroup], Field(min_length=1)]

    def semantic_errors(self) -> list[str]:
        """Cross-reference checks pydantic cannot express; each error starts with its path."""
        from plantwire.plantrefs import cross_errors  # also run on the raw file when fields fail

        raw = {
            "templates": {name: {} for name in self.templates},
            "devices": [g.model_dump(mode="json") for g in self.devices],
            "machines": [m.model_dump(mode="json") for m in self.machines],
        }
        errors = cross_errors(raw)
        if errors:
            return errors
        try:
            expand(self)
        except PlantLayoutError as exc:
            errors.append(str(exc))
        return errors


class PlantLayoutError(ValueError):
    """A plant that validates field by field but cannot be laid out (overlaps, duplicates)."""


@dataclass(frozen=True, slots=True)
class Device:
    index: int
    name: str
    protocol: Protocol
    host: str
    port: int
    unit_id: int
    path: str
    namespace: str

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}{self.path}"


@dataclass(frozen=True, slots=True)
class SignalTable:
    """The expanded plant as columns, index = signal number used in frames and on the wire.

    Built once at start-up (15,000 rows); hot paths use the numpy columns, never ``ids``.
    """

    site: str
    ids: list[str]
    machine_ids: list[str]
    units: list[str]
    kinds: list[str]
    devices: list[Device]
    device: np.ndarray  # int32, index into devices
    machine: np.ndarray  # int32, index into machine_ids
    table: np.ndarray  # uint8, Table order
    address: np.ndarray  # int32 register / bit address on the device
    reg_type: np.ndarray  # uint8, RegisterType order
    bit: np.ndarray  # uint8
    byte_order: np.ndarray  # uint8, ByteOrder order
    scale: np.ndarray  # float64
    value_offset: np.ndarray  # float64
    base: np.ndarray  # float64 (simulation)
    amplitude: np.ndarray
    period_s: np.ndarray
    noise: np.ndarray
    low: np.ndarray  # float64, NaN when unset
    high: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def signals_of(self, device_index: int) -> np.ndarray:
        return np.flatnonzero(self.device == device_index)

    def table_hash(self) -> bytes:
        """8-byte identity of the table carried in every batch; changes whenever ids or units change."""
        h = hashlib.blake2b(digest_size=8)
        for sid, unit, kind, m in zip(self.ids, self.units, self.kinds, self.machine.tolist(), strict=True):
            h.update(f"{sid}\x1f{self.machine_ids[m]}\x1f{unit}\x1f{kind}\x1e".encode())
        return h.digest()

    def signal_machines(self) -> list[str]:
        """Machine id of every signal (for the signal-table message)."""
        return [self.machine_ids[m] for m in self.machine.tolist()]


TABLE_ORDER = list(Table)
TYPE_ORDER = list(RegisterType)
BYTE_ORDER_ORDER = list(ByteOrder)


def _expand_devices(plant: PlantConfig) -> tuple[list[Device], dict[str, list[int]]]:
    devices: list[Device] = []
    by_group: dict[str, list[int]] = {}
    for g in plant.devices:
        members: list[int] = []
        for k in range(g.count):
            name = g.name.format(i=k + 1) if g.count > 1 else g.name
            devices.append(
                Device(
                    index=len(devices),
                    name=name,
                    protocol=g.protocol,
                    host=g.host,
                    port=g.port + k * g.port_step,
                    unit_id=g.unit_id,
                    path=g.path,
                    namespace=g.namespace,
                )
            )
            members.append(len(devices) - 1)
        by_group[g.name] = members
    return devices, by_group


def _layout(template: MachineTemplate) -> tuple[list[int], int]:
    """Register offsets of a template's signals within one machine block, and the block size."""
    offsets: list[int] = []
    used: dict[tuple[Table, int], str] = {}
    cursor = 0
    for name, s in template.expanded():
        width = REGISTER_WIDTH[s.type]
        start = s.offset if s.offset is not None else cursor
        for r in range(start, start + width):
            key = (s.table, r)
            if key in used and s.type is not RegisterType.BIT:
                raise PlantLayoutError(f"signal {name!r} overlaps {used[key]!r} at register offset {r}")
            used[key] = name
        offsets.append(start)
        cursor = max(cursor, start + width)
    return offsets, cursor


def expand(plant: PlantConfig) -> SignalTable:
    """Expand templates × counts into the signal table (deterministic order: machine groups, then signals)."""
    devices, by_group = _expand_devices(plant)
    group_by_name = {g.name: g for g in plant.devices}
    next_free: dict[int, int] = {d.index: 0 for d in devices}
    ids: list[str] = []
    machine_ids: list[str] = []
    cols: dict[str, list[float | int]] = {k: [] for k in (
        "device", "machine", "table", "address", "reg_type", "bit", "byte_order", "scale",
        "value_offset", "base", "amplitude", "period_s", "noise", "low", "high")}
    units: list[str] = []
    kinds: list[str] = []
    seen_ids: set[str] = set()
    seen_machines: set[str] = set()
    for gi, mg in enumerate(plant.machines):
        template = plant.templates[mg.template]
        dgroup = group_by_name[mg.device]
        members = by_group[mg.device]
        offsets, block = _layout(template)
        stride = dgroup.machine_stride or max(10, math.ceil(block / 10.0) * 10)
        if block > stride:
            raise PlantLayoutError(
                f"machines[{gi}]: template {mg.template!r} needs {block} registers, "
                f"more than machine_stride {stride} of device group {dgroup.name!r}"
            )
        for k in range(mg.count):
            mname = mg.name.format(i=k + 1) if mg.count > 1 else mg.name
            if mname in seen_machines:
                raise PlantLayoutError(f"machines[{gi}].name: machine {mname!r} is defined twice")
            seen_machines.add(mname)
            midx = len(machine_ids)
            machine_ids.append(mname)
            dev_index = members[(k * len(members)) // mg.count]
            dev = devices[dev_index]
            base_addr = next_free[dev_index]
            next_free[dev_index] = base_addr + stride
            if dev.protocol is Protocol.MODBUS and base_addr + block > 65536:
                raise PlantLayoutError(f"machines[{gi}]: device {dev.name!r} runs out of its 65,536 registers")
            order = dgroup.byte_order
            for (sname, s), off in zip(template.expanded(), offsets, strict=True):
                sid = f"{mname}.{sname}"
                if sid in seen_ids:
                    raise PlantLayoutError(f"machines[{gi}]: signal id {sid!r} is defined twice")
                seen_ids.add(sid)
                ids.append(sid)
                units.append(s.unit)
                kinds.append(s.kind)
                cols["device"].append(dev_index)
                cols["machine"].append(midx)
                cols["table"].append(TABLE_ORDER.index(s.table))
                cols["address"].append(base_addr + off)
                cols["reg_type"].append(TYPE_ORDER.index(s.type))
                cols["bit"].append(s.bit)
                cols["byte_order"].append(BYTE_ORDER_ORDER.index(s.byte_order or order))
                cols["scale"].append(s.scale)
                cols["value_offset"].append(s.value_offset)
                cols["base"].append(s.base)
                cols["amplitude"].append(s.amplitude)
                cols["period_s"].append(s.period_s)
                cols["noise"].append(s.noise)
                cols["low"].append(np.nan if s.low is None else s.low)
                cols["high"].append(np.nan if s.high is None else s.high)
    f64 = np.float64
    return SignalTable(
        site=plant.site,
        ids=ids,
        machine_ids=machine_ids,
        units=units,
        kinds=kinds,
        devices=devices,
        device=np.asarray(cols["device"], dtype=np.int32),
        machine=np.asarray(cols["machine"], dtype=np.int32),
        table=np.asarray(cols["table"], dtype=np.uint8),
        address=np.asarray(cols["address"], dtype=np.int32),
        reg_type=np.asarray(cols["reg_type"], dtype=np.uint8),
        bit=np.asarray(cols["bit"], dtype=np.uint8),
        byte_order=np.asarray(cols["byte_order"], dtype=np.uint8),
        scale=np.asarray(cols["scale"], dtype=f64),
        value_offset=np.asarray(cols["value_offset"], dtype=f64),
        base=np.asarray(cols["base"], dtype=f64),
        amplitude=np.asarray(cols["amplitude"], dtype=f64),
        period_s=np.asarray(cols["period_s"], dtype=f64),
        noise=np.asarray(cols["noise"], dtype=f64),
        low=np.asarray(cols["low"], dtype=f64),
        high=np.asarray(cols["high"], dtype=f64),
    )



def relocate_ports(plant: PlantConfig, block_of: Callable[[int], int], avoid: Iterable[int] = ()) -> PlantConfig:
    """A copy of ``plant`` whose device groups listen on ports chosen by ``block_of(count)``.

    Tests and the demo use it to run a plant on free loopback ports; port_step becomes 1. Nothing is
    bound between two ``block_of`` calls, so two groups could be handed overlapping blocks (a Modbus
    slave then takes an OPC-UA server's port and the simulator fails to start): a block that overlaps
    an earlier group's, or a port in ``avoid`` (picked elsewhere, not bound yet), is asked for again.
    """
    used: set[int] = set(avoid)
    groups = []
    for g in plant.devices:
        for _ in range(1000):
            port = block_of(g.count)
            block = set(range(port, port + g.count))
            if not block & used:
                break
        else:
            raise RuntimeError(f"relocate_ports: no port block for {g.name!r} apart from the other groups'")
        used |= block
        groups.append(g.model_copy(update={"port": port, "port_step": 1}))
    return plant.model_copy(update={"devices": groups})
