"""The InfluxDB schema: every measurement, tag and field the ingestor writes, in one place.

The ingestor, the retention set-up (:mod:`cloud.retention`), the Grafana dashboards
(``cloud/grafana/``) and the tests all take their names from here, so a rename is one edit and a
test run away from being complete.

Layout: **narrow**, one series per signal (``samples,site=..,gateway=..,machine=..,signal=..``
with a ``value`` field), chosen over a wide row per machine by ``bench/influx_schema.py``; the
figures and the reasons are in ``cloud/README.md``. Dashboards pick a signal by tag, which in the
narrow layout is an index lookup; the wide layout needs one field per signal and a field name per
query, and its rows are only dense when every signal of a machine is sampled at the same instant.

Tags are bounded by the plant file: sites, gateways, machines, signals, detector kinds and
ingestor instances. Nothing that grows with time (timestamps, sequence numbers, episode ids,
boot epochs) is ever a tag; such values are fields. InfluxDB identifies a point by series and
timestamp, which makes every write here idempotent: a replayed batch or event overwrites itself.

Writes go to the database's default retention policy (``raw``, see :mod:`cloud.retention`);
rollups are computed by continuous queries into other retention policies, so the writer does not
need to know about them.
"""

from __future__ import annotations

import enum
import math
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "AUDIT",
    "EVENTS",
    "F_ACTIVE",
    "F_BATCHES",
    "F_BYTES",
    "F_DEAD_LETTERS",
    "F_DROPPED",
    "F_DUPLICATES",
    "F_DURATION_S",
    "F_END_MS",
    "F_GAPS",
    "F_GAP_AGE_S",
    "F_GAP_BATCHES",
    "F_HEALTH",
    "F_INTERVAL_S",
    "F_LAG_S",
    "F_MODELS",
    "F_MODEL_REFUSALS",
    "F_NONFINITE",
    "F_ONLINE",
    "F_PEAK",
    "F_QUALITY",
    "F_RUL",
    "F_RUL_HIGH",
    "F_RUL_LOW",
    "F_SAMPLES",
    "F_SAMPLES_PER_S",
    "F_STATE",
    "F_VALUE",
    "F_WAL_BYTES",
    "F_WAL_OLDEST_AGE_S",
    "F_WAL_RECORDS",
    "HEALTH",
    "INCIDENTS",
    "INCIDENT_TRANSITIONS",
    "MEASUREMENTS",
    "M_AUDIT",
    "M_EVENTS",
    "M_HEALTH",
    "M_INCIDENTS",
    "M_INCIDENT_TRANSITIONS",
    "M_PIPELINE",
    "M_SAMPLES",
    "PIPELINE",
    "SAMPLES",
    "TAG_ACTION",
    "TAG_AREA",
    "TAG_GATEWAY",
    "TAG_INGESTOR",
    "TAG_KIND",
    "TAG_MACHINE",
    "TAG_OUTCOME",
    "TAG_PRIORITY",
    "TAG_SERVICE",
    "TAG_SIGNAL",
    "TAG_SITE",
    "TAG_TRANSITION",
    "EventState",
    "Field",
    "FieldType",
    "Measurement",
    "SchemaError",
    "format_point",
    "incident_point_ns",
]


class SchemaError(ValueError):
    """A point that does not fit the schema: unknown measurement, tag or field, or a wrong type."""


class FieldType(enum.StrEnum):
    """InfluxDB field types. A field keeps its first type per shard; a later other type is rejected."""

    FLOAT = "float"
    INTEGER = "integer"
    STRING = "string"


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    type: FieldType
    doc: str


@dataclass(frozen=True, slots=True)
class Measurement:
    """One measurement: its tag keys (all optional: an empty tag is left out) and its fields."""

    name: str
    tags: tuple[str, ...]
    fields: tuple[Field, ...]
    doc: str

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


# -- tag keys ---------------------------------------------------------------------------------------
TAG_SITE = "site"  # plant site, from the MQTT topic
TAG_GATEWAY = "gateway"  # edge gateway id, from the MQTT topic
TAG_MACHINE = "machine"  # machine instance of the plant file (empty for signals outside a machine)
TAG_SIGNAL = "signal"  # signal id of the plant file (``line3.press07.oil_temp``)
TAG_KIND = "kind"  # detector kind of an alarm, a fixed vocabulary (edge.kernels.kinds.Kind, lowercase)
TAG_INGESTOR = "ingestor"  # ingestor instance name; several share the load through MQTT 5 shared subscriptions
TAG_AREA = "area"  # operator area of an incident (line, hall, console), from the plant config
TAG_PRIORITY = "priority"  # incident priority: critical | high | low (a fixed vocabulary)
TAG_TRANSITION = "transition"  # incident transition: open, update, clear, ack, shelve, ... (a fixed vocabulary)
TAG_SERVICE = "service"  # audited service: alarms | actions | models | console
TAG_ACTION = "action"  # audited action verb of a service (ack, shelve, promote, write, ...; a small vocabulary)
TAG_OUTCOME = "outcome"  # applied | refused | dry_run | failed

