"""The plant model: machine templates instantiated N times on devices (Modbus slaves, OPC-UA servers).

A plant file is the signal catalogue that both the simulator (which serves it) and the edge gateway
(which reads it) use, so a 15,000-signal plant is a few dozen lines, not 15,000. It answers "which
signals exist and where is each one read from", nothing about MQTT or InfluxDB.

Expansion rules (chosen to match how integrators lay out PLC register maps):
- A device group with ``count: n`` expands to n devices; ``name``, ``host``, ``port`` and ``unit_id``
  are templates formatted with ``i`` = 1..n (``host: "10.0.3.{i}"``, ``unit_id: "{i}"``, with format
  specs like ``{i:02d}``); any other placeholder is an error naming its path. An integer ``port``
  gives device k the port ``port + (k-1) * port_step`` (the simulator serves one slave per port, as
  separate PLCs on distinct IPs would be; real PLCs on their own addresses want ``port_step: 0``).
  Two devices that resolve to the same host, port and unit id read one PLC twice: an error inside
  one group, a warning across groups (``PlantConfig.semantic_warnings``).
- A machine group with ``count: n`` expands to n machines named ``name.format(i=1..n)``; machine k
  goes on device ``floor(k * ndev / n)`` of its device group, so consecutive machines share a PLC.
- Within a Modbus device, each machine occupies a register block: template signals are laid out in
  order (or at their explicit ``offset``), and each machine's block starts at the next multiple of
  ``machine_stride`` (default: block size rounded up to 10) after the previous one. How the
  address cursor treats the four tables is the device group's ``register_layout``:
  ``per_table`` gives holding, input, coil and discrete tables a cursor each (an input-register
  machine after a holding-register one starts at input register 0; a template's input signals
  start at offset 0 of their own table), as vendors' maps number each table from 0.
  ``shared`` (what plants written before 2026-12 read; the default while unset) runs one cursor
  over all four tables. ``plantwire check`` warns when an unset layout meets a device or template
  that mixes tables, since the two layouts then read different addresses.
- A signal id is ``<machine>.<signal>``. On OPC-UA its node is the template signal's ``node``
  (any standard node id form, plantwire.nodeid; ``{machine}``, ``{i}`` (machine index) and ``{j}``
  (repeat index) are filled in), else ``ns=<index of the device's namespace>;s=<signal id>``.
  ``SignalTable.nodes`` holds each OPC-UA signal's node id text, the default one as
  ``nsu=<namespace>;s=<signal id>``.
"""

from __future__ import annotations

import enum
import hashlib
import math
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from plantwire.nodeid import parse_node_id


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


class RegisterLayout(enum.StrEnum):
    """How machine blocks take register addresses on a Modbus device (module docstring)."""

    PER_TABLE = "per_table"  # one cursor per table: each table numbered from 0, as vendors' maps are
    SHARED = "shared"  # one cursor over all four tables (plants written before 2026-12)


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
    # OPC-UA: the variable's node id in any standard form (plantwire.nodeid), independent of the name.
    node: str | None = Field(default=None, min_length=1)

    @field_validator("node")
    @classmethod
    def _node_syntax(cls, node: str | None) -> str | None:
        if node is not None:
            parse_node_id(format_placeholders(node, _NODE_PLACEHOLDERS, "node"))
        return node


#: What a template signal's ``node`` may name, with sample values used to check its syntax.
_NODE_PLACEHOLDERS: dict[str, Any] = {"machine": "m", "i": 1, "j": 1}


