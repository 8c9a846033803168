"""Writable points the simulated PLCs declare (issue 18 item 4): what a gateway may write, and the reaction.

A real PLC exposes a few command registers next to its read-only process image: a station's
``hold`` (pause the test cycle), a stack light. The simulator declares the same, per machine
whose template has commands (``COMMANDS``), and nothing else is writable:

- **Modbus:** holding registers in a command area at ``COMMAND_BASE`` (0xF000) of each unit, two
  per machine in machine order on that device (``hold`` at base + 2k, ``stack_light`` at
  base + 2k + 1). Reading the area returns the current values (FC 3). A write (FC 6 / FC 16) into
  the area with a value outside the point's range answers exception 0x03 (illegal data value); a
  write anywhere else still answers 0x01 (illegal function), as before: the process image stays
  read-only. The area lies far above any register the plant files map, so no signal moves.
  Float setpoints (``FLOAT_COMMANDS``: a station's ``leak_limit``, Pa/s) are float32 in a holding-register
  pair, in a second area at ``FLOAT_COMMAND_BASE`` (0xF400; base + 2k for the k-th on the device), in the
  device's byte/word order (that of its signals in the plant: ABCD, CDAB, BADC, DCBA as
  ``edge.sources.modbus_codec`` reads them). A write must cover both registers of a pair and decode to a
  finite value in range, else 0x03; a read returns the pair as stored.
- **OPC-UA:** one writable Double variable per point, NodeId ``ns=<idx>;s=<machine>.cmd.<name>``,
  in a ``cmd`` folder under the machine. The server applies the written value at its next tick
  (an out-of-range value is clipped there and read back clipped).

The reaction lives in :class:`simulators.physics.Physics`: a held leak-test station stops cycling
(pressure vented to 0, its pass/fail counters stand still) from the moment of the write until it
is released, and resumes its cycle where it paused. The stack light has no physics: it is read
back only. Values are per process (each OPC-UA server process owns its machines' points).
"""

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass

import numpy as np

from plantwire.plant import BYTE_ORDER_ORDER, ByteOrder, Protocol, SignalTable

__all__ = ["COMMANDS", "COMMAND_BASE", "FLOAT_COMMANDS", "FLOAT_COMMAND_BASE", "CommandName", "CommandPoints",
           "float32_registers"]

COMMAND_BASE = 0xF000
FLOAT_COMMAND_BASE = 0xF400


class CommandName(enum.StrEnum):
    HOLD = "hold"  # 1: the station pauses its test cycle
    STACK_LIGHT = "stack_light"  # 0 off, 1 green, 2 amber, 3 red
    LEAK_LIMIT = "leak_limit"  # Pa/s, float32: the station's pass/fail limit (read back only)


#: Template -> its command points with their (low, high) range, in register order.
COMMANDS: dict[str, tuple[tuple[CommandName, int, int], ...]] = {
    "leak_test": ((CommandName.HOLD, 0, 1), (CommandName.STACK_LIGHT, 0, 3)),
}
#: Template -> its float32 setpoints (a register pair each) with their range.
FLOAT_COMMANDS: dict[str, tuple[tuple[CommandName, int, int], ...]] = {
    "leak_test": ((CommandName.LEAK_LIMIT, 0, 1000),),
}


def float32_registers(value: float, order: ByteOrder) -> list[int]:
    """The two registers (wire order) of a float32 in ``order`` (the codec's semantics: CDAB swaps words)."""
    big = struct.pack(">f", value)
    words = [big[0:2], big[2:4]]
    if order in (ByteOrder.CDAB, ByteOrder.DCBA):
        words.reverse()
    if order in (ByteOrder.BADC, ByteOrder.DCBA):
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


def _registers_float32(regs: list[int], order: ByteOrder) -> float:
    words = [r.to_bytes(2, "big") for r in regs]
    if order in (ByteOrder.BADC, ByteOrder.DCBA):
        words = [w[::-1] for w in words]
    if order in (ByteOrder.CDAB, ByteOrder.DCBA):
        words.reverse()
    return float(struct.unpack(">f", b"".join(words))[0])


@dataclass(frozen=True, slots=True)
class CommandPoint:
    machine: int
    name: CommandName
    low: int
    high: int
    device: int
    address: int  # Modbus holding register (also set for OPC-UA devices; unused there)
    words: int = 1  # 2: a float32 register pair from address
    order: ByteOrder = ByteOrder.ABCD  # of a float32 pair: the device's

    def node_identifier(self, table: SignalTable) -> str:
        return f"{table.machine_ids[self.machine]}.cmd.{self.name.value}"