# -- measurement names ------------------------------------------------------------------------------
M_SAMPLES = "samples"
M_EVENTS = "events"
M_HEALTH = "health"
M_PIPELINE = "pipeline"
M_INCIDENTS = "incidents"
M_INCIDENT_TRANSITIONS = "incident_transitions"
M_AUDIT = "audit"

# -- field keys -------------------------------------------------------------------------------------
F_VALUE = "value"
F_QUALITY = "quality"
F_NONFINITE = "nonfinite"

F_ACTIVE = "active"
F_STATE = "state"
F_PEAK = "peak"
F_DURATION_S = "duration_s"
F_END_MS = "end_ms"
F_MODEL = "model"
F_CONTRIBUTORS = "contributors"

F_HEALTH = "health"
F_RUL = "rul"
F_RUL_LOW = "rul_low"
F_RUL_HIGH = "rul_high"

F_INTERVAL_S = "interval_s"
F_SAMPLES = "samples"
F_SAMPLES_PER_S = "samples_per_s"
F_BATCHES = "batches"
F_BYTES = "bytes"
F_DUPLICATES = "duplicates"
F_DEAD_LETTERS = "dead_letters"
F_LAG_S = "lag_s"
F_GAPS = "gaps"
F_GAP_BATCHES = "gap_batches"
F_GAP_AGE_S = "gap_age_s"
F_DROPPED = "dropped"
F_WAL_BYTES = "wal_bytes"
F_WAL_RECORDS = "wal_records"
F_WAL_OLDEST_AGE_S = "wal_oldest_age_s"
F_ONLINE = "online"
F_MODELS = "models"
F_MODEL_REFUSALS = "model_refusals"


class EventState(enum.StrEnum):
    """Alarm episode state, the ``state`` field of ``events`` (as on the wire's events lane)."""

    OPEN = "open"
    CLOSED = "closed"


SAMPLES = Measurement(
    M_SAMPLES,
    (TAG_SITE, TAG_GATEWAY, TAG_MACHINE, TAG_SIGNAL),
    (
        Field(F_VALUE, FieldType.FLOAT, "engineering value, scaled; absent when the sensor delivered NaN or inf"),
        Field(F_QUALITY, FieldType.INTEGER,
              "plantwire.plant.Quality: 1 uncertain, 2 bad; absent means good (0, written on every point until "
              "2026-12-03: old points keep quality=0)"),
        Field(F_NONFINITE, FieldType.STRING, '"nan", "+inf" or "-inf" in place of value; absent otherwise'),
    ),
    """One point per sample, at the sample's timestamp (ns). Built vectorised by
    ``cloud.sinks.lineproto.build_lines``, never point by point. Every point has exactly one of ``value``
    and ``nonfinite``: ``count(value) + count(nonfinite)`` counts samples. ``quality`` is only on points
    that are not good (a second field costs InfluxDB ~40 % of a point), so ``max(quality)`` over a stretch
    is its worst quality, null when all of it was good.""",
)

EVENTS = Measurement(
    M_EVENTS,
    (TAG_SITE, TAG_GATEWAY, TAG_MACHINE, TAG_SIGNAL, TAG_KIND),
    (
        Field(F_ACTIVE, FieldType.INTEGER, "1 while the episode is open, 0 once closed (filterable in InfluxQL)"),
        Field(F_STATE, FieldType.STRING, '"open" or "closed" (EventState), the annotation text in Grafana'),
        Field(F_PEAK, FieldType.FLOAT, "peak detector score of the episode so far, in [0, 1]"),
        Field(F_DURATION_S, FieldType.FLOAT, "end - start in seconds; written on close"),
        Field(F_END_MS, FieldType.INTEGER, "episode end, ms since the epoch (Grafana's region end); on close"),
        Field(F_MODEL, FieldType.STRING, "version of the model that raised the alarm (model_version); absent if none"),
        Field(
            F_CONTRIBUTORS,
            FieldType.STRING,
            "machine alarms: every contributing signal id, most first, as a JSON array (ids may hold commas)",
        ),
    ),
    """One point per alarm *episode*, at the episode's start (``start_ns``). The open event writes
    ``active=1,state="open",peak``; the close event writes the same series and timestamp with
    ``active=0,state="closed",peak,duration_s,end_ms``, and InfluxDB merges the fields into the
    one point. So an episode is one row whichever of its events arrived, replays are idempotent,
    and "active alarms" is the series whose latest episode still has ``active=1``. Machine-scope
    alarms (kind ``machine``, ``health``) have no ``signal`` tag.""",
)

