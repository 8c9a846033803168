"""Incident and audit documents of the events lane -> InfluxDB points, in order per incident.

An ``incident`` document (docs/alarms.md, contracts) is one transition of one incident. It becomes

- an ``incident_transitions`` point (the immutable history the EEMUA 191 figures come from), and
- an ``incidents`` point at the incident's start holding its **latest** state, written only if the
  transition's ``seq`` is at least the highest this ingestor stored for the incident.

Why the ``seq`` check is here and not in InfluxDB: InfluxDB merges a point field by field and the
last write wins, with no conditional write. An edge replaying its log after a restart, or the
broker redelivering after an ingestor restart, can deliver transition 3 after transition 5; written
blindly, the incident would read acknowledged-but-active again after it cleared. :class:`IncidentOrder`
remembers the highest ``seq`` per (gateway, incident) and is saved with each write
(``state_dir/incident_seqs.json``), so a restarted ingestor keeps refusing stale ones. Equal ``seq``
is written again (an idempotent rewrite), which also makes the saved copy being ahead of InfluxDB
after a crash harmless: the unacknowledged message is redelivered and rewritten.

Limits, stated: the map is bounded by age (``max_age_s``, 30 days like the raw retention: an edge's
log does not hold a transition that long, and InfluxDB no longer holds the incident) and by count
(``max_incidents``), least recently updated forgotten first, counted; an incident forgotten that way,
or handled by another ingestor of a shared subscription, is written as it comes. The file is rewritten
whole with each write that carried incidents (~60 bytes per incident).

Within one write group only the highest ``seq`` per incident is kept, so
chunks written on parallel connections cannot reorder one incident's states.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cloud import schema

__all__ = [
    "INCIDENT_TRANSITIONS",
    "PRIORITIES",
    "IncidentOrder",
    "IncidentPoint",
    "audit_line",
    "incident_points",
    "isa_state",
]

#: The contract's transition and priority vocabularies (tags: a value outside is refused, not stored as a new series).
INCIDENT_TRANSITIONS = (
    "open", "update", "clear", "ack", "shelve", "unshelve", "oos", "return",
    "chatter", "flood_open", "flood_close", "suppress", "unsuppress",
)
PRIORITIES = ("critical", "high", "low")
_AUDIT_OUTCOMES = ("applied", "refused", "dry_run", "failed")
_AUDIT_SERVICES = ("alarms", "actions", "models", "console")
_VERB = re.compile(r"[a-z][a-z0-9_]{0,39}")  # the action tag: a verb (ack, maintenance_end, promote, write, ...)


def _str(doc: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    v = doc.get(key)
    if v is None and not required:
        return ""
    if not isinstance(v, str):
        raise schema.SchemaError(f"{key}: expected a string, got {v!r}")
    return v


def _int(doc: Mapping[str, Any], key: str, *, required: bool = True) -> int:
    v = doc.get(key)
    if v is None and not required:
        return 0
    if isinstance(v, bool) or not isinstance(v, int):
        raise schema.SchemaError(f"{key}: expected an integer, got {v!r}")
    if not 0 <= v < 2**63:  # InfluxDB's range; a huge seq would otherwise make every later transition "stale"
        raise schema.SchemaError(f"{key}: {v} is outside 0..2**63-1")
    return v


def _flag(doc: Mapping[str, Any], key: str) -> int:
    v = doc.get(key)
    if not isinstance(v, bool):
        raise schema.SchemaError(f"{key}: expected true or false, got {v!r}")
    return int(v)


def _one_of(doc: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    v = doc.get(key)
    if v not in allowed:
        raise schema.SchemaError(f"{key}: expected one of {allowed}, got {v!r}")
    return str(v)


def isa_state(active: bool, acked: bool, shelved: bool, out_of_service: bool, suppressed: bool) -> str:
    """ISA-18.2's state of an alarm in one word (the state diagram's boxes), what an operator reads.

    Out of service and shelved win over the process state: the operator took the alarm away.
    """
    if out_of_service:
        return "out_of_service"
    if shelved:
        return "shelved"
    if suppressed:
        return "suppressed"
    if active:
        return "active_acked" if acked else "active_unacked"
    return "normal" if acked else "cleared_unacked"


class IncidentPoint:
    """The two points of one incident transition, and what the order check needs."""

    __slots__ = ("gateway", "id", "seq", "state_line", "transition_line")

    def __init__(self, gateway: str, id_: str, seq: int, state_line: str, transition_line: str) -> None:
        self.gateway = gateway
        self.id = id_
        self.seq = seq
        self.state_line = state_line
        self.transition_line = transition_line


def incident_points(site: str, gateway: str, doc: Mapping[str, Any]) -> IncidentPoint:
    """Both points of an ``incident`` document; raises SchemaError naming the key that does not fit."""
    id_ = _str(doc, "id")
    if not id_:
        raise schema.SchemaError("id: expected a non-empty string")
    seq = _int(doc, "seq")
    ts_ns = _int(doc, "ts_ns")
    start_ns = _int(doc, "start_ns")
    end_ns = _int(doc, "end_ns", required=False)
    transition = _one_of(doc, "transition", INCIDENT_TRANSITIONS)
    priority = _one_of(doc, "priority", PRIORITIES)
    area = _str(doc, "area")
    machine = _str(doc, "machine", required=False)
    active, acked, oos, chattering = (_flag(doc, k) for k in ("active", "acked", "out_of_service", "chattering"))
    shelved_until_ns = _int(doc, "shelved_until_ns", required=False)
    suppressed_by = _str(doc, "suppressed_by", required=False)
    kinds = doc.get("kinds")
    signals = doc.get("signals")
    if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
        raise schema.SchemaError(f"kinds: expected a list of strings, got {kinds!r}")
    if not isinstance(signals, list) or not all(isinstance(k, str) for k in signals):
        raise schema.SchemaError(f"signals: expected a list of strings, got {signals!r}")
    peak = doc.get("peak")
    if isinstance(peak, bool) or not isinstance(peak, int | float):
        raise schema.SchemaError(f"peak: expected a number, got {peak!r}")
    shelved = shelved_until_ns > ts_ns
    common: dict[str, object] = {
        schema.F_ID: id_,
        schema.F_SEQ: seq,
        schema.F_STATE: isa_state(bool(active), bool(acked), shelved, bool(oos), bool(suppressed_by)),
        schema.F_ACTIVE: active,
        schema.F_ACKED: acked,
        schema.F_SHELVED: int(shelved),
        schema.F_SHELVED_UNTIL_MS: shelved_until_ns // 1_000_000 if shelved else 0,
        schema.F_OUT_OF_SERVICE: oos,
        schema.F_SUPPRESSED_BY: suppressed_by,
        schema.F_CHATTERING: chattering,
        schema.F_FLOOD_COUNT: _int(doc, "flood_count", required=False),
        schema.F_KINDS: ",".join(kinds),
        schema.F_SIGNALS: json.dumps(signals, separators=(",", ":")),
        schema.F_PEAK: float(peak),
        schema.F_ACTOR: _str(doc, "actor", required=False),
        schema.F_REASON: _str(doc, "reason", required=False),
    }
    where = {schema.TAG_SITE: site, schema.TAG_GATEWAY: gateway, schema.TAG_AREA: area, schema.TAG_MACHINE: machine}
    state_fields = {
        **common,
        schema.F_TRANSITION: transition,
        schema.F_PRIORITY: priority,
        schema.F_OPEN: int(bool(active) or not acked),
        schema.F_UPDATED_MS: ts_ns // 1_000_000,
        schema.F_END_MS: end_ns // 1_000_000,
        schema.F_DURATION_S: (end_ns - start_ns) / 1e9 if end_ns else 0.0,
    }
    state_line = schema.format_point(
        schema.M_INCIDENTS, where, state_fields, schema.incident_point_ns(start_ns, f"{gateway}/{id_}")
    )
    transition_line = schema.format_point(
        schema.M_INCIDENT_TRANSITIONS,
        {**where, schema.TAG_PRIORITY: priority, schema.TAG_TRANSITION: transition},
        {**common, schema.F_START_MS: start_ns // 1_000_000},
        schema.incident_point_ns(ts_ns, f"{gateway}/{id_}", seq),
    )
    return IncidentPoint(gateway, id_, seq, state_line, transition_line)


def audit_line(site: str, gateway: str, doc: Mapping[str, Any]) -> str:
    """The ``audit`` point of an audit document; raises SchemaError naming the key that does not fit."""
    action = _str(doc, "action")
    detail = _str(doc, "detail", required=False)
    if not _VERB.fullmatch(action):
        # A refused command may carry any text (or none) as its action: the record is kept, the tag stays a
        # bounded vocabulary, and the text goes to the detail.
        detail = f"action {action!r}: {detail}"
        action = "invalid"
    request_id = _str(doc, "request_id", required=False)
    tags = {
        schema.TAG_SITE: site,
        schema.TAG_GATEWAY: gateway,
        schema.TAG_SERVICE: _one_of(doc, "service", _AUDIT_SERVICES),
        schema.TAG_ACTION: action,
        schema.TAG_OUTCOME: _one_of(doc, "outcome", _AUDIT_OUTCOMES),
    }
    fields = {
        schema.F_ACTOR: _str(doc, "actor"),
        schema.F_TARGET: _str(doc, "target", required=False),
        schema.F_REASON: _str(doc, "reason", required=False),
        schema.F_DETAIL: detail,
        schema.F_REQUEST_ID: request_id,
        schema.F_SOURCE: _str(doc, "source", required=False),
    }
    ts_ns = _int(doc, "ts_ns")
    key = request_id or f"{fields[schema.F_ACTOR]}/{fields[schema.F_TARGET]}/{action}"
    return schema.format_point(schema.M_AUDIT, tags, fields, schema.incident_point_ns(ts_ns, key))


class IncidentOrder:
    """Highest stored ``seq`` per (gateway, incident id), bounded, persisted atomically.

    ``admit`` is called by the consuming thread while building a write (it decides), ``save`` by
    the writer thread after InfluxDB accepted the write; a lock keeps the two apart.
    """

    FILE = "incident_seqs.json"

    def __init__(self, state_dir: Path, *, max_incidents: int = 200_000, max_age_s: float = 30 * 86_400.0) -> None:
        self.path = Path(state_dir) / self.FILE
        self.max_incidents = max_incidents
        self.max_age_s = max_age_s
        self._seqs: OrderedDict[str, tuple[int, float]] = OrderedDict()  # key -> (seq, wall time of last update)
        self._lock = threading.Lock()
        self._dirty = False
        self.stale = 0  # transitions older than the stored state (history written, state not)
        self.forgotten = 0  # incidents dropped from the map by its bound

    def __len__(self) -> int:
        return len(self._seqs)

    def seq(self, gateway: str, id_: str) -> int | None:
        """The highest seq stored for the incident, None if unknown (or forgotten)."""
        with self._lock:
            known = self._seqs.get(f"{gateway}\x00{id_}")
        return None if known is None else known[0]

    def admit(self, gateway: str, id_: str, seq: int, *, now_s: float | None = None) -> bool:
        """True if this transition may (re)write the incident's state: its seq is the highest seen."""
        key = f"{gateway}\x00{id_}"
        now = time.time() if now_s is None else now_s
        with self._lock:
            known = self._seqs.get(key)
            if known is not None and seq < known[0]:
                self.stale += 1
                return False
            self._seqs[key] = (seq, now)
            self._seqs.move_to_end(key)
            while self._seqs and (len(self._seqs) > self.max_incidents
                                  or now - next(iter(self._seqs.values()))[1] > self.max_age_s):
                self._seqs.popitem(last=False)
                self.forgotten += 1
            self._dirty = True
            return True

    def save(self) -> None:
        """Write atomically (tmp, fsync, rename) if anything changed; raises OSError on a broken disk."""
        with self._lock:
            if not self._dirty:
                return
            data = json.dumps({"v": 1, "seqs": [[k, q, round(t, 1)] for k, (q, t) in self._seqs.items()]},
                              separators=(",", ":"))
            self._dirty = False
        tmp = self.path.with_suffix(".tmp")
        try:
            with open(tmp, "w") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError:
            with self._lock:
                self._dirty = True
            raise

    def load(self) -> int:
        """Read the saved map (none: empty); raises ValueError for a torn or foreign file."""
        try:
            raw = self.path.read_text()
        except FileNotFoundError:
            return 0
        try:
            doc = json.loads(raw)
            items = [(str(k), (int(q), float(t))) for k, q, t in doc["seqs"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{self.path}: not an incident order file ({exc})") from None
        with self._lock:
            self._seqs = OrderedDict(items[-self.max_incidents :])
        return len(self._seqs)
