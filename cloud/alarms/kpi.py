"""EEMUA 191 alarm-system performance figures, as pure functions over numpy columns of incident transitions.

Used by ``plantwire alarms report`` (through :mod:`cloud.alarms.query`, which fills the columns from
InfluxDB) and by bench scripts (which fill them from a simulated run directly), so both report the same
numbers by the same definitions:

- **Annunciated alarm**: an incident reaching the operator: its first transition that leaves it active and
  neither suppressed, shelved nor out of service, where it either begins the incident or follows a
  transition that left it hidden (an incident suppressed while its machine was off and still active
  when the suppression ends reaches the operator then). Counted once per incident, as the edge counts
  ``incidents_annunciated_total``. What EEMUA counts.
- **Alarm rate** per area: annunciated alarms per 10-minute bucket of the clock (00:00, 00:10, ...);
  average = all of them over the report's length in 10-minute units, peak = the fullest bucket.
  EEMUA 191: about 1 per 10 minutes is "very likely acceptable", 2 "manageable".
- **Flood**: more than ``flood_threshold`` (10) annunciated alarms in the trailing 10 minutes of an
  area (a sliding window, not buckets: a flood straddling two buckets is still a flood). The share of
  the report's time an area spends in that state; EEMUA's target is under 1 %.
- **Top 10 most frequent**: annunciated alarms per *source* (gateway and machine, or the area for a
  machine-less incident): incidents get a new id each time, the machine is what recurs.
- **Chattering**: incidents the edge marked chattering (a ``chatter`` transition or the flag), plus any
  incident that activated ``chatter_count`` (3) or more times within ``chatter_window_s`` (60 s) in
  the data, whether the edge noticed or not.
- **Standing**: incidents active now for longer than 24 h (from the incidents' latest states).
- **Priority distribution**: annunciated alarms per priority; EEMUA suggests roughly 5 % critical,
  15 % high, 80 % low.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cloud.alarms.store import INCIDENT_TRANSITIONS, PRIORITIES

__all__ = [
    "AreaRate",
    "Report",
    "Transitions",
    "alarm_rates",
    "annunciated",
    "chattering_incidents",
    "docs_rows",
    "flood_fraction",
    "priority_distribution",
    "report",
    "standing",
    "top_frequent",
]

NS_PER_10MIN = 600 * 10**9
NS_PER_DAY = 86_400 * 10**9
_CHATTER = INCIDENT_TRANSITIONS.index("chatter")


@dataclass(frozen=True)
class Transitions:
    """Incident transitions as columns (one row per transition), with code tables for the strings.

    ``incident``, ``area``, ``source`` index ``incidents``, ``areas``, ``sources``; ``priority`` indexes
    :data:`cloud.alarms.store.PRIORITIES` and ``transition`` :data:`cloud.alarms.store.INCIDENT_TRANSITIONS`.
    """

    ts_ns: np.ndarray  # int64
    incident: np.ndarray  # int32
    area: np.ndarray  # int32
    source: np.ndarray  # int32
    priority: np.ndarray  # int8
    transition: np.ndarray  # int8
    active: np.ndarray  # bool
    chattering: np.ndarray  # bool
    suppressed: np.ndarray  # bool: suppressed, shelved or out of service at that moment
    start_ns: np.ndarray  # int64: the incident's start (a transition at it begins the incident)
    incidents: Sequence[str] = ()
    areas: Sequence[str] = ()
    sources: Sequence[str] = ()

    def __len__(self) -> int:
        return int(self.ts_ns.size)

    @classmethod
    def from_rows(cls, rows: Sequence[dict[str, object]]) -> Transitions:
        """From dicts with keys ts_ns, start_ns, incident, area, source, priority, transition, active, chattering,
        suppressed (strings and plain values, e.g. InfluxDB rows); for tests, benches and the query layer."""
        def codes(key: str) -> tuple[np.ndarray, list[str]]:
            table: dict[str, int] = {}
            col = np.array([table.setdefault(str(r[key]), len(table)) for r in rows], dtype=np.int32)
            return col, list(table)

        inc, incidents = codes("incident")
        area, areas = codes("area")
        src, sources = codes("source")
        return cls(
            ts_ns=np.array([int(r["ts_ns"]) for r in rows], dtype=np.int64),  # type: ignore[call-overload]
            incident=inc,
            area=area,
            source=src,
            priority=np.array([PRIORITIES.index(str(r["priority"])) for r in rows], dtype=np.int8),
            transition=np.array([INCIDENT_TRANSITIONS.index(str(r["transition"])) for r in rows], dtype=np.int8),
            active=np.array([bool(r["active"]) for r in rows], dtype=bool),
            chattering=np.array([bool(r["chattering"]) for r in rows], dtype=bool),
            suppressed=np.array([bool(r["suppressed"]) for r in rows], dtype=bool),
            start_ns=np.array([int(r["start_ns"]) for r in rows], dtype=np.int64),  # type: ignore[call-overload]
            incidents=incidents,
            areas=areas,
            sources=sources,
        )


def docs_rows(gateway: str, docs: Sequence[dict[str, object]]) -> list[dict[str, object]]:
    """Rows for :meth:`Transitions.from_rows` from ``incident`` documents as the edge emits them (contracts.md),
    e.g. a bench script's simulated run; other document types are skipped. Same definitions as the query
    layer: source = gateway/machine (gateway/area:AREA without a machine), suppressed = suppressed, shelved
    or out of service at the transition."""
    out: list[dict[str, object]] = []
    for d in docs:
        if d.get("type") != "incident":
            continue
        ts = int(d["ts_ns"])  # type: ignore[call-overload]
        shelved_until = d.get("shelved_until_ns")
        out.append({
            "ts_ns": ts, "start_ns": d["start_ns"], "incident": f"{gateway}/{d['id']}", "area": d["area"],
            "source": f"{gateway}/{d['machine']}" if d.get("machine") else f"{gateway}/area:{d['area']}",
            "priority": d["priority"], "transition": d["transition"], "active": d["active"],
            "chattering": d["chattering"],
            "suppressed": bool(d.get("suppressed_by")) or bool(d.get("out_of_service"))
            or (isinstance(shelved_until, int) and shelved_until > ts),
        })
    return out


def _by_incident(t: Transitions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order sorting rows by incident then time, first row of its incident in that order, row begins it).

    An incident's start is stored to the millisecond (``start_ms``), so "begins" compares milliseconds.
    """
    order = np.lexsort((t.ts_ns, t.incident))
    inc = t.incident[order]
    first = np.ones(inc.size, dtype=bool)
    first[1:] = inc[1:] != inc[:-1]
    begins = t.ts_ns[order] // 1_000_000 == t.start_ns[order] // 1_000_000
    return order, first, begins


