"""Carry a decided write to the device's source: value conversion per target type, nothing else."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from asyncua import ua

from edge.sources.writes import DeviceDown

from .settings import ActionTarget, WriteTable, WriteType

__all__ = ["write_target"]

_VARIANT = {WriteType.DOUBLE: ua.VariantType.Double, WriteType.FLOAT: ua.VariantType.Float,
            WriteType.INT32: ua.VariantType.Int32, WriteType.BOOL: ua.VariantType.Boolean}


async def write_target(sources: Mapping[str, Any], target: ActionTarget, value: float) -> None:
    """Write ``value`` (already checked by the policy) to ``target`` through its device's source."""
    src = sources.get(target.device)
    if src is None:
        raise DeviceDown(f"device {target.device} has no running source (no signals acquired from it)")
    t = target.write_type
    if target.address is not None:
        if target.table is WriteTable.COIL:
            await src.write(target.address, coil=bool(value))
        else:
            await src.write(target.address, registers=[int(value) & 0xFFFF])  # int16: two's complement
        return
    assert target.node is not None
    v: float | int | bool = bool(value) if t is WriteType.BOOL else int(value) if t is WriteType.INT32 else value
    await src.write(target.node, v, _VARIANT[t])