def format_placeholders(text: str, values: dict[str, Any], what: str) -> str:
    """``text.format(**values)``, with a clear error for a placeholder not in ``values`` or a bad format.

    Used for device hosts/ports/unit ids (``{i}``) and node ids (``{machine}``, ``{i}``, ``{j}``): a
    ``{k}`` that ``str.format`` would turn into a KeyError becomes "unknown placeholder {k}".
    """
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as exc:
        raise ValueError(f"{what} {text!r}: {exc} (a literal brace is written {{{{ or }}}})") from None
    for f in fields:
        if f.split(".")[0].split("[")[0] not in values:
            known = ", ".join("{" + k + "}" for k in values)
            raise ValueError(f"{what} {text!r}: unknown placeholder {{{f}}}; known: {known}")
    try:
        return text.format(**values)
    except (ValueError, TypeError, IndexError, AttributeError) as exc:
        raise ValueError(f"{what} {text!r}: {exc}") from None


class Criticality(enum.StrEnum):
    """How much a machine matters to the plant; the alarm layer (``edge/alarms``) derives priority from it."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


AREA_PATTERN = r"^[A-Za-z0-9_.{}:-]{1,64}$"


class MachineStateSignal(_Strict):
    """Which signal says a machine is off or idle, and its values that mean so (alarm-state suppression).

    Unset, the alarm layer uses a ``kind: state`` signal named ``running`` with 0 meaning off.
    """

    signal: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]+$", description="signal name within the template")]
    off_values: Annotated[list[float], Field(min_length=1, max_length=16,
                                             description="values of the signal that mean off or idle")]


class MachineTemplate(_Strict):
    description: str = ""
    signals: Annotated[list[SignalTemplate], Field(min_length=1)]
    # Alarm management (edge/alarms): operator area, machine criticality, state signal. A machine group's own
    # ``area``/``criticality`` win over these.
    area: Annotated[str | None, Field(default=None, pattern=AREA_PATTERN)] = None
    criticality: Criticality | None = None
    state: MachineStateSignal | None = None

    @model_validator(mode="after")
    def _state_signal_exists(self) -> MachineTemplate:
        if self.state is not None and self.state.signal not in {n for n, _ in self.expanded()}:
            raise ValueError(f"state.signal: {self.state.signal!r} is not a signal of this template")
        return self

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

    def repeat_indices(self) -> list[int]:
        """The ``{j}`` of every expanded signal (1 for unrepeated ones), in ``expanded()`` order."""
        return [j for s in self.signals for j in range(1, s.count + 1)]


def _repeat(s: SignalTemplate) -> list[tuple[str, SignalTemplate]]:
    if s.count == 1:
        return [(s.name.format(j=1) if "{j" in s.name else s.name, s)]
    return [(s.name.format(j=j), s) for j in range(1, s.count + 1)]


class DeviceGroup(_Strict):
    """One or more devices of one protocol; ``count`` > 1 needs ``{i}`` in the name.

    ``host``, ``port`` (as a string) and ``unit_id`` (as a string) are templates formatted with the
    device's index ``i`` (1-based), like ``name``.
    """

    name: str
    protocol: Protocol
    count: int = Field(default=1, ge=1, le=10_000)
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int | str = Field(description="an integer (plus (i-1) x port_step) or a template like '50{i:02d}'")
    port_step: int = Field(default=1, ge=0)
    # Modbus
    unit_id: int | str = Field(default=1, description="0..255, or a template like '{i}'")
    byte_order: ByteOrder = ByteOrder.ABCD
    machine_stride: int | None = Field(default=None, ge=1)
    register_layout: RegisterLayout | None = Field(
        default=None, description="per_table or shared address cursors; unset reads as shared (module docstring)")
    # OPC-UA
    path: str = "/plantwire"
    namespace: str = "urn:plantwire:sim"
    namespaces: list[str] | None = Field(
        default=None, description="the server's namespace array as node ids' ns=<k> index it; resolved by URI")

    @field_validator("port")
    @classmethod
    def _port_range(cls, port: int | str) -> int | str:
        return _int_in_range(port, 1, 65535)

    @field_validator("unit_id")
    @classmethod
    def _unit_range(cls, unit: int | str) -> int | str:
        return _int_in_range(unit, 0, 255)

    def layout(self) -> RegisterLayout:
        return self.register_layout or RegisterLayout.SHARED

    def resolve(self, k: int) -> tuple[str, str, int, int]:
        """Name, host, port and unit id of device k (0-based); raises DeviceFieldError naming the field."""
        i = {"i": k + 1}

        def fmt(field_name: str, text: str) -> str:
            try:
                return format_placeholders(text, i, "template")
            except ValueError as exc:
                raise DeviceFieldError(field_name, str(exc)) from None

        name = fmt("name", self.name) if self.count > 1 else self.name
        host = fmt("host", self.host)
        if isinstance(self.port, int):
            port = self.port + k * self.port_step
        else:
            text = fmt("port", self.port)
            if not text.isdigit() or not 1 <= int(text) <= 65535:
                raise DeviceFieldError("port", f"{self.port!r} gives {text!r} for device {k + 1}, not a port 1..65535")
            port = int(text)
        if isinstance(self.unit_id, int):
            unit = self.unit_id
        else:
            text = fmt("unit_id", self.unit_id)
            if not text.isdigit() or int(text) > 255:
                raise DeviceFieldError("unit_id", f"{self.unit_id!r} gives {text!r} for device {k + 1}, "
                                       "not a unit id 0..255")
            unit = int(text)
        return name, host, port, unit


def _int_in_range(value: int | str, low: int, high: int) -> int | str:
    """The bounds check ``Field(ge=, le=)`` makes, for a field that may also be a template string."""
    if isinstance(value, int) and value < low:
        raise PydanticCustomError("greater_than_equal", "Input should be greater than or equal to {ge}", {"ge": low})
    if isinstance(value, int) and value > high:
        raise PydanticCustomError("less_than_equal", "Input should be less than or equal to {le}", {"le": high})
    return value


class DeviceFieldError(ValueError):
    """A device group field whose template does not resolve; ``field`` names it for the error path."""

    def __init__(self, field_name: str, message: str) -> None:
        self.field = field_name
        super().__init__(message)


class MachineGroup(_Strict):
    name: str
    template: str
    device: str
    count: int = Field(default=1, ge=1, le=100_000)
    # Operator area of these machines ({i} is the machine number); default: the template's, else the machine
    # name's first dotted part (``compressors.stand001`` -> ``compressors``).
    area: Annotated[str | None, Field(default=None, pattern=AREA_PATTERN)] = None
    criticality: Criticality | None = None


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
        for i, g in enumerate(self.devices):
            if isinstance(g.port, str) and "port_step" in g.model_fields_set and g.port_step != 0:
                errors.append(f"devices[{i}].port_step: the port is a template ({g.port!r}); port_step applies "
                              "only to an integer port")
            errors += _device_errors(i, g)
        for i, mg in enumerate(self.machines):
            if mg.area is not None:
                try:
                    format_placeholders(mg.area, {"i": 1}, "area")
                except ValueError as exc:
                    errors.append(f"machines[{i}].area: {exc}")
        if errors:
            return errors
        try:
            expand(self)
        except PlantLayoutError as exc:
            errors.append(str(exc))
        return errors

    def semantic_warnings(self) -> list[str]:
        """Things that are probably mistakes but may be meant; each starts with its path.

        A templated host whose port still steps by the default 1; and an unset ``register_layout`` on a
        device whose machines mix register tables (the address then depends on the layout). Two device
        groups on one host, port (and unit id) are an error (``plantrefs``): a split register map is
        several machines on one device group.
        """
        warnings: list[str] = []
        for gi, g in enumerate(self.devices):
            if (g.count > 1 and "{" in g.host and isinstance(g.port, int) and g.port_step != 0
                    and "port_step" not in g.model_fields_set):
                warnings.append(f"devices[{gi}].port_step: the host is templated ({g.host!r}) but the port steps by 1 "
                                f"from {g.port} (the default); set port_step: 0 when every device listens on {g.port}")
        by_group: dict[str, set[Table]] = {}
        for m in self.machines:
            tpl = self.templates.get(m.template)
            if tpl is not None:
                by_group.setdefault(m.device, set()).update(s.table for s in tpl.signals)
        for gi, g in enumerate(self.devices):
            tables = by_group.get(g.name, set())
            if g.protocol is Protocol.MODBUS and g.register_layout is None and len(tables) > 1:
                names = ", ".join(sorted(t.value for t in tables))
                warnings.append(f"devices[{gi}].register_layout: unset, so the {names} tables share one address "
                                "cursor (shared); set register_layout: per_table to number each table from 0, "
                                "or shared to keep these addresses")
        return warnings


def _device_errors(gi: int, g: DeviceGroup) -> list[str]:
    """Templates that do not resolve, and devices of one group that read the same PLC."""
    errors: list[str] = []
    seen: dict[tuple[str, int, int], int] = {}
    for k in range(g.count):
        try:
            _, host, port, unit = g.resolve(k)
        except DeviceFieldError as exc:
            errors.append(f"devices[{gi}].{exc.field}: {exc}")
            return errors
        key = (host, port, unit if g.protocol is Protocol.MODBUS else 0)
        if key in seen:
            what = f" unit {unit}" if g.protocol is Protocol.MODBUS else ""
            errors.append(f"devices[{gi}]: devices {seen[key] + 1} and {k + 1} of {g.count} both resolve to "
                          f"{host}:{port}{what}: one PLC read {g.count} times? Template the host "
                          '(host: "10.0.3.{i}", port_step: 0), the port or the unit id (unit_id: "{i}")')
            return errors
        seen[key] = k
    if g.namespaces is not None and g.protocol is Protocol.OPCUA and g.namespace not in g.namespaces:
        errors.append(f"devices[{gi}].namespaces: does not list the device's namespace {g.namespace!r}")
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
    namespaces: tuple[str, ...] = ()  # the namespace array ns=<k> in node ids indexes (empty: the server's)

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
    nodes: list[str] = field(default_factory=list)  # OPC-UA node id text per signal ("" on Modbus)

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
    for gi, g in enumerate(plant.devices):
        members: list[int] = []
        for k in range(g.count):
            try:
                name, host, port, unit = g.resolve(k)
            except DeviceFieldError as exc:
                raise PlantLayoutError(f"devices[{gi}].{exc.field}: {exc}") from None
            devices.append(
                Device(
                    index=len(devices),
                    name=name,
                    protocol=g.protocol,
                    host=host,
                    port=port,
                    unit_id=unit,
                    path=g.path,
                    namespace=g.namespace,
                    namespaces=tuple(g.namespaces or ()),
                )
            )
            members.append(len(devices) - 1)
        by_group[g.name] = members
    return devices, by_group


def _layout(template: MachineTemplate, layout: RegisterLayout) -> tuple[list[int], dict[Table, int]]:
    """Register offsets of a template's signals within one machine block, and the block size per table.

    ``shared``: one cursor over all tables, and every table's block has the same (overall) size, so a
    device's cursor moves alike for all. ``per_table``: a cursor per table; a table the template does
    not use has block size 0 and takes no addresses on the device.
    """
    offsets: list[int] = []
    used: dict[tuple[Table, int], str] = {}
    cursors: dict[Table, int] = {}
    for name, s in template.expanded():
        key_table = s.table if layout is RegisterLayout.PER_TABLE else Table.HOLDING
        width = REGISTER_WIDTH[s.type]
        cursor = cursors.get(key_table, 0)
        start = s.offset if s.offset is not None else cursor
        for r in range(start, start + width):
            key = (s.table, r)
            if key in used and s.type is not RegisterType.BIT:
                raise PlantLayoutError(f"signal {name!r} overlaps {used[key]!r} at register offset {r}")
            used[key] = name
        offsets.append(start)
        cursors[key_table] = max(cursor, start + width)
    if layout is RegisterLayout.SHARED:
        size = cursors.get(Table.HOLDING, 0)
        return offsets, {t: size for t in Table}
    return offsets, {t: cursors.get(t, 0) for t in Table}


def expand(plant: PlantConfig) -> SignalTable:
    """Expand templates × counts into the signal table (deterministic order: machine groups, then signals)."""
    devices, by_group = _expand_devices(plant)
    group_by_name = {g.name: g for g in plant.devices}
    next_free: dict[tuple[int, Table], int] = {}  # (device, table) -> first free register
    nodes: list[str] = []
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
        offsets, blocks = _layout(template, dgroup.layout())
        strides: dict[Table, int] = {}
        for t, block in blocks.items():
            if block == 0:
                strides[t] = 0  # per_table: the template does not use this table
                continue
            strides[t] = dgroup.machine_stride or max(10, math.ceil(block / 10.0) * 10)
            if block > strides[t]:
                raise PlantLayoutError(
                    f"machines[{gi}]: template {mg.template!r} needs {block} registers, "
                    f"more than machine_stride {strides[t]} of device group {dgroup.name!r}"
                )
        signal_pos = [si for si, s in enumerate(template.signals) for _ in range(s.count)]
        repeat_j = template.repeat_indices()
        for k in range(mg.count):
            mname = mg.name.format(i=k + 1) if mg.count > 1 else mg.name
            if mname in seen_machines:
                raise PlantLayoutError(f"machines[{gi}].name: machine {mname!r} is defined twice")
            seen_machines.add(mname)
            midx = len(machine_ids)
            machine_ids.append(mname)
            dev_index = members[(k * len(members)) // mg.count]
            dev = devices[dev_index]
            base_of: dict[Table, int] = {}
            for t in Table:
                base_of[t] = next_free.get((dev_index, t), 0)
                next_free[(dev_index, t)] = base_of[t] + strides[t]
                if dev.protocol is Protocol.MODBUS and base_of[t] + blocks[t] > 65536:
                    raise PlantLayoutError(f"machines[{gi}]: device {dev.name!r} runs out of its 65,536 "
                                           f"{t.value} registers")
            order = dgroup.byte_order
            for pos, ((sname, s), off) in enumerate(zip(template.expanded(), offsets, strict=True)):
                sid = f"{mname}.{sname}"
                if sid in seen_ids:
                    raise PlantLayoutError(f"machines[{gi}]: signal id {sid!r} is defined twice")
                seen_ids.add(sid)
                ids.append(sid)
                if dev.protocol is Protocol.OPCUA:
                    where = f"templates.{mg.template}.signals[{signal_pos[pos]}].node"
                    nodes.append(_node_text(s.node, dev, where, machine=mname, i=k + 1, j=repeat_j[pos], sid=sid))
                else:
                    nodes.append("")
                units.append(s.unit)
                kinds.append(s.kind)
                cols["device"].append(dev_index)
                cols["machine"].append(midx)
                cols["table"].append(TABLE_ORDER.index(s.table))
                cols["address"].append(base_of[s.table] + off)
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
        nodes=nodes,
    )


def _node_text(node: str | None, dev: Device, where: str, *, machine: str, i: int, j: int, sid: str) -> str:
    """The node id text of one OPC-UA signal: its template's ``node`` filled in, else the default."""
    if node is None:
        return f"nsu={dev.namespace};s={sid}"
    try:
        text = format_placeholders(node, {"machine": machine, "i": i, "j": j}, "node")
        ref = parse_node_id(text)
    except ValueError as exc:
        raise PlantLayoutError(f"{where}: {exc}") from None
    if dev.namespaces and ref.namespace_index is not None and ref.namespace_index >= len(dev.namespaces):
        raise PlantLayoutError(f"{where}: {text!r} names namespace {ref.namespace_index}, but device {dev.name!r} "
                               f"lists {len(dev.namespaces)} namespaces")
    return text



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