def annunciated(t: Transitions) -> np.ndarray:
    """Mask of the transitions that put an incident in front of the operator (once per incident).

    A transition is visible when it leaves the incident active and not suppressed, shelved or out of
    service. It annunciates when it begins the incident, or when the incident's previous transition in
    the data was not visible. An incident whose earlier transitions are outside the data is taken to have
    been annunciated already (a report window must not count incidents that opened before it).
    """
    order, first, begins = _by_incident(t)
    vis = (t.active & ~t.suppressed)[order]
    prev_vis = np.zeros(vis.size, dtype=bool)
    prev_vis[1:] = vis[:-1]
    new = vis & np.where(first, begins, ~prev_vis)
    rows = np.flatnonzero(new)
    _, once = np.unique(t.incident[order][rows], return_index=True)  # rows are time-ordered per incident
    mask = np.zeros(len(t), dtype=bool)
    mask[order[rows[once]]] = True
    return mask


@dataclass(frozen=True)
class AreaRate:
    area: str
    alarms: int  # annunciated in the report's span
    avg_per_10min: float
    peak_per_10min: int
    flood_pct: float


def alarm_rates(ts_ns: np.ndarray, start_ns: int, end_ns: int) -> tuple[float, int]:
    """(average, peak) annunciated alarms per 10 minutes over [start_ns, end_ns) for one area's alarm times."""
    span = end_ns - start_ns
    if span <= 0:
        raise ValueError(f"report span must be positive, got {start_ns}..{end_ns}")
    inside = ts_ns[(ts_ns >= start_ns) & (ts_ns < end_ns)]
    first = start_ns // NS_PER_10MIN  # buckets on the clock's 10-minute grid, as Grafana's GROUP BY time(10m)
    counts = np.bincount(inside // NS_PER_10MIN - first, minlength=(end_ns - 1) // NS_PER_10MIN - first + 1)
    return float(inside.size * NS_PER_10MIN / span), int(counts.max(initial=0))


def flood_fraction(
    ts_ns: np.ndarray, start_ns: int, end_ns: int, *, threshold: int = 10, window_ns: int = NS_PER_10MIN
) -> float:
    """Share of [start_ns, end_ns) during which more than ``threshold`` alarms fell in the trailing window.

    The count over (t - window, t] is a step function: +1 at each alarm, -1 one window later (leaving
    before arriving at equal times, as the interval is open on the left). Alarms before ``start_ns``
    count toward the window at the start, so pass them in.
    """
    if end_ns <= start_ns:
        raise ValueError(f"report span must be positive, got {start_ns}..{end_ns}")
    ts = np.asarray(ts_ns, dtype=np.int64)
    ts = ts[(ts < end_ns) & (ts > start_ns - window_ns)]
    if ts.size <= threshold:
        return 0.0
    times = np.concatenate([ts, ts + window_ns])
    delta = np.concatenate([np.ones(ts.size, np.int64), -np.ones(ts.size, np.int64)])
    order = np.lexsort((delta, times))
    times, count = times[order], np.cumsum(delta[order])
    lo = np.clip(times[:-1], start_ns, end_ns)
    hi = np.clip(times[1:], start_ns, end_ns)
    in_flood = (hi - lo)[count[:-1] > threshold].sum()
    return float(in_flood / (end_ns - start_ns))


def top_frequent(t: Transitions, mask: np.ndarray, n: int = 10) -> list[tuple[str, int]]:
    """The ``n`` sources with the most annunciated alarms (``mask``), most first; ties by name."""
    counts = np.bincount(t.source[mask], minlength=len(t.sources))
    ranked = sorted(((int(c), t.sources[i]) for i, c in enumerate(counts) if c), key=lambda x: (-x[0], x[1]))
    return [(name, c) for c, name in ranked[:n]]


def chattering_incidents(t: Transitions, *, count: int = 3, window_ns: int = 60 * 10**9) -> list[str]:
    """Incidents marked chattering by the edge, or activating ``count`` times within ``window_ns`` here."""
    flagged = set(t.incident[t.chattering | (t.transition == _CHATTER)].tolist())
    order, first, begins = _by_incident(t)
    inc, ts, act = t.incident[order], t.ts_ns[order], t.active[order]
    prev_active = np.zeros(inc.size, dtype=bool)
    prev_active[1:] = act[:-1]
    activation = act & np.where(first, begins, ~prev_active)
    a_inc, a_ts = inc[activation], ts[activation]
    k = count - 1
    if a_inc.size > k:
        hit = (a_inc[k:] == a_inc[:-k]) & (a_ts[k:] - a_ts[:-k] <= window_ns)
        flagged |= set(a_inc[k:][hit].tolist())
    return sorted(t.incidents[i] for i in flagged)


def standing(start_ns: np.ndarray, active: np.ndarray, now_ns: int, *, min_ns: int = NS_PER_DAY) -> np.ndarray:
    """Indices of incidents (latest states) active now and for longer than ``min_ns`` (EEMUA: 24 h)."""
    return np.flatnonzero(np.asarray(active, dtype=bool) & (now_ns - np.asarray(start_ns, dtype=np.int64) > min_ns))


def priority_distribution(t: Transitions, mask: np.ndarray) -> dict[str, tuple[int, float]]:
    """Priority -> (annunciated alarms, % of all annunciated)."""
    counts = np.bincount(t.priority[mask].astype(np.int64), minlength=len(PRIORITIES))
    total = int(counts.sum())
    return {p: (int(counts[i]), float(100.0 * counts[i] / total) if total else 0.0) for i, p in enumerate(PRIORITIES)}


@dataclass(frozen=True)
class Report:
    start_ns: int
    end_ns: int
    areas: list[AreaRate]
    top10: list[tuple[str, int]]
    chattering: list[str]
    standing: list[str]
    priorities: dict[str, tuple[int, float]]
    annunciated: int
    notes: list[str] = field(default_factory=list)


def report(
    t: Transitions,
    start_ns: int,
    end_ns: int,
    *,
    standing_ids: Sequence[str] = (),
    flood_threshold: int = 10,
) -> Report:
    """Every figure over [start_ns, end_ns); ``t`` may start up to 10 minutes earlier (flood window)."""
    ann = annunciated(t)
    inside = ann & (t.ts_ns >= start_ns) & (t.ts_ns < end_ns)
    in_span = (t.ts_ns >= start_ns) & (t.ts_ns < end_ns)
    areas: list[AreaRate] = []
    for i, name in enumerate(t.areas):
        mine = ann & (t.area == i)
        avg, peak = alarm_rates(t.ts_ns[mine], start_ns, end_ns)
        flood = flood_fraction(t.ts_ns[mine], start_ns, end_ns, threshold=flood_threshold)
        areas.append(AreaRate(name, int(np.count_nonzero(mine & inside)), avg, peak, 100.0 * flood))
    areas.sort(key=lambda a: a.area)
    sub = Transitions(**{k: getattr(t, k)[in_span] for k in (
        "ts_ns", "incident", "area", "source", "priority", "transition", "active", "chattering", "suppressed",
        "start_ns")},
        incidents=t.incidents, areas=t.areas, sources=t.sources)
    return Report(
        start_ns=start_ns,
        end_ns=end_ns,
        areas=areas,
        top10=top_frequent(t, inside),
        chattering=chattering_incidents(sub),
        standing=sorted(standing_ids),
        priorities=priority_distribution(t, inside),
        annunciated=int(np.count_nonzero(inside)),
    )
