"""Carry a decided write to the device's source: value conversion per target type, nothing else.

A Modbus float target goes as one FC 16 write of its register pair, encoded by the codec's own inverse
(``edge.sources.modbus_codec.encode_registers``) in the target's byte/word order, so what is written reads
back as the same value through the device's signals. The value is rounded to float32 there (the policy
checked the float64 value the request asked for).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from asyncua import ua

from edge.sources.modbus_codec import encode_registers
from edge.sources.writes import DeviceDown
from plantwire.plant import ByteOrder, RegisterType, SignalTable

from .settings import ActionTarget, WriteTable, WriteType, float_order

__all__ = ["write_target"]

_VARIANT = {WriteType.DOUBLE: ua.VariantType.Double, WriteType.FLOAT: ua.VariantType.Float,
            WriteType.INT32: ua.VariantType.Int32, WriteType.BOOL: ua.VariantType.Boolean}


async def write_target(sources: Mapping[str, Any], target: ActionTarget, value: float,
                       table: SignalTable | None = None) -> None:
    """Write ``value`` (already checked by the policy) to ``target`` through its device's source.

    ``table``: the plant, for a float target's default order (its device's); without it, ABCD."""
    src = sources.get(target.device)
    if src is None:
        raise DeviceDown(f"device {target.device} has no running source (no signals acquired from it)")
    t = target.write_type
    if target.address is not None:
        if target.table is WriteTable.COIL:
            await src.write(target.address, coil=bool(value))
        elif t is WriteType.FLOAT:
            order = float_order(target, table) if table is not None else target.byte_order or ByteOrder.ABCD
            await src.write(target.address, registers=encode_registers(float(value), RegisterType.FLOAT32, order))
        else:
            await src.write(target.address, registers=[int(value) & 0xFFFF])  # int16: two's complement
        return
    assert target.node is not None
    v: float | int | bool = bool(value) if t is WriteType.BOOL else int(value) if t is WriteType.INT32 else value
    await src.write(target.node, v, _VARIANT[t])
