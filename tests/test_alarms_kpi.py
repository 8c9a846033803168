"""EEMUA 191 figures (cloud.alarms.kpi) against slow, obvious references and hand-counted cases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cloud.alarms import kpi

S = 10**9
T0 = 1_700_000_400 * S  # on the 10-minute grid


def _naive_flood(ts_s: list[int], start_s: int, end_s: int, threshold: int = 10, window_s: int = 600) -> float:
    """Second by second: the count over (t - window, t] only changes at whole seconds here."""
    flood = sum(1 for t in range(start_s, end_s) if sum(1 for a in ts_s if t - window_s < a <= t) > threshold)
    return flood / (end_s - start_s)


def test_flood_fraction_matches_the_second_by_second_count() -> None:
    rng = np.random.default_rng(4)
    for trial in range(20):
        n = int(rng.integers(0, 60))
        ts_s = sorted(int(x) for x in rng.integers(-600, 3600, n))
        if trial == 0:
            ts_s = [100] * 12  # twelve at one instant: a flood for exactly one window
        got = kpi.flood_fraction(np.array(ts_s, dtype=np.int64) * S, 0, 3600 * S)
        assert got == pytest.approx(_naive_flood(ts_s, 0, 3600), abs=1e-12), trial
    assert kpi.flood_fraction(np.array([100] * 12, dtype=np.int64) * S, 0, 3600 * S) == pytest.approx(600 / 3600)
    assert kpi.flood_fraction(np.array([100] * 10, dtype=np.int64) * S, 0, 3600 * S) == 0.0  # 10 is not a flood


def test_alarm_rates_average_and_peak() -> None:
    ts = np.array([1, 2, 3, 601, 1300, 1301, 1302, 1303, 3599], dtype=np.int64) * S
    avg, peak = kpi.alarm_rates(ts, 0, 3600 * S)
    assert avg == pytest.approx(9 / 6) and peak == 4
    assert kpi.alarm_rates(np.array([-5, 3600], dtype=np.int64) * S, 0, 3600 * S) == (0.0, 0)  # outside: none


def row(inc: str, ts_s: float, transition: str, **kw: Any) -> dict[str, Any]:
    base = {"ts_ns": T0 + int(ts_s * S), "incident": inc, "area": "hall-a", "source": f"gw/{inc[:2]}",
            "priority": "low", "transition": transition, "active": transition not in ("clear",),
            "chattering": False, "suppressed": False}
    return {**base, **kw}


def with_starts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each incident starts at its first row, unless the row says otherwise."""
    first: dict[str, int] = {}
    for r in rows:
        first[r["incident"]] = min(first.get(r["incident"], r["ts_ns"]), r["ts_ns"])
    return [{"start_ns": first[r["incident"]], **r} for r in rows]


def test_annunciated_once_when_it_reaches_the_operator() -> None:
    rows = with_starts([
        row("a", 10, "open"), row("a", 20, "ack"),  # annunciated at its open
        row("b", 10, "suppress", suppressed=True), row("b", 30, "unsuppress"),  # machine back on, still active
        row("b", 40, "suppress", suppressed=True), row("b", 50, "unsuppress"),  # once per incident
        row("c", 10, "suppress", suppressed=True), row("c", 30, "clear", active=False),  # never shown
        row("d", 10, "chatter", suppressed=True, chattering=True), row("d", 70, "unshelve"),  # shown when unshelved
        row("e", 60, "update", start_ns=T0 - 3600 * S),  # began before the data: shown back then, not now
        row("f", 10, "flood_open"),
    ])
    t = kpi.Transitions.from_rows(rows)
    got = sorted((t.incidents[t.incident[i]], rows[i]["transition"], rows[i]["ts_ns"])
                 for i in np.flatnonzero(kpi.annunciated(t)))
    assert got == [("a", "open", T0 + 10 * S), ("b", "unsuppress", T0 + 30 * S), ("d", "unshelve", T0 + 70 * S),
                   ("f", "flood_open", T0 + 10 * S)]


def test_report_counts_what_reached_the_operator() -> None:
    rows = [
        row("m1-1", 10, "open", priority="critical"), row("m1-1", 20, "ack"), row("m1-1", 30, "clear"),
        row("m1-2", 40, "open", priority="high"), row("m1-2", 45, "clear"),  # the same machine again
        row("m1-3", 60, "open"), row("m1-3", 61, "clear"),
        row("m2-1", 50, "open", area="hall-b", source="gw/m2", suppressed=True),  # machine off: not annunciated
        row("m3-1", 70, "open", area="hall-b", source="gw/m3"),
        # m4 activates three times in 50 s: chattering, though the edge never said so
        row("m4-1", 100, "open", source="gw/m4"), row("m4-1", 110, "update", active=False),
        row("m4-1", 120, "update"), row("m4-1", 130, "update", active=False), row("m4-1", 150, "update"),
        # m5: three activations over 3 minutes is not chattering; m6 the edge flagged
        row("m5-1", 200, "open", source="gw/m5"), row("m5-1", 210, "clear"), row("m5-1", 290, "update"),
        row("m5-1", 300, "clear"), row("m5-1", 380, "update"),
        row("m6-1", 400, "open", source="gw/m6"), row("m6-1", 401, "chatter", chattering=True),
        row("old", -700, "open", source="gw/old"),  # before the report: in no figure
    ]
    t = kpi.Transitions.from_rows(with_starts(rows))
    r = kpi.report(t, T0, T0 + 3600 * S, standing_ids=["m9-1"])
    assert r.annunciated == 7
    assert [(a.area, a.alarms, a.peak_per_10min) for a in r.areas] == [("hall-a", 6, 6), ("hall-b", 1, 1)]
    assert r.areas[0].avg_per_10min == pytest.approx(1.0) and r.areas[0].flood_pct == 0.0
    assert r.top10 == [("gw/m1", 3), ("gw/m3", 1), ("gw/m4", 1), ("gw/m5", 1), ("gw/m6", 1)]  # m2 suppressed
    assert r.chattering == ["m4-1", "m6-1"]
    assert r.priorities["critical"] == (1, pytest.approx(100 / 7))
    assert r.priorities["high"][0] == 1 and r.priorities["low"][0] == 5
    assert r.standing == ["m9-1"]


def test_standing_is_active_for_more_than_a_day() -> None:
    now = T0 + 10 * 86_400 * S
    start = np.array([now - 25 * 3600 * S, now - 23 * 3600 * S, now - 30 * 86_400 * S])
    assert kpi.standing(start, np.array([True, True, False]), now).tolist() == [0]


def test_incident_order_is_bounded_by_count_and_age_and_survives_a_reload(tmp_path: Path) -> None:
    from cloud.alarms.store import IncidentOrder

    o = IncidentOrder(tmp_path, max_incidents=3, max_age_s=100.0)
    assert o.admit("gw", "a", 2, now_s=0.0) and not o.admit("gw", "a", 1, now_s=1.0) and o.admit("gw", "a", 2, now_s=2)
    for i, name in enumerate("bcd"):
        o.admit("gw", name, 5, now_s=10.0 + i)
    assert o.seq("gw", "a") is None and o.forgotten == 1  # the least recently updated, beyond the count
    o.admit("gw", "e", 1, now_s=111.5)  # b and c are now older than 100 s
    assert [o.seq("gw", n) for n in "bcde"] == [None, None, 5, 1] and o.forgotten == 3
    o.save()
    again = IncidentOrder(tmp_path, max_incidents=3, max_age_s=100.0)
    assert again.load() == 2 and again.seq("gw", "d") == 5 and not again.admit("gw", "d", 4, now_s=112.0)
