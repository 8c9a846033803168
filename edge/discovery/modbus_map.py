"""A Modbus probe as a register-map CSV skeleton (plantwire.registermap's format) for the engineer to name.

One row per answering register (``uint16``) or bit (``bool``), named after its classic address
(``hr_40001``, ``ir_30001``, ``co_00001``, ``di_10001``), so the file imports as is and the edge
reads every answering address the moment it is referenced. Comment lines above the header record
where and when it was probed, each table's answering and exception ranges (with the exception
code), anything not probed, and exception ranges narrow enough that the edge's block reads
(``modbus.max_gap``, default 16) would span them. ``max_rows`` bounds the file for devices that answer on every
address (many do): rows stop there, the comments still list every range.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from plantwire.plant import Table
from plantwire.registermap import modbus_address

from .modbus_probe import EXCEPTION_NAMES, ProbeResult, ProbeSettings

__all__ = ["register_map_rows"]

_EDGE_MAX_GAP = 16  # edge.config.ModbusSettings.max_gap's default: unused registers a block read may span
_NAME_PREFIX = {Table.HOLDING: "hr", Table.INPUT: "ir", Table.COIL: "co", Table.DISCRETE: "di"}


def _span(table: Table, start: int, end: int) -> str:
    first, last = modbus_address(table.value, start), modbus_address(table.value, end - 1)
    return first if end - start == 1 else f"{first}-{last}"


def register_map_rows(result: ProbeResult, settings: ProbeSettings, *, max_rows: int = 5000
                      ) -> tuple[list[dict[str, Any]], list[str]]:
    """(rows, comment lines) of the skeleton."""
    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    comments = [f"plantwire discover modbus://{result.host}:{result.port} --unit {result.unit} at {when}",
                f"addresses 0..{settings.max_address} probed per table; rename rows, merge register pairs "
                "into int32/float32 (type, byte_order), delete what is not wanted",
                "use it in a plant file: templates: {mymachine: {register_map: THIS.csv}}, and devices: "
                f"[{{name: plc, protocol: modbus, host: {result.host}, port: {result.port}, unit_id: {result.unit}, "
                "port_step: 0, register_layout: per_table}]"]
    rows: list[dict[str, Any]] = []
    dropped = 0
    for table, probe in result.tables.items():
        for r in probe.ranges:
            if r.exception is None:
                comments.append(f"{table.value}: {_span(table, r.start, r.end)} answer ({r.end - r.start})")
            else:
                name = EXCEPTION_NAMES.get(r.exception, "exception")
                comments.append(f"{table.value}: {_span(table, r.start, r.end)} exception "
                                f"{r.exception:02d} ({name})")
        for before, gap, after in zip(probe.ranges, probe.ranges[1:], probe.ranges[2:], strict=False):
            width = gap.end - gap.start
            if before.exception is None and after.exception is None and gap.exception and width <= _EDGE_MAX_GAP:
                comments.append(f"{table.value}: the exception range {_span(table, gap.start, gap.end)} is only "
                                f"{width} wide: set modbus.max_gap below {width} in the edge config, or its block "
                                "reads will span it and fail")
        if probe.probed_to <= settings.max_address:
            comments.append(f"{table.value}: not probed from {modbus_address(table.value, probe.probed_to)} "
                            f"(read budget of {settings.max_reads} spent)")
        if not probe.ranges:
            comments.append(f"{table.value}: nothing probed")
        bits = table in (Table.COIL, Table.DISCRETE)
        for r in probe.answering:
            for offset in range(r.start, r.end):
                if len(rows) >= max_rows:
                    dropped += 1
                    continue
                address = modbus_address(table.value, offset)
                rows.append({"name": f"{_NAME_PREFIX[table]}_{address}", "address": address,
                             "type": "bool" if bits else "uint16", "kind": "state" if bits else None})
    if dropped:
        comments.append(f"{dropped} more answering addresses left out (--max-rows {max_rows})")
    return rows, comments
