"""The ``actions:`` section of the edge config: which plant points may be written, and how.

Nothing is writable unless it is listed here, and a listed target is disabled until its
``enabled: true``; a whole section in ``mode: dry_run`` (the default) audits every request as if
it were written and writes nothing. Each target names its device (a device of the plant file),
either a Modbus ``address`` (holding register, or coil with ``table: coil``) or an OPC-UA
``node`` (any node-id text the plant accepts, ``nsu=`` preferred), the values it accepts (a list
``allowed``, or a range ``min``..``max``) and a rate limit. A Modbus ``type: float`` target is a float32
setpoint in a holding-register pair (``address``, ``address + 1``), written in one FC 16 request in the
target's ``byte_order`` (ABCD, CDAB, BADC, DCBA, the orders of ``edge.sources.modbus_codec``); left out,
it is the device's own order as its signals are read, and a device whose signals mix orders must say.
Validation happens at start-up with
no network; that the device exists with the right protocol is checked against the plant
(:func:`check_targets`), each error naming its path (``actions.targets[2].device``).
"""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from plantwire.nodeid import parse_node_id
from plantwire.plant import BYTE_ORDER_ORDER, ByteOrder, Protocol, SignalTable

__all__ = ["ActionMode", "ActionTarget", "ActionsSettings", "RateLimit", "WriteTable", "WriteType", "check_targets",
           "float_order"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ActionMode(enum.StrEnum):
    """``dry_run``: decide, log and audit, never write. ``write``: write what the policy allows."""

    DRY_RUN = "dry_run"
    WRITE = "write"


class WriteTable(enum.StrEnum):
    HOLDING = "holding"
    COIL = "coil"


class WriteType(enum.StrEnum):
    """How the value travels: Modbus ``uint16``/``int16`` registers, a ``float`` (float32) register pair, or a
    coil (``bool``); OPC-UA variants."""

    UINT16 = "uint16"
    INT16 = "int16"
    BOOL = "bool"
    DOUBLE = "double"
    FLOAT = "float"
    INT32 = "int32"


_MODBUS_TYPES = (WriteType.UINT16, WriteType.INT16, WriteType.BOOL, WriteType.FLOAT)
FLOAT32_MAX = 3.4028234663852886e38
_RANGE = {WriteType.UINT16: (0, 65535), WriteType.INT16: (-32768, 32767), WriteType.BOOL: (0, 1),
          WriteType.INT32: (-(2**31), 2**31 - 1)}
_RANGE_MODBUS = {WriteType.FLOAT: (-FLOAT32_MAX, FLOAT32_MAX)}


class RateLimit(_Strict):
    """At most ``writes`` requests per ``per_s`` seconds (sliding window), counted whether written or dry-run."""

    writes: int = Field(default=1, ge=1, le=1000)
    per_s: float = Field(default=10.0, gt=0, le=86_400)


class ActionTarget(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
    device: str
    address: int | None = Field(default=None, ge=0, le=65535, description="Modbus register or coil")
    table: WriteTable = WriteTable.HOLDING
    node: str | None = Field(default=None, description="OPC-UA node id (nsu=...;s=... or ns=...;s=...)")
    type: WriteType | None = Field(default=None, description="default: uint16 (Modbus holding), bool (coil), "
                                                             "double (OPC-UA); float on Modbus: a float32 pair")
    byte_order: ByteOrder | None = Field(default=None, description="of a Modbus float pair; default: the device's")
    allowed: list[float] | None = Field(default=None, min_length=1, description="the only values accepted")
    min: float | None = None
    max: float | None = None
    rate_limit: RateLimit = RateLimit()
    enabled: bool = False
    mode: ActionMode | None = Field(default=None, description="overrides the section's mode for this target")
    description: str = ""

    @model_validator(mode="after")
    def _shape(self) -> ActionTarget:
        if (self.address is None) == (self.node is None):
            raise ValueError("give exactly one of address (Modbus) or node (OPC-UA)")
        if self.node is not None:
            try:
                parse_node_id(self.node)
            except ValueError as exc:
                raise ValueError(f"node {self.node!r}: {exc}") from None
        if self.allowed is None and (self.min is None or self.max is None):
            raise ValueError("give the accepted values: allowed: [..], or both min and max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        t = self.write_type
        if self.address is not None and t not in _MODBUS_TYPES:
            raise ValueError(f"type {t.value} cannot be written to a Modbus register (uint16, int16, float or bool)")
        if self.byte_order is not None and not (self.address is not None and t is WriteType.FLOAT):
            raise ValueError("byte_order is for a Modbus float (a register pair) only")
        if self.address is not None and t is WriteType.FLOAT and self.address > 65534:
            raise ValueError(f"address {self.address}: a float needs two registers, the last one is 65535")
        if self.table is WriteTable.COIL and t is not WriteType.BOOL:
            raise ValueError("a coil takes type bool")
        if self.node is not None and t in (WriteType.UINT16, WriteType.INT16):
            raise ValueError(f"type {t.value} is for Modbus registers; OPC-UA takes double, float, int32 or bool")
        lo, hi = (_RANGE_MODBUS if self.address is not None else {}).get(t) or _RANGE.get(
            t, (float("-inf"), float("inf")))
        vals = [*(self.allowed or []), *(v for v in (self.min, self.max) if v is not None)]
        bad = [v for v in vals if not lo <= v <= hi or (t is not WriteType.DOUBLE and t is not WriteType.FLOAT
                                                        and v != int(v))]
        if bad:
            raise ValueError(f"values {bad} cannot be written as {t.value}")
        return self

    @property
    def write_type(self) -> WriteType:
        if self.type is not None:
            return self.type
        if self.node is not None:
            return WriteType.DOUBLE
        return WriteType.BOOL if self.table is WriteTable.COIL else WriteType.UINT16

    @property
    def where(self) -> str:
        return f"{self.device} {self.table.value} {self.address}" if self.address is not None else \
            f"{self.device} {self.node}"


class ActionsSettings(_Strict):
    mode: ActionMode = ActionMode.DRY_RUN
    commands: bool = Field(default=True, description="accept operator requests on plantwire/cmd/v1/{site}/{gw}/actions")
    queue: int = Field(default=64, ge=1, le=10_000, description="requests waiting; beyond it they are refused")
    targets: list[ActionTarget] = []

    @model_validator(mode="after")
    def _unique(self) -> ActionsSettings:
        seen: set[str] = set()
        for i, t in enumerate(self.targets):
            if t.name in seen:
                raise ValueError(f"targets[{i}].name: {t.name!r} is listed twice")
            seen.add(t.name)
        return self


def check_targets(settings: ActionsSettings, table: SignalTable) -> list[str]:
    """Errors (with their path) of targets whose device is not in the plant or speaks another protocol."""
    devices = {d.name: d for d in table.devices}
    errors = []
    for i, t in enumerate(settings.targets):
        d = devices.get(t.device)
        if d is None:
            errors.append(f"actions.targets[{i}].device: no device {t.device!r} in the plant")
        elif t.address is not None and d.protocol is not Protocol.MODBUS:
            errors.append(f"actions.targets[{i}].address: device {t.device!r} is {d.protocol.value}, not Modbus "
                          "(give node)")
        elif t.node is not None and d.protocol is not Protocol.OPCUA:
            errors.append(f"actions.targets[{i}].node: device {t.device!r} is {d.protocol.value}, not OPC-UA "
                          "(give address)")
        elif t.write_type is WriteType.FLOAT and t.address is not None and t.byte_order is None:
            orders = sorted({BYTE_ORDER_ORDER[int(o)].value for o in table.byte_order[table.device == d.index]})
            if len(orders) > 1:
                errors.append(f"actions.targets[{i}].byte_order: device {t.device!r} reads its signals in "
                              f"{', '.join(orders)}; say which order the float pair is written in")
    return errors


def float_order(target: ActionTarget, table: SignalTable) -> ByteOrder:
    """The byte/word order a Modbus float target is written in: its own, else its device's (ABCD if the device
    has no signals)."""
    if target.byte_order is not None:
        return target.byte_order
    dev = next(d.index for d in table.devices if d.name == target.device)
    orders = table.byte_order[table.device == dev]
    return BYTE_ORDER_ORDER[int(orders[0])] if orders.size else ByteOrder.ABCD