HEALTH = Measurement(
    M_HEALTH,
    (TAG_SITE, TAG_GATEWAY, TAG_MACHINE),
    (
        Field(F_HEALTH, FieldType.FLOAT, "health index in [0, 1], 1 = as new"),
        Field(F_RUL, FieldType.FLOAT, "remaining useful life, in the model's unit (seconds or cycles)"),
        Field(F_RUL_LOW, FieldType.FLOAT, "lower bound of the RUL band, same unit; absent when unknown"),
        Field(F_RUL_HIGH, FieldType.FLOAT, "upper bound of the RUL band, same unit; absent when unknown"),
    ),
    """One point per machine per health estimate (the wire's ``health`` events, at ``ts_ns``).
    A null on the wire (unknown) is left out of the point, never written as a number.""",
)

PIPELINE = Measurement(
    M_PIPELINE,
    (TAG_SITE, TAG_GATEWAY, TAG_INGESTOR),
    (
        Field(F_INTERVAL_S, FieldType.FLOAT, "length of the reporting interval the counters cover"),
        Field(F_SAMPLES, FieldType.INTEGER, "counter: samples stored in InfluxDB during the interval"),
        Field(F_SAMPLES_PER_S, FieldType.FLOAT, "samples / interval_s, so panels need no interval arithmetic"),
        Field(F_BATCHES, FieldType.INTEGER, "counter: telemetry batches stored during the interval"),
        Field(F_BYTES, FieldType.INTEGER, "counter: payload bytes received during the interval"),
        Field(F_DUPLICATES, FieldType.INTEGER, "counter: batches received again (replays), stored idempotently"),
        Field(F_DEAD_LETTERS, FieldType.INTEGER, "counter: payloads sent to the dead-letter store"),
        Field(F_LAG_S, FieldType.FLOAT, "gauge: now - newest stored sample's timestamp, seconds"),
        Field(F_GAPS, FieldType.INTEGER, "gauge: open missing sequence ranges in the gap ledger"),
        Field(F_GAP_BATCHES, FieldType.INTEGER, "gauge: batches missing in those ranges"),
        Field(F_GAP_AGE_S, FieldType.FLOAT, "gauge: age of the oldest open gap, seconds (0 without gaps)"),
        Field(F_DROPPED, FieldType.INTEGER, "counter: samples the edge dropped because its log's bounds forced it"),
        Field(F_WAL_BYTES, FieldType.INTEGER, "gauge: the edge's write-ahead log depth in bytes"),
        Field(F_WAL_RECORDS, FieldType.INTEGER, "gauge: the edge's write-ahead log depth in records"),
        Field(F_WAL_OLDEST_AGE_S, FieldType.FLOAT, "gauge: age of the oldest unacknowledged record, seconds"),
        Field(F_ONLINE, FieldType.INTEGER, "gauge: 1 while the gateway's retained health says online, 0 after it"),
        Field(F_MODELS, FieldType.STRING, "model versions the gateway runs, from its health document: "
              "'kind/template active=V shadow=V previous=V; ...' ('-' for none), sorted by slot (docs/models.md)"),
        Field(F_MODEL_REFUSALS, FieldType.INTEGER, "gauge: model bundles the gateway refused since it started"),
    ),
    """Per-gateway pipeline statistics, one point per gateway per reporting interval (10 s is a good
    default). Counters are *deltas over the interval*, not running totals, so ``sum()`` over any
    range is right across ingestor restarts and adds up across several ingestors; gauges are the
    value at the point's time. Fields measured at the edge (``dropped``, ``wal_*``, ``online``)
    come from the gateway's health messages and may sit on their own points; a point carries the
    fields its writer knows. ``ingestor`` is left out by a single ingestor.""",
)


# -- alarm management (issue 16): incidents, their transitions, the audit trail ----------------------
F_ID = "id"
F_SEQ = "seq"
F_TRANSITION = "transition"
F_PRIORITY = "priority"
F_OPEN = "open"
F_ACKED = "acked"
F_SHELVED = "shelved"
F_SHELVED_UNTIL_MS = "shelved_until_ms"
F_OUT_OF_SERVICE = "out_of_service"
F_SUPPRESSED_BY = "suppressed_by"
F_CHATTERING = "chattering"
F_FLOOD_COUNT = "flood_count"
F_KINDS = "kinds"
F_SIGNALS = "signals"
F_ACTOR = "actor"
F_REASON = "reason"
F_START_MS = "start_ms"
F_UPDATED_MS = "updated_ms"
F_TARGET = "target"
F_DETAIL = "detail"
F_REQUEST_ID = "request_id"
F_SOURCE = "source"