class CommandPoints:
    """Every command point of a plant, their current values, and the hold they put on the physics."""

    def __init__(self, table: SignalTable, templates: list[str]) -> None:
        self.table = table
        points: list[CommandPoint] = []
        machine_device = np.full(len(table.machine_ids), -1, dtype=np.int64)
        machine_device[table.machine] = table.device
        device_order = np.zeros(len(table.devices), dtype=np.int64)
        device_order[table.device] = table.byte_order  # the order of (the last of) the device's signals
        next_address: dict[int, int] = {}
        next_float: dict[int, int] = {}
        for m, template in enumerate(templates):
            dev = int(machine_device[m])
            if dev < 0:
                continue
            for name, low, high in COMMANDS.get(template, ()):
                a = next_address.get(dev, COMMAND_BASE)
                next_address[dev] = a + 1
                points.append(CommandPoint(m, name, low, high, dev, a))
            for name, low, high in FLOAT_COMMANDS.get(template, ()):
                a = next_float.get(dev, FLOAT_COMMAND_BASE)
                next_float[dev] = a + 2
                points.append(CommandPoint(m, name, low, high, dev, a, 2, BYTE_ORDER_ORDER[int(device_order[dev])]))
        self.points = points
        self.values = np.zeros(len(points), dtype=np.float64)
        # (device, register) -> (point, word within it)
        self._by_address = {(p.device, p.address + w): (i, w) for i, p in enumerate(points) for w in range(p.words)}
        self.writes = 0
        self.refused = 0

    def of_device(self, device: int) -> list[int]:
        return [i for i, p in enumerate(self.points) if p.device == device]

    def area_size(self, device: int) -> int:
        """Registers in the device's command area (0: none)."""
        return len(self.of_device(device))

    def modbus_read(self, device: int, address: int, count: int) -> list[int] | None:
        """Register values at [address, address+count) of the command area, or None if not all in it."""
        out = []
        for a in range(address, address + count):
            hit = self._by_address.get((device, a))
            if hit is None:
                return None
            i, w = hit
            p = self.points[i]
            out.append(float32_registers(self.values[i], p.order)[w] if p.words == 2 else int(self.values[i]))
        return out

    def modbus_write(self, device: int, address: int, values: list[int]) -> str | None:
        """Apply a register write; None on success, else ``"address"`` (not writable) or ``"value"``."""
        hits = [self._by_address.get((device, a)) for a in range(address, address + len(values))]
        if any(h is None for h in hits):
            self.refused += 1
            return "address"
        new: dict[int, float] = {}
        k = 0
        while k < len(hits):
            i, w = hits[k]  # type: ignore[misc]
            p = self.points[i]
            if p.words == 2:  # a float32 pair: both registers in this write, decoded in the device's order
                if w != 0 or k + 1 >= len(hits):
                    self.refused += 1
                    return "value"
                v = _registers_float32(values[k : k + 2], p.order)
                k += 2
            else:
                v = float(values[k])
                k += 1
            if not (math.isfinite(v) and p.low <= v <= p.high):
                self.refused += 1
                return "value"
            new[i] = v
        for i, v in new.items():
            self.values[i] = v
        self.writes += 1
        return None

    def held(self) -> np.ndarray:
        """Machines currently held (bool per machine)."""
        out = np.zeros(len(self.table.machine_ids), dtype=bool)
        for i, p in enumerate(self.points):
            if p.name is CommandName.HOLD and self.values[i] >= 0.5:
                out[p.machine] = True
        return out

    def describe(self) -> list[str]:
        lines = []
        t = self.table
        for p in self.points:
            dev = t.devices[p.device]
            where = (f"holding {p.address} (0x{p.address:04X}) unit {dev.unit_id}" if dev.protocol is Protocol.MODBUS
                     else f"ns={dev.namespace};s={p.node_identifier(t)}")
            lines.append(f"    {t.machine_ids[p.machine]}.{p.name.value:<12} {dev.name:<20} {where} "
                         f"range {p.low}..{p.high}")
        return lines

    def status(self) -> list[dict[str, object]]:
        t = self.table
        return [{"machine": t.machine_ids[p.machine], "name": p.name.value, "device": t.devices[p.device].name,
                 "address": p.address, "value": float(self.values[i])} for i, p in enumerate(self.points)]
