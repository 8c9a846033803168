"""Line protocol for the low-rate lanes (events, health) and for picking rejected lines out of a write.

Samples go through :mod:`cloud.sinks.lineproto` (vectorised); an alarm episode or a health estimate
is rare enough for the checked, plain-Python :func:`cloud.schema.format_point`.
"""

from __future__ import annotations

from typing import Any

from cloud import schema
from cloud.sinks.lineproto import escape_key, escape_measurement

__all__ = ["event_line", "field_section", "lines_with_field"]


def event_line(site: str, gateway: str, ev: dict[str, Any]) -> str:
    """One ``events`` or ``health`` point for an events-lane entry (schema.EVENTS / schema.HEALTH)."""
    if ev["type"] == "alarm":
        state = schema.EventState(ev["state"])
        start_ns = int(ev["start_ns"])
        tags = {
            schema.TAG_SITE: site,
            schema.TAG_GATEWAY: gateway,
            schema.TAG_MACHINE: str(ev.get("machine") or ""),
            schema.TAG_SIGNAL: str(ev.get("signal") or ""),
            schema.TAG_KIND: str(ev.get("kind") or ""),
        }
        fields: dict[str, object] = {
            schema.F_ACTIVE: 1 if state is schema.EventState.OPEN else 0,
            schema.F_STATE: state.value,
            schema.F_PEAK: ev.get("peak"),
        }
        end_ns = ev.get("end_ns")
        if state is schema.EventState.CLOSED and end_ns is not None:
            fields[schema.F_DURATION_S] = (int(end_ns) - start_ns) / 1e9
            fields[schema.F_END_MS] = int(end_ns) // 1_000_000
        return schema.format_point(schema.M_EVENTS, tags, fields, start_ns)
    tags = {schema.TAG_SITE: site, schema.TAG_GATEWAY: gateway, schema.TAG_MACHINE: str(ev.get("machine") or "")}
    fields = {
        schema.F_HEALTH: ev.get("health"),
        schema.F_RUL: ev.get("rul"),
        schema.F_RUL_LOW: ev.get("rul_low"),
        schema.F_RUL_HIGH: ev.get("rul_high"),
    }
    return schema.format_point(schema.M_HEALTH, tags, fields, int(ev["ts_ns"]))


def lines_with_field(body: bytes, measurement: str, field_key: str) -> list[str]:
    """Lines of ``measurement`` whose field set has ``field_key`` (for a type-conflict 400)."""
    head = escape_measurement(measurement).encode()
    key = escape_key(field_key).encode() + b"="
    out: list[str] = []
    for line in body.split(b"\n"):
        if not (line.startswith(head + b",") or line.startswith(head + b" ")):
            continue
        fields = field_section(line)
        if fields.startswith(key) or (b"," + key) in fields:
            out.append(line.decode(errors="replace"))
    return out


def field_section(line: bytes) -> bytes:
    """The field set of a line: after the first unescaped space, before the last space (timestamp)."""
    i = 0
    while True:
        i = line.index(b" ", i)
        if line[i - 1 : i] != b"\\":
            break
        i += 1
    return line[i + 1 : line.rindex(b" ")]