_INCIDENT_STATE_FIELDS = (
    Field(F_ID, FieldType.STRING, "incident id, unique per gateway, stable across edge restarts"),
    Field(F_SEQ, FieldType.INTEGER, "the incident's transition number (strictly increasing per incident)"),
    Field(F_STATE, FieldType.STRING, "ISA-18.2 state in one word: active_unacked, active_acked, cleared_unacked, "
          "normal, shelved, out_of_service, suppressed"),
    Field(F_ACTIVE, FieldType.INTEGER, "1 while the condition is active"),
    Field(F_ACKED, FieldType.INTEGER, "1 once acknowledged"),
    Field(F_SHELVED, FieldType.INTEGER, "1 while shelved"),
    Field(F_SHELVED_UNTIL_MS, FieldType.INTEGER, "end of the shelving, ms since the epoch (0: not shelved)"),
    Field(F_OUT_OF_SERVICE, FieldType.INTEGER, "1 while taken out of service"),
    Field(F_SUPPRESSED_BY, FieldType.STRING, 'what suppresses it ("" if nothing): machine state or a flood incident'),
    Field(F_CHATTERING, FieldType.INTEGER, "1 once marked chattering"),
    Field(F_FLOOD_COUNT, FieldType.INTEGER, "flood incidents: incidents summarised (0 for others)"),
    Field(F_KINDS, FieldType.STRING, "detector kinds, comma-separated"),
    Field(F_SIGNALS, FieldType.STRING, "contributing signals, most important first, as a JSON array"),
    Field(F_PEAK, FieldType.FLOAT, "peak score so far, in [0, 1]"),
    Field(F_ACTOR, FieldType.STRING, 'who caused the transition ("" for the edge itself)'),
    Field(F_REASON, FieldType.STRING, 'why (operator text; "" if none)'),
)

INCIDENTS = Measurement(
    M_INCIDENTS,
    (TAG_SITE, TAG_GATEWAY, TAG_AREA, TAG_MACHINE),
    (
        *_INCIDENT_STATE_FIELDS,
        Field(F_TRANSITION, FieldType.STRING, "the last transition applied (open, ack, clear, ...)"),
        Field(F_PRIORITY, FieldType.STRING, "critical | high | low (a field here: it may change while open)"),
        Field(F_OPEN, FieldType.INTEGER, "1 while the incident needs the operator (active or unacknowledged)"),
        Field(F_UPDATED_MS, FieldType.INTEGER, "time of the last transition, ms since the epoch"),
        Field(F_END_MS, FieldType.INTEGER, "when it cleared, ms since the epoch (0 while active)"),
        Field(F_DURATION_S, FieldType.FLOAT, "end - start in seconds once cleared (0 while active)"),
    ),
    """One point per incident holding its **latest** state, at the incident's start (``start_ns``,
    sub-microsecond digits replaced, see :func:`incident_point_ns`). Every transition rewrites every
    field (nulls as "" or 0), so the point never mixes two states; the ingestor writes a transition
    here only if its ``seq`` is at least the highest it stored for that incident
    (:mod:`cloud.alarms.store`), so a replayed older transition never overwrites a newer state.
    The tags are what stays fixed for an incident's life; priority can escalate, so it is a field
    here and a tag on ``incident_transitions``.""",
)

INCIDENT_TRANSITIONS = Measurement(
    M_INCIDENT_TRANSITIONS,
    (TAG_SITE, TAG_GATEWAY, TAG_AREA, TAG_MACHINE, TAG_PRIORITY, TAG_TRANSITION),
    (*_INCIDENT_STATE_FIELDS, Field(F_START_MS, FieldType.INTEGER, "the incident's start, ms since the epoch")),
    """One point per incident transition, at its ``ts_ns`` (sub-microsecond digits replaced, see
    :func:`incident_point_ns`): the history the EEMUA 191 figures are computed from
    (:mod:`cloud.alarms.kpi`). Immutable once written; a replay rewrites the same point.""",
)

