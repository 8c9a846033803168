"""Operator commands for the alarm layer: parsed and validated before anything is applied.

Payload (contracts.md): a JSON object ``{"id", "actor", "ts_ns", "action", "reason", ...}`` on
``plantwire/cmd/v1/{site}/{gateway}/alarms``. Alarm keys: ``incident`` (an incident id) or ``machine``
(a machine id: the command applies to that machine's alarm, present and future), and for ``shelve`` a
duration as ``duration_s`` or ``minutes``. Keys this service does not know are ignored (other services'
tools may add their own). A payload that cannot be understood raises ``CommandError`` whose message is
what the operator reads in the refusal.
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass
from typing import Any

MAX_TEXT = 1000
MAX_ID = 128


class Action(enum.StrEnum):
    ACK = "ack"
    SHELVE = "shelve"
    UNSHELVE = "unshelve"
    OOS = "oos"  # out of service (a reason is required)
    RETURN = "return"  # back in service
    MAINTENANCE = "maintenance"  # the machine is in maintenance: its process incidents are suppressed
    MAINTENANCE_END = "maintenance_end"


class CommandError(ValueError):
    """A command refused before it was applied; the message names the field at fault."""

    def __init__(self, message: str, *, request_id: str | None = None, actor: str | None = None,
                 action: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.actor = actor
        self.action = action


@dataclass(frozen=True, slots=True)
class Command:
    id: str
    actor: str
    ts_ns: int
    action: Action
    reason: str
    incident: str | None = None
    machine: str | None = None
    duration_s: float | None = None
    source: str = "mqtt"

    @property
    def target(self) -> str:
        return self.incident if self.incident is not None else f"machine:{self.machine}"


def _text(d: dict[str, Any], key: str, *, required: bool, limit: int, ctx: dict[str, Any]) -> str | None:
    v = d.get(key)
    if v is None:
        if required:
            raise CommandError(f"{key}: missing", **ctx)
        return None
    if not isinstance(v, str):
        raise CommandError(f"{key}: must be a string, not {type(v).__name__}", **ctx)
    if required and not v.strip():
        raise CommandError(f"{key}: empty", **ctx)
    if len(v) > limit:
        raise CommandError(f"{key}: longer than {limit} characters", **ctx)
    return v


def parse_command(payload: bytes, *, source: str = "mqtt") -> Command:
    """Validate one command payload; raises ``CommandError`` with what is wrong."""
    try:
        d = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CommandError(f"payload: not JSON ({exc})") from None
    if not isinstance(d, dict):
        raise CommandError(f"payload: a JSON object is expected, not {type(d).__name__}")
    ctx: dict[str, Any] = {}
    rid = d.get("id")
    ctx["request_id"] = rid if isinstance(rid, str) else None
    ctx["actor"] = d.get("actor") if isinstance(d.get("actor"), str) else None
    ctx["action"] = d.get("action") if isinstance(d.get("action"), str) else None
    rid = _text(d, "id", required=True, limit=MAX_ID, ctx=ctx)
    actor = _text(d, "actor", required=True, limit=MAX_ID, ctx=ctx)
    ts = d.get("ts_ns")
    if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
        raise CommandError("ts_ns: must be a non-negative integer (ns since the epoch)", **ctx)
    action_text = _text(d, "action", required=True, limit=MAX_ID, ctx=ctx)
    try:
        action = Action(action_text)
    except ValueError:
        raise CommandError(f"action: {action_text!r} is not one of {', '.join(a.value for a in Action)}",
                           **ctx) from None
    reason = _text(d, "reason", required=False, limit=MAX_TEXT, ctx=ctx) or ""
    incident = _text(d, "incident", required=False, limit=MAX_ID * 2, ctx=ctx)
    machine = _text(d, "machine", required=False, limit=MAX_ID * 2, ctx=ctx)
    if (incident is None) == (machine is None):
        raise CommandError("incident/machine: exactly one of them names what the command applies to", **ctx)
    duration_s = None
    if action is Action.SHELVE:
        if "duration_s" in d and "minutes" in d:
            raise CommandError("duration_s/minutes: give one of them", **ctx)
        key = "duration_s" if "duration_s" in d else "minutes"
        v = d.get(key)
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
            raise CommandError("duration_s/minutes: shelving needs a positive duration", **ctx)
        duration_s = float(v) * (60.0 if key == "minutes" else 1.0)
    if action is Action.OOS and not reason.strip():
        raise CommandError("reason: taking an alarm out of service needs a reason", **ctx)
    assert rid is not None and actor is not None
    return Command(rid, actor, ts, action, reason, incident, machine, duration_s, source)
