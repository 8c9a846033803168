"""Line protocol for the low-rate lanes (events, health) and for picking rejected lines out of a write.

Samples go through :mod:`cloud.sinks.lineproto` (vectorised); an alarm episode or a health estimate
is rare enough for the checked, plain-Python :func:`cloud.schema.format_point`.
"""

from __future__ import annotations

import json
from typing import Any

from cloud import schema
from cloud.sinks.lineproto import escape_key, escape_measurement

__all__ = ["UnknownEventType", "event_line", "field_section", "lines_with_field"]


class UnknownEventType(schema.SchemaError):
    """An events-lane document of a type this ingestor does not store (dead-lettered, never guessed at)."""


def event_line(site: str, gateway: str, ev: dict[str, Any]) -> str:
    """One ``events`` or ``health`` point for an ``alarm`` or ``health`` document.

    Incidents and audit documents are stored by :mod:`cloud.alarms.store` (they need the order
    check); any other type raises :class:`UnknownEventType`, so it is dead-lettered with its type
    named instead of being written as something it is not.
    """
    kind = ev.get("type")
    if kind not in ("alarm", "health"):
        raise UnknownEventType(f"type: {kind!r} is not an event type this ingestor stores (alarm, health, "
                               "incident, audit)")
    if kind == "alarm":
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
            schema.F_MODEL: ev.get("model_version"),
        }
        contributors = ev.get("contributors")
        if contributors is not None:
            if not isinstance(contributors, list):
                raise schema.SchemaError(f"contributors: expected a list, got {contributors!r}")
            fields[schema.F_CONTRIBUTORS] = json.dumps(contributors, separators=(",", ":"), allow_nan=False)
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