AUDIT = Measurement(
    M_AUDIT,
    (TAG_SITE, TAG_GATEWAY, TAG_SERVICE, TAG_ACTION, TAG_OUTCOME),
    (
        Field(F_ACTOR, FieldType.STRING, "who asked (operator or agent name)"),
        Field(F_TARGET, FieldType.STRING, "what it was applied to (incident id, write target, model slot)"),
        Field(F_REASON, FieldType.STRING, "why, as given"),
        Field(F_DETAIL, FieldType.STRING, "what happened, in the applier's words"),
        Field(F_REQUEST_ID, FieldType.STRING, 'the command\'s request id ("" if none)'),
        Field(F_SOURCE, FieldType.STRING, "mqtt | console | agent | cli"),
    ),
    """The audit trail: one point per operator or agent action applied (or refused) on the edge,
    at its ``ts_ns`` (sub-microsecond digits replaced by the request id's hash, so two actions in
    one microsecond stay two points). Who, when, what, why: never rewritten.""",
)


def incident_point_ns(ts_ns: int, key: str, seq: int = 0) -> int:
    """The stored timestamp of an incident or audit point: ``ts_ns`` with its last three digits
    replaced by a hash of (``key``, ``seq``).

    InfluxDB merges points of one series and timestamp (MEASURED.md trap 17); ids are fields, not
    tags (unbounded), so two incidents of one machine starting in the same instant, or two
    transitions of one incident in the same nanosecond, would merge into one point. The hash keeps
    them apart (1 in 1,000 for two in the same microsecond) and stays deterministic, so a replay
    still lands on its own point. Sub-microsecond precision is not meaningful for alarms.
    """
    h = (zlib.crc32(key.encode()) + seq * 7919) % 1000
    return ts_ns - ts_ns % 1000 + h


MEASUREMENTS: tuple[Measurement, ...] = (
    SAMPLES, EVENTS, HEALTH, PIPELINE, INCIDENTS, INCIDENT_TRANSITIONS, AUDIT
)
_BY_NAME: Mapping[str, Measurement] = {m.name: m for m in MEASUREMENTS}

# -- low-rate point formatting ----------------------------------------------------------------------
# events, health and pipeline points are rare (per episode, per machine estimate, per interval);
# a checked, plain-Python formatter is right for them. samples go through lineproto.build_lines.

_STR_ESCAPE = re.compile(r'(["\\])')


def _tag(s: str) -> str:
    """The same escaping as the samples path (lineproto), so a tag value is stored identically on
    every measurement (InfluxDB 1.6 rejects some backslash placements; lineproto handles them)."""
    from cloud.sinks.lineproto import escape_tag_value

    return escape_tag_value(s)


def _field_value(m: Measurement, f: Field, v: object) -> str:
    where = f"{m.name}.{f.name}"
    if f.type is FieldType.STRING:
        if not isinstance(v, str):
            raise SchemaError(f"{where}: expected a string, got {v!r}")
        return '"' + _STR_ESCAPE.sub(r"\\\1", v.replace("\n", "\\n")) + '"'
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise SchemaError(f"{where}: expected a number, got {v!r}")
    if f.type is FieldType.INTEGER:
        if isinstance(v, float) and not v.is_integer():
            raise SchemaError(f"{where}: expected an integer, got {v!r}")
        return f"{int(v)}i"
    x = float(v)
    if not math.isfinite(x):
        raise SchemaError(f"{where}: InfluxDB cannot store {x!r}")
    return repr(x)


def format_point(measurement: str, tags: Mapping[str, str], fields: Mapping[str, object], ts_ns: int) -> str:
    """One line of line protocol (no newline) for a low-rate measurement, checked against the schema.

    Empty tags and ``None`` fields are left out (line protocol has no empty tag values, and an
    unknown value is absent, not zero). Raises :class:`SchemaError` naming the measurement and key
    for an unknown measurement, tag or field, a wrong type, a non-finite float, or no field at all.
    """
    m = _BY_NAME.get(measurement)
    if m is None:
        raise SchemaError(f"unknown measurement {measurement!r}; expected one of {sorted(_BY_NAME)}")
    parts = [m.name]
    for key in sorted(tags):
        if key not in m.tags:
            raise SchemaError(f"{m.name}: unknown tag {key!r}; expected one of {m.tags}")
        if tags[key]:
            parts.append(f"{key}={_tag(tags[key])}")
    out: list[str] = []
    for key, v in fields.items():
        try:
            f = m.field(key)
        except KeyError:
            raise SchemaError(f"{m.name}: unknown field {key!r}; expected one of {m.field_names}") from None
        if v is not None:
            out.append(f"{key}={_field_value(m, f, v)}")
    if not out:
        raise SchemaError(f"{m.name}: a point needs at least one field")
    return f"{','.join(parts)} {','.join(out)} {int(ts_ns)}"
