"""Generates the Grafana dashboards in ``cloud/grafana/dashboards/`` (run ``python -m cloud.grafana.build``).

The JSON files are what ships and what Grafana provisions; this module is how they are written, so
that measurement, tag, field and retention-policy names come from :mod:`cloud.schema` and
:mod:`cloud.retention` instead of being typed into JSON by hand. ``tests/test_grafana.py`` checks
that the committed JSON equals what this module builds, then runs every query in it against a real
InfluxDB holding simulated data.

Conventions, each for a reason a plant engineer would notice:

- Queries are InfluxQL only, so the dashboards work on InfluxDB 1.x, 2.x (with a DBRP mapping per
  retention policy) and 3.x (InfluxQL over the v1 query API).
- Every tag filter is ``"tag" =~ /^$var$/``: Grafana expands a multi-value selection to an escaped
  ``(a|b)`` alternation there and "All" to ``.*``, so one form works for one, many or all values.
- Time-series panels read ``"$rp"."<measurement>"``: the hidden ``$rp`` variable picks raw data,
  1-minute or 1-hour rollups from the time range (``meta.resolutions``, written by
  :func:`cloud.retention.ensure`), so a 90-day view reads 2,160 points per series, not 7.8 million.
  ``$vmin``/``$vmax`` name the fields that hold a bucket's min and max at that resolution.
- Alarm episodes are annotations (point at the start, region to ``end_ms`` once closed) on the
  signal explorer and machine dashboards, filtered by the same variables as the panels.
- One data source, referenced by uid ``plantwire-influxdb`` (provisioned from
  ``provisioning/datasources/plantwire.yaml``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cloud import retention
from cloud import schema as s

__all__ = ["DASHBOARD_DIR", "DATASOURCE", "SCHEMA_VERSION", "build_all", "main"]

DASHBOARD_DIR = Path(__file__).parent / "dashboards"
DATASOURCE = {"type": "influxdb", "uid": "plantwire-influxdb"}
SCHEMA_VERSION = 39  # Grafana 10.4/11.x; older Grafana migrates down-level JSON, not up-level
_TAGS = ["plantwire"]


def _re(tag: str, var: str | None = None) -> str:
    return f'"{tag}" =~ /^${var or tag}$/'


def _where(*tags: str, time: bool = True) -> str:
    parts = [_re(t) for t in tags]
    if time:
        parts.append("$timeFilter")
    return " AND ".join(parts)


# -- panels ---------------------------------------------------------------------------------------------


class _Layout:
    """Hands out panel ids and grid positions row by row (24 columns), so nothing overlaps."""

    def __init__(self) -> None:
        self.next_id = 1
        self.x = 0
        self.y = 0
        self.row_h = 0

    def place(self, w: int, h: int) -> dict[str, int]:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        pos = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def newline(self) -> None:
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0

    def take_id(self) -> int:
        i = self.next_id
        self.next_id += 1
        return i


def _target(query: str, ref: str = "A", *, alias: str = "", fmt: str = "time_series") -> dict[str, Any]:
    t: dict[str, Any] = {
        "datasource": DATASOURCE,
        "refId": ref,
        "rawQuery": True,
        "resultFormat": fmt,
        "query": query,
    }
    if alias:
        t["alias"] = alias
    return t


def _panel(
    layout: _Layout,
    kind: str,
    title: str,
    targets: list[dict[str, Any]],
    *,
    w: int = 12,
    h: int = 8,
    unit: str = "",
    description: str = "",
    options: dict[str, Any] | None = None,
    overrides: list[dict[str, Any]] | None = None,
    custom: dict[str, Any] | None = None,
    min_interval: str = "",
    transformations: list[dict[str, Any]] | None = None,
    repeat: str = "",
    thresholds: list[dict[str, Any]] | None = None,
    min_max: tuple[float, float] | None = None,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    if unit:
        defaults["unit"] = unit
    if custom:
        defaults["custom"] = custom
    if thresholds:
        defaults["thresholds"] = {"mode": "absolute", "steps": thresholds}
    if min_max:
        defaults["min"], defaults["max"] = min_max
    p: dict[str, Any] = {
        "id": layout.take_id(),
        "type": kind,
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": layout.place(w, h),
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": options or {},
    }
    if description:
        p["description"] = description
    if min_interval:
        p["interval"] = min_interval
    if transformations:
        p["transformations"] = transformations
    if repeat:
        p["repeat"] = repeat
        p["repeatDirection"] = "h"
        p["maxPerRow"] = 2
    return p


_HEALTH_STEPS = [
    {"color": "red", "value": None},
    {"color": "orange", "value": 0.4},
    {"color": "green", "value": 0.7},
]


# -- template variables -----------------------------------------------------------------------------------


def _query_var(name: str, query: str, *, label: str = "", multi: bool = True, hide: int = 0,
               refresh: int = 1) -> dict[str, Any]:
    """A query variable; refresh 1 = on dashboard load, 2 = on time-range change."""
    return {
        "name": name,
        "label": label or name,
        "type": "query",
        "datasource": DATASOURCE,
        "query": query,
        "definition": query,
        "refresh": refresh,
        "multi": multi,
        "includeAll": multi,
        # "All" as one regex, not an alternation of every value: 15,000 signals would make a query
        # of several hundred kB, and /^.*$/ also keeps series without the tag (signals outside machines).
        "allValue": ".*" if multi else None,
        "current": {},
        "options": [],
        "sort": 1,
        "hide": hide,
        "regex": "",
    }


def _tag_vars(measurement: str, *keys: str) -> list[dict[str, Any]]:
    """Chained tag-value variables: each one filtered by the ones before it."""
    out = []
    for i, key in enumerate(keys):
        cond = " AND ".join(_re(k) for k in keys[:i])
        q = f'SHOW TAG VALUES FROM {retention.qualified(measurement)} WITH KEY = "{key}"' + (
            f" WHERE {cond}" if cond else "")
        out.append(_query_var(key, q))
    return out


def _resolution_vars() -> list[dict[str, Any]]:
    span = "$__to - $__from"
    where = f'WHERE {span} > "min_span_ms" AND {span} <= "max_span_ms"'
    src = f'"{retention.RP_META}"."{retention.RESOLUTIONS}"'
    return [
        _query_var(name, f'SELECT "{col}" FROM {src} {where}', multi=False, hide=2, refresh=2)
        for name, col in (("rp", "rp"), ("vmin", "vmin"), ("vmax", "vmax"))
    ]


def _events_annotation(*tags: str, name: str = "Alarm episodes") -> dict[str, Any]:
    """Alarm episodes from ``events``; signal-less (machine-scope) episodes pass a signal filter too."""
    conds = []
    for t in tags:
        conds.append(f'({_re(t)} OR "{t}" = \'\')' if t == s.TAG_SIGNAL else _re(t))
    conds.append("$timeFilter")
    q = (
        f'SELECT "{s.F_STATE}", "{s.F_PEAK}", "{s.F_END_MS}", "{s.TAG_KIND}", "{s.TAG_MACHINE}", "{s.TAG_SIGNAL}" '
        f'FROM "{s.M_EVENTS}" WHERE {" AND ".join(conds)}'
    )
    return {
        "name": name,
        "datasource": DATASOURCE,
        "enable": True,
        "iconColor": "red",
        "query": q,
        "textColumn": s.F_STATE,
        "tagsColumn": f"{s.TAG_KIND},{s.TAG_MACHINE},{s.TAG_SIGNAL}",
        "timeEndColumn": s.F_END_MS,
        "titleColumn": "",
    }


def _dashboard(uid: str, title: str, description: str, panels: list[dict[str, Any]],
               variables: list[dict[str, Any]], annotations: list[dict[str, Any]], *,
               time_from: str = "now-6h", refresh: str = "30s") -> dict[str, Any]:
    builtin = {
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": _TAGS,
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": time_from, "to": "now"},
        "timezone": "",
        "refresh": refresh,
        "annotations": {"list": [builtin, *annotations]},
        "templating": {"list": variables},
        "links": [{"type": "dashboards", "tags": _TAGS, "asDropdown": True, "title": "plantwire"}],
        "panels": panels,
    }


# -- the dashboards -----------------------------------------------------------------------------------------


def _active_alarms_subquery(*tags: str) -> str:
    """Series (site/gateway/machine/signal/kind) whose latest episode is still open, within raw retention."""
    group = ", ".join(f'"{t}"' for t in (s.TAG_SITE, s.TAG_GATEWAY, s.TAG_MACHINE, s.TAG_SIGNAL, s.TAG_KIND))
    where = " AND ".join([*(_re(t) for t in tags), "time > now() - 400d"])
    return (
        f'(SELECT last("{s.F_ACTIVE}") AS "active", last("{s.F_PEAK}") AS "peak" FROM "{s.M_EVENTS}" '
        f"WHERE {where} GROUP BY {group})"
    )


def plant_overview() -> dict[str, Any]:
    lay = _Layout()
    sub = _active_alarms_subquery(s.TAG_SITE)
    panels = [
        _panel(lay, "stat", "Active alarms", [_target(f'SELECT count("active") FROM {sub} WHERE "active" = 1')],
               w=6, h=5, description="Alarm series whose latest episode is still open.",
               thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}]),
        _panel(lay, "stat", "Gateways online", [_target(
            f'SELECT last("{s.F_ONLINE}") FROM "{s.M_PIPELINE}" WHERE {_where(s.TAG_SITE)} GROUP BY "{s.TAG_GATEWAY}"',
            alias="$tag_gateway")], w=6, h=5,
            thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}]),
        _panel(lay, "stat", "Samples stored per second", [_target(
            f'SELECT mean("{s.F_SAMPLES_PER_S}") FROM "$rp"."{s.M_PIPELINE}" WHERE {_where(s.TAG_SITE)} '
            f'GROUP BY time($__interval), "{s.TAG_GATEWAY}", "{s.TAG_INGESTOR}" fill(none)', alias="$tag_gateway")],
            w=6, h=5, unit="short", min_interval="10s", options={"reduceOptions": {"calcs": ["lastNotNull"]}}),
        _panel(lay, "stat", "Pipeline lag (worst gateway)", [_target(
            f'SELECT max("{s.F_LAG_S}") FROM "$rp"."{s.M_PIPELINE}" WHERE {_where(s.TAG_SITE)} '
            "GROUP BY time($__interval) fill(none)")], w=6, h=5, unit="s", min_interval="10s",
            options={"reduceOptions": {"calcs": ["lastNotNull"]}},
            thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 10},
                        {"color": "red", "value": 60}]),
        _panel(lay, "bargauge", "Machines by health", [_target(
            f'SELECT last("{s.F_HEALTH}") AS "health" FROM "{s.M_HEALTH}" WHERE {_where(s.TAG_SITE)} '
            f'GROUP BY "{s.TAG_MACHINE}"', alias="$tag_machine")], w=12, h=10, unit="percentunit",
            min_max=(0, 1), thresholds=_HEALTH_STEPS,
            options={"orientation": "horizontal", "displayMode": "gradient",
                     "reduceOptions": {"calcs": ["lastNotNull"]}}, description="Latest health index; 1 = as new."),
        _panel(lay, "table", "Active alarms", [_target(
            f'SELECT "peak" FROM {sub} WHERE "active" = 1 GROUP BY "{s.TAG_SITE}", "{s.TAG_GATEWAY}", '
            f'"{s.TAG_MACHINE}", "{s.TAG_SIGNAL}", "{s.TAG_KIND}"', fmt="table")], w=12, h=10,
            transformations=[{"id": "organize", "options": {"excludeByName": {"Time": False}}}]),
        _panel(lay, "timeseries", "Alarm episodes by kind", [_target(
            f'SELECT count("{s.F_PEAK}") FROM "{s.M_EVENTS}" WHERE {_where(s.TAG_SITE)} '
            f'GROUP BY time($__interval), "{s.TAG_KIND}" fill(none)', alias="$tag_kind")], w=24, h=8,
            min_interval="1m", custom={"drawStyle": "bars", "stacking": {"mode": "normal"}}),
    ]
    variables = [*_tag_vars(s.M_SAMPLES, s.TAG_SITE), *_resolution_vars()]
    return _dashboard("plantwire-overview", "plantwire: plant overview",
                      "Machines by health, active alarms, pipeline throughput at a glance.",
                      panels, variables, [_events_annotation(s.TAG_SITE)])


#: Quality numbers as words; null (no quality field: every sample good) reads "good" too.
_QUALITY_NAMES: list[dict[str, Any]] = [
    {"type": "value", "options": {"0": {"text": "good", "index": 0},
                                  "1": {"text": "uncertain", "color": "orange", "index": 1},
                                  "2": {"text": "bad", "color": "red", "index": 2}}},
    {"type": "special", "options": {"match": "null", "result": {"text": "good", "index": 3}}},
]


def signal_explorer() -> dict[str, Any]:
    lay = _Layout()
    tags = (s.TAG_SITE, s.TAG_GATEWAY, s.TAG_MACHINE, s.TAG_SIGNAL)
    w = _where(*tags)
    panels = [
        _panel(lay, "timeseries", "Signals ($rp: mean with min/max band)", [
            _target(f'SELECT mean("{s.F_VALUE}") FROM "$rp"."{s.M_SAMPLES}" WHERE {w} '
                    f'GROUP BY time($__interval), "{s.TAG_SIGNAL}" fill(none)', "A", alias="$tag_signal"),
            _target(f'SELECT min("$vmin") FROM "$rp"."{s.M_SAMPLES}" WHERE {w} '
                    f'GROUP BY time($__interval), "{s.TAG_SIGNAL}" fill(none)', "B", alias="$tag_signal min"),
            _target(f'SELECT max("$vmax") FROM "$rp"."{s.M_SAMPLES}" WHERE {w} '
                    f'GROUP BY time($__interval), "{s.TAG_SIGNAL}" fill(none)', "C", alias="$tag_signal max"),
        ], w=24, h=12, description=(
            "Raw samples for ranges up to a few hours, 1-minute rollups up to about a week, hourly rollups "
            "beyond (the hidden $rp variable). Shaded: min and max within each bucket."),
            overrides=[{"matcher": {"id": "byFrameRefID", "options": ref},
                        "properties": [{"id": "custom.lineWidth", "value": 0},
                                       {"id": "custom.fillOpacity", "value": 10}]} for ref in ("B", "C")]),
        _panel(lay, "timeseries", "Samples not good (uncertain or bad)", [_target(
            f'SELECT count("{s.F_QUALITY}") FROM "{retention.RP_RAW}"."{s.M_SAMPLES}" WHERE "{s.F_QUALITY}" > 0 '
            f'AND {w} GROUP BY time($__interval), "{s.TAG_SIGNAL}" fill(none)', alias="$tag_signal")], w=12, h=8,
            custom={"drawStyle": "bars"}, description=(
                "Uncertain and bad samples per bucket: every bar is a stretch that was not good. Good samples "
                "carry no quality field, so an empty chart means all good (or no data: see the signal chart).")),
        # Worst quality over the range, not last(quality): good points carry no quality field (absent means
        # good), so last(quality) would show the last sample that was *not* good, however long ago.
        _panel(lay, "table", "Latest values, worst quality in the range", [_target(
            f'SELECT last("{s.F_VALUE}") AS "value", max("{s.F_QUALITY}") AS "worst quality" '
            f'FROM "{retention.RP_RAW}"."{s.M_SAMPLES}" WHERE {w} GROUP BY "{s.TAG_SIGNAL}"', fmt="table")],
            w=12, h=8, overrides=[{"matcher": {"id": "byName", "options": "worst quality"},
                                   "properties": [{"id": "mappings", "value": _QUALITY_NAMES}]}],
            description="Last value per signal and the worst quality of any sample in the time range "
                        "(empty or 0: all good)."),
    ]
    variables = [*_tag_vars(s.M_SAMPLES, *tags), *_resolution_vars()]
    return _dashboard("plantwire-signals", "plantwire: signal explorer",
                      "Any signal by site, gateway, machine; raw or rolled up by time range; alarms as annotations.",
                      panels, variables, [_events_annotation(*tags)], time_from="now-3h")


def machine_health() -> dict[str, Any]:
    lay = _Layout()
    tags = (s.TAG_SITE, s.TAG_GATEWAY, s.TAG_MACHINE)
    w = _where(*tags)
    band = [
        {"matcher": {"id": "byName", "options": s.F_RUL_HIGH},
         "properties": [{"id": "custom.fillBelowTo", "value": s.F_RUL_LOW}, {"id": "custom.lineWidth", "value": 0},
                        {"id": "custom.fillOpacity", "value": 20}]},
        {"matcher": {"id": "byName", "options": s.F_RUL_LOW},
         "properties": [{"id": "custom.lineWidth", "value": 0}]},
    ]
    panels = [
        _panel(lay, "bargauge", "Health now", [_target(
            f'SELECT last("{s.F_HEALTH}") FROM "{s.M_HEALTH}" WHERE {w} GROUP BY "{s.TAG_MACHINE}"',
            alias="$tag_machine")], w=8, h=9, unit="percentunit", min_max=(0, 1), thresholds=_HEALTH_STEPS,
            options={"orientation": "horizontal", "reduceOptions": {"calcs": ["lastNotNull"]}}),
        _panel(lay, "timeseries", "Health index", [_target(
            f'SELECT mean("{s.F_HEALTH}") FROM "$rp"."{s.M_HEALTH}" WHERE {w} '
            f'GROUP BY time($__interval), "{s.TAG_MACHINE}" fill(none)', alias="$tag_machine")],
            w=16, h=9, unit="percentunit", min_max=(0, 1), thresholds=_HEALTH_STEPS),
        _panel(lay, "timeseries", "Remaining useful life: $machine", [_target(
            f'SELECT mean("{s.F_RUL}") AS "{s.F_RUL}", min("{s.F_RUL_LOW}") AS "{s.F_RUL_LOW}", '
            f'max("{s.F_RUL_HIGH}") AS "{s.F_RUL_HIGH}" FROM "$rp"."{s.M_HEALTH}" WHERE {w} '
            "GROUP BY time($__interval) fill(none)", alias="$col")], w=12, h=9, overrides=band, repeat="machine",
            description="Estimate with its uncertainty band (rul_low to rul_high), in the model's unit."),
    ]
    lay.newline()
    panels.append(_panel(lay, "table", "Alarm episodes", [_target(
        f'SELECT "{s.F_STATE}", "{s.F_PEAK}", "{s.F_DURATION_S}", "{s.TAG_KIND}", "{s.TAG_SIGNAL}" '
        f'FROM "{s.M_EVENTS}" WHERE {w}', fmt="table")], w=24, h=9))
    variables = [*_tag_vars(s.M_HEALTH, *tags), *_resolution_vars()]
    return _dashboard("plantwire-machines", "plantwire: machine health and RUL",
                      "Health index and remaining useful life with its band, per machine; alarm episodes.",
                      panels, variables, [_events_annotation(*tags)], time_from="now-24h", refresh="1m")


def pipeline_health() -> dict[str, Any]:
    lay = _Layout()
    tags = (s.TAG_SITE, s.TAG_GATEWAY)
    w = _where(*tags)
    src = f'"$rp"."{s.M_PIPELINE}"'
    by_gw = f'GROUP BY time($__interval), "{s.TAG_GATEWAY}" fill(none)'

    def ts(title: str, field: str, agg: str, unit: str, desc: str, *, bars: bool = False,
           group: str = by_gw, alias: str = "$tag_gateway") -> dict[str, Any]:
        return _panel(lay, "timeseries", title, [_target(
            f'SELECT {agg}("{field}") FROM {src} WHERE {w} {group}', alias=alias)], w=12, h=8, unit=unit,
            description=desc, min_interval="10s", custom={"drawStyle": "bars"} if bars else None)

    panels = [
        ts("Samples stored per second", s.F_SAMPLES_PER_S, "mean", "short",
           "Per gateway; stacked per ingestor when several share the load.",
           group=f'GROUP BY time($__interval), "{s.TAG_GATEWAY}", "{s.TAG_INGESTOR}" fill(none)'),
        ts("Lag (now - newest stored sample)", s.F_LAG_S, "max", "s", "Worst value in each bucket."),
        ts("Edge log depth", s.F_WAL_BYTES, "max", "bytes", "Write-ahead log bytes not yet acknowledged."),
        ts("Oldest unacknowledged record", s.F_WAL_OLDEST_AGE_S, "max", "s", "Age of the log's oldest record."),
        ts("Open gaps", s.F_GAPS, "max", "short", "Missing sequence ranges in the gap ledger."),
        ts("Oldest gap age", s.F_GAP_AGE_S, "max", "s", "A gap that keeps ageing is data that will not come."),
        ts("Dropped at the edge", s.F_DROPPED, "sum", "short",
           "Samples the edge dropped because its log's bounds forced it; should be 0.", bars=True),
        ts("Dead letters", s.F_DEAD_LETTERS, "sum", "short", "Malformed or oversized payloads set aside.",
           bars=True),
        _panel(lay, "table", "Totals in range", [_target(
            f'SELECT sum("{s.F_SAMPLES}") AS "samples", sum("{s.F_DUPLICATES}") AS "duplicates", '
            f'sum("{s.F_DROPPED}") AS "dropped", sum("{s.F_DEAD_LETTERS}") AS "dead_letters", '
            f'max("{s.F_GAPS}") AS "max_gaps" FROM {src} WHERE {w} GROUP BY "{s.TAG_GATEWAY}"', fmt="table")],
            w=24, h=7),
    ]
    panels.append(_panel(lay, "table", "Model versions", [_target(
        f'SELECT last("{s.F_MODELS}") AS "models", last("{s.F_MODEL_REFUSALS}") AS "refused" '
        f'FROM "{s.M_PIPELINE}" WHERE {w} GROUP BY "{s.TAG_SITE}", "{s.TAG_GATEWAY}"', fmt="table")],
        w=24, h=7, description="Per gateway, as its health reports: each model slot (kind/template) with its "
        "active, shadow and previous bundle versions, and the bundles it refused (docs/models.md)."))
    variables = [*_tag_vars(s.M_PIPELINE, *tags), *_resolution_vars()]
    return _dashboard("plantwire-pipeline", "plantwire: pipeline health",
                      "Per gateway: ingest rate, lag, edge log depth, gaps, drops and dead letters.",
                      panels, variables, [], time_from="now-6h")


# -- alarm management (issue 16): EEMUA 191 performance and the operator's list of open incidents --------

#: Annunciated = an incident (or flood summary) reaching the operator: opened, or released from suppression,
#: while active and not suppressed, shelved or out of service. cloud.alarms.kpi (the CLI's report) also counts
#: an incident first shown when unshelved, and counts each incident once; InfluxQL cannot, so a panel may
#: count an incident suppressed and released twice as two.
_ANNUNCIATED = (
    f'"{s.TAG_TRANSITION}" =~ /^(open|flood_open|unsuppress)$/ AND "{s.F_ACTIVE}" = 1 AND '
    f'"{s.F_SUPPRESSED_BY}" = \'\' AND "{s.F_SHELVED}" = 0 AND "{s.F_OUT_OF_SERVICE}" = 0'
)
#: The alarm layer's and the audit trail's retention policies (cloud.retention: kept 1 and 3 years).
_INCIDENTS = retention.qualified(s.M_INCIDENTS)
_TRANSITIONS = retention.qualified(s.M_INCIDENT_TRANSITIONS)
_AUDIT = retention.qualified(s.M_AUDIT)
_OPEN_WINDOW = "time > now() - 400d"  # open incidents are stored at their start, which may be months back


def _per_10min(*tags: str, group: str = f'"{s.TAG_AREA}"') -> str:
    """Annunciated alarms per 10-minute bucket of the clock (fill(0): quiet buckets count), per ``group``."""
    return (
        f'SELECT count("{s.F_SEQ}") AS "alarms" FROM {_TRANSITIONS} WHERE {_ANNUNCIATED} AND '
        f"{_where(*tags)} GROUP BY time(10m), {group} fill(0)"
    )


def alarm_performance() -> dict[str, Any]:
    lay = _Layout()
    tags = (s.TAG_SITE, s.TAG_AREA)
    w = _where(*tags)
    acceptable = [{"color": "green", "value": None}, {"color": "orange", "value": 1.01},
                  {"color": "red", "value": 10.01}]
    panels = [
        _panel(lay, "timeseries", "Annunciated alarms per 10 minutes, per area", [_target(
            _per_10min(*tags), alias="$tag_area")], w=24, h=9, custom={"drawStyle": "bars"},
            thresholds=acceptable, description=(
                "EEMUA 191: about 1 per operator area per 10 minutes is very likely acceptable; more than 10 "
                "is a flood. Buckets of the clock's 10 minutes; suppressed, shelved and out-of-service "
                "incidents are not counted (they never reached the operator).")),
        _panel(lay, "table", "Alarm rate per area (per 10 minutes)", [_target(
            f'SELECT mean("alarms") AS "average", max("alarms") AS "peak", sum("alarms") AS "total" '
            f'FROM ({_per_10min(*tags)}) GROUP BY "{s.TAG_AREA}"', fmt="table")], w=12, h=8,
            description="Average and peak annunciated alarms per 10-minute bucket over the range."),
        _panel(lay, "table", "Time in flood per area (%)", [_target(
            f'SELECT count("alarms") * 60000000 / ($__to - $__from) AS "flood_pct", count("alarms") AS '
            f'"flood_buckets" FROM ({_per_10min(*tags)}) WHERE "alarms" > 10 GROUP BY "{s.TAG_AREA}"',
            fmt="table")], w=12, h=8, description=(
                "Share of the range's 10-minute buckets holding more than 10 annunciated alarms (EEMUA "
                "target: under 1 %). Areas never in flood have no row. `plantwire alarms report` gives the "
                "sliding-window figure, which can only be higher.")),
        _panel(lay, "table", "Top 10 most frequent sources", [_target(
            f'SELECT count("{s.F_SEQ}") AS "alarms" FROM {_TRANSITIONS} WHERE {_ANNUNCIATED} AND '
            f'{w} GROUP BY "{s.TAG_GATEWAY}", "{s.TAG_MACHINE}", "{s.TAG_AREA}"', fmt="table")], w=12, h=9,
            transformations=[{"id": "sortBy", "options": {"sort": [{"field": "alarms", "desc": True}]}},
                             {"id": "limit", "options": {"limitField": 10}}],
            description="The machines (or areas, for machine-less incidents) raising the most alarms."),
        _panel(lay, "piechart", "Priority distribution", [_target(
            f'SELECT count("{s.F_SEQ}") FROM {_TRANSITIONS} WHERE {_ANNUNCIATED} AND {w} '
            f'GROUP BY "{s.TAG_PRIORITY}"', alias="$tag_priority")], w=6, h=9,
            options={"reduceOptions": {"calcs": ["sum"]}, "displayLabels": ["percent"]},
            description="EEMUA suggests roughly 5 % critical, 15 % high, 80 % low."),
        _panel(lay, "stat", "Chattering incidents", [_target(
            f'SELECT count(distinct("{s.F_ID}")) FROM {_TRANSITIONS} WHERE "{s.F_CHATTERING}" = 1 '
            f"AND {w}")], w=6, h=9, thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}],
            description="Incidents marked chattering (3 or more activations in a minute) in the range; target 0."),
        _panel(lay, "table", "Standing incidents (active longer than 24 h)", [_target(
            f'SELECT "{s.F_ID}", "{s.TAG_GATEWAY}", "{s.TAG_AREA}", "{s.TAG_MACHINE}", "{s.F_PRIORITY}", '
            f'"{s.F_STATE}", "{s.F_SIGNALS}" FROM {_INCIDENTS} WHERE "{s.F_ACTIVE}" = 1 AND '
            f'{_where(*tags, time=False)} AND time < now() - 24h AND {_OPEN_WINDOW}', fmt="table")], w=24, h=8,
            description="Whatever the time range: standing alarms are defects to review (EEMUA 191)."),
    ]
    variables = _tag_vars(s.M_INCIDENT_TRANSITIONS, *tags)
    return _dashboard("plantwire-alarm-performance", "plantwire: alarm performance (EEMUA 191)",
                      "Alarm rates per area, floods, most frequent sources, priorities, chattering and standing "
                      "incidents.", panels, variables, [], time_from="now-24h", refresh="1m")


def active_alarms() -> dict[str, Any]:
    lay = _Layout()
    tags = (s.TAG_SITE, s.TAG_AREA)
    open_where = f'"{s.F_OPEN}" = 1 AND {_where(*tags, time=False)} AND {_OPEN_WINDOW}'

    def count(title: str, cond: str, desc: str, color: str = "red") -> dict[str, Any]:
        return _panel(lay, "stat", title, [_target(
            f'SELECT count("{s.F_ID}") FROM {_INCIDENTS} WHERE {open_where}{cond}')], w=6, h=4,
            thresholds=[{"color": "green", "value": None}, {"color": color, "value": 1}], description=desc)

    panels = [
        count("Open incidents", "", "Active, or cleared but not yet acknowledged."),
        count("Unacknowledged", f' AND "{s.F_ACKED}" = 0', "Waiting for an operator."),
        count("Shelved", f' AND "{s.F_SHELVED}" = 1', "Shelved by an operator, for a limited time.", "orange"),
        count("Out of service", f' AND "{s.F_OUT_OF_SERVICE}" = 1', "Taken out of service, with a reason.",
              "orange"),
        _panel(lay, "table", "Open incidents", [_target(
            f'SELECT "{s.F_PRIORITY}", "{s.F_STATE}", "{s.TAG_AREA}", "{s.TAG_MACHINE}", "{s.F_SIGNALS}", '
            f'"{s.F_KINDS}", "{s.F_PEAK}", "{s.F_ID}", "{s.TAG_GATEWAY}", "{s.F_SUPPRESSED_BY}", "{s.F_ACTOR}", '
            f'"{s.F_REASON}" FROM {_INCIDENTS} WHERE {open_where}', fmt="table")], w=24, h=12,
            transformations=[{"id": "sortBy", "options": {"sort": [{"field": "Time", "desc": True}]}}],
            description=("Every incident that needs the operator, newest first, with its contributing signals "
                         "(most important first). Acknowledge or shelve with `plantwire alarms`.")),
        _panel(lay, "table", "Incident transitions", [_target(
            f'SELECT "{s.F_ID}", "{s.TAG_TRANSITION}", "{s.TAG_PRIORITY}", "{s.TAG_AREA}", "{s.TAG_MACHINE}", '
            f'"{s.F_STATE}", "{s.F_ACTOR}", "{s.F_REASON}" FROM {_TRANSITIONS} WHERE '
            f'{_where(*tags)} ORDER BY time DESC LIMIT 500', fmt="table")], w=24, h=10),
        _panel(lay, "table", "Audit trail (operator actions)", [_target(
            f'SELECT "{s.F_ACTOR}", "{s.TAG_SERVICE}", "{s.TAG_ACTION}", "{s.F_TARGET}", "{s.TAG_OUTCOME}", '
            f'"{s.F_REASON}", "{s.F_DETAIL}", "{s.TAG_GATEWAY}" FROM {_AUDIT} WHERE '
            f'{_where(s.TAG_SITE)} ORDER BY time DESC LIMIT 500', fmt="table")], w=24, h=8,
            description="Who did what, when and why: every action applied or refused on a gateway."),
    ]
    variables = _tag_vars(s.M_INCIDENTS, *tags)
    return _dashboard("plantwire-active-alarms", "plantwire: active alarms",
                      "Open incidents with their contributing signals, the latest transitions and the audit trail.",
                      panels, variables, [], time_from="now-24h", refresh="10s")

# The energy agent's derived signals (edge/agents/energy.py): "<owner>.energy.<name>" in "samples", one per
# minute (demand per 15 minutes); owners are machines, lines and "area.<name>". Energy is summed, so these
# panels read the raw retention policy (a rollup's mean of means cannot be summed back; at one sample per
# minute per series the raw data of a month is small).
_ENERGY = "energy"


def _energy_re(name: str, owner: str = "") -> str:
    prefix = "^" + owner.replace(".", "\\.") if owner else ""
    return f'"{s.TAG_SIGNAL}" =~ /{prefix}.*\\.{_ENERGY}\\.{name}$/'


def energy() -> dict[str, Any]:
    lay = _Layout()
    area = "area."
    site = (s.TAG_SITE,)
    m_sel = (s.TAG_SITE, s.TAG_MACHINE)
    o_sel = (s.TAG_SITE, "owner")

    def q(agg: str, name: str, *tags: str, owner: str = "", group: str = "") -> str:
        conds = [_energy_re(name, owner)]
        for t in tags:
            conds.append(f'"{s.TAG_MACHINE}" =~ /^$owner$/' if t == "owner" else _re(t))
        conds.append("$timeFilter")
        g = f" GROUP BY {group}" if group else ""
        if "time(" in group:
            g += " fill(none)"
        return f'SELECT {agg} FROM "{s.M_SAMPLES}" WHERE {" AND ".join(conds)}{g}'

    panels = [
        _panel(lay, "stat", "Site power now", [_target(
            q(f'last("{s.F_VALUE}")', "power_kw", *site, owner=area, group=f'"{s.TAG_MACHINE}"'),
            alias="$tag_machine")], w=6, h=5, unit="kwatt", description="Mean power of the last minute per area."),
        _panel(lay, "stat", "Energy today", [_target(
            q(f'last("{s.F_VALUE}")', "day_kwh", *site, owner=area, group=f'"{s.TAG_MACHINE}"'),
            alias="$tag_machine")], w=6, h=5, unit="kwatth",
            description="Running total of the day (shifts and days in the agent's local time)."),
        _panel(lay, "stat", "Peak 15-minute demand (billing month)", [_target(
            q(f'max("{s.F_VALUE}")', "demand_peak_kw", *site, owner=area, group=f'"{s.TAG_MACHINE}"'),
            alias="$tag_machine")], w=6, h=5, unit="kwatt",
            description="Highest 15-minute mean power of the month so far: what a demand charge is billed on."),
        _panel(lay, "stat", "Idle energy in range", [_target(
            q(f'sum("{s.F_VALUE}")', "idle_kwh", *site, owner=area, group=f'"{s.TAG_MACHINE}"'),
            alias="$tag_machine")], w=6, h=5, unit="kwatth",
            description="Energy drawn while machines were running but not producing."),
        _panel(lay, "timeseries", "15-minute demand per area", [
            _target(q(f'max("{s.F_VALUE}")', "demand_kw", *site, owner=area,
                      group=f'time(15m), "{s.TAG_MACHINE}"'), "A", alias="$tag_machine demand"),
            _target(q(f'max("{s.F_VALUE}")', "demand_peak_kw", *site, owner=area,
                      group=f'time(15m), "{s.TAG_MACHINE}"'), "B", alias="$tag_machine month peak"),
        ], w=12, h=9, unit="kwatt", min_interval="15m", custom={"drawStyle": "bars", "fillOpacity": 60}),
        _panel(lay, "timeseries", "Power by line and machine", [_target(
            q(f'mean("{s.F_VALUE}")', "power_kw", *o_sel, group=f'time($__interval), "{s.TAG_MACHINE}"'),
            alias="$tag_machine")], w=12, h=9, unit="kwatt", min_interval="1m"),
        _panel(lay, "timeseries", "Energy per interval", [_target(
            q(f'sum("{s.F_VALUE}")', "energy_kwh", *o_sel, group=f'time($__interval), "{s.TAG_MACHINE}"'),
            alias="$tag_machine")], w=12, h=9, unit="kwatth", min_interval="1m",
            custom={"drawStyle": "bars", "stacking": {"mode": "normal"}, "fillOpacity": 70}),
        _panel(lay, "timeseries", "Power against baseline (same load)", [
            _target(q(f'mean("{s.F_VALUE}")', "power_kw", *m_sel, group=f'time($__interval), "{s.TAG_MACHINE}"'),
                    "A", alias="$tag_machine power"),
            _target(q(f'mean("{s.F_VALUE}")', "baseline_kw", *m_sel,
                      group=f'time($__interval), "{s.TAG_MACHINE}"'), "B", alias="$tag_machine baseline"),
        ], w=12, h=9, unit="kwatt", min_interval="1m",
            description="What the machine drew before for the same load and output; energy_excess events mark "
                        "where it drew more for long."),
        _panel(lay, "timeseries", "Energy per good part", [_target(
            q(f'mean("{s.F_VALUE}")', "energy_per_part_kwh", *m_sel,
              group=f'time($__interval), "{s.TAG_MACHINE}"'), alias="$tag_machine")],
            w=12, h=9, unit="kwatth", min_interval="1m"),
        _panel(lay, "bargauge", "Idle energy by machine (range)", [_target(
            q(f'sum("{s.F_VALUE}")', "idle_kwh", *m_sel, group=f'"{s.TAG_MACHINE}"'), alias="$tag_machine")],
            w=12, h=9, unit="kwatth",
            options={"orientation": "horizontal", "displayMode": "gradient",
                     "reduceOptions": {"calcs": ["lastNotNull"]}}),
        _panel(lay, "table", "Shift totals", [_target(
            q(f'max("{s.F_VALUE}") AS "kWh"', "shift_kwh", *o_sel, group=f'time(8h, 6h), "{s.TAG_MACHINE}"'),
            fmt="table")], w=12, h=9, unit="kwatth", description="Shifts start 06:00, 14:00, 22:00 UTC (the agent's "
            "default shift_starts_h); the total is the running shift total's last value."),
        _panel(lay, "table", "Day totals", [_target(
            q(f'max("{s.F_VALUE}") AS "kWh"', "day_kwh", *o_sel, group=f'time(1d), "{s.TAG_MACHINE}"'),
            fmt="table")], w=12, h=9, unit="kwatth"),
    ]
    variables = [
        _query_var(s.TAG_SITE, f'SHOW TAG VALUES FROM "{s.M_SAMPLES}" WITH KEY = "{s.TAG_SITE}" '
                               f'WHERE {_energy_re("power_kw")}'),
        _query_var("owner", f'SHOW TAG VALUES FROM "{s.M_SAMPLES}" WITH KEY = "{s.TAG_MACHINE}" '
                            f'WHERE {_energy_re("power_kw")} AND {_re(s.TAG_SITE)}', label="line / machine / area"),
        _query_var(s.TAG_MACHINE, f'SHOW TAG VALUES FROM "{s.M_SAMPLES}" WITH KEY = "{s.TAG_MACHINE}" '
                                  f'WHERE {_energy_re("baseline_kw")} AND {_re(s.TAG_SITE)}'),
    ]
    ann = _events_annotation(s.TAG_SITE, s.TAG_MACHINE, name="Energy episodes")
    ann["query"] = ann["query"].replace("$timeFilter", f'"{s.TAG_KIND}" =~ /^energy_/ AND $timeFilter')
    ann["iconColor"] = "orange"
    return _dashboard("plantwire-energy", "plantwire: energy",
                      "Power, energy, 15-minute demand, idle energy and the per-machine baseline from the edge's "
                      "energy agent.", panels, variables, [ann], time_from="now-24h", refresh="1m")


# The leak-test agent's derived signals (edge/agents/leaktest.py): "<station>.<name>" in "samples", one sample per
# test cycle at its end; drift episodes are "leak_drift" events. Counts and sums of per-cycle results read the
# raw retention policy, as the energy panels do (a rollup's mean cannot be counted back into cycles).


def _leak_re(name: str) -> str:
    return f'"{s.TAG_SIGNAL}" =~ /.*\\.{name}$/'


def leak_test() -> dict[str, Any]:
    lay = _Layout()
    sel = (s.TAG_SITE, s.TAG_MACHINE)

    def q(agg: str, name: str, group: str = "", valid_only: bool = False) -> str:
        conds = [_leak_re(name), *(_re(t) for t in sel), "$timeFilter"]
        g = f" GROUP BY {group}" if group else ""
        if "time(" in group:
            g += " fill(none)"
        return f'SELECT {agg} FROM "{s.M_SAMPLES}" WHERE {" AND ".join(conds)}{g}'

    per_station = f'"{s.TAG_MACHINE}"'
    over_time = f'time($__interval), "{s.TAG_MACHINE}"'
    v = f'"{s.F_VALUE}"'
    panels = [
        _panel(lay, "stat", "Parts tested in range", [_target(
            q(f"count({v})", "leak_pass", per_station), alias="$tag_machine")], w=8, h=5,
            description="Cycles judged (pass or fail) per station; cycles with a doubtful measurement are "
                        "reported leak_valid 0 and not judged."),
        _panel(lay, "stat", "First-pass yield in range", [_target(
            q(f"mean({v})", "leak_pass", per_station), alias="$tag_machine")], w=8, h=5, unit="percentunit",
            thresholds=[{"color": "red", "value": None}, {"color": "orange", "value": 0.95},
                        {"color": "green", "value": 0.99}], min_max=(0.0, 1.0)),
        _panel(lay, "stat", "Failed parts in range", [_target(
            q(f"count({v}) - sum({v})", "leak_pass", per_station), alias="$tag_machine")], w=8, h=5,
            thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}]),
        _panel(lay, "timeseries", "Leak rate per station (temperature compensated)", [
            _target(q(f"mean({v})", "leak_rate_pa_s", over_time), "A", alias="$tag_machine"),
            _target(q(f"max({v})", "leak_rate_pa_s", over_time), "B", alias="$tag_machine max"),
        ], w=24, h=9, unit="Pa/s", min_interval="1m",
            description="The decay of each cycle corrected for the part's and chamber's temperature; leak_drift "
                        "episodes (annotations) mark a station whose passing parts creep up: a fixture or seal leak."),
        _panel(lay, "timeseries", "Drift: leak rate over the station's baseline", [_target(
            q(f"mean({v})", "leak_excess_pa_s", over_time), alias="$tag_machine")], w=12, h=9, unit="Pa/s",
            min_interval="1m"),
        _panel(lay, "timeseries", "Pass / fail per interval", [
            _target(q(f"sum({v})", "leak_pass", over_time), "A", alias="$tag_machine passed"),
            _target(q(f"count({v}) - sum({v})", "leak_pass", over_time), "B", alias="$tag_machine failed"),
        ], w=12, h=9, min_interval="10m", custom={"drawStyle": "bars", "stacking": {"mode": "normal"},
                                                  "fillOpacity": 70}),
        _panel(lay, "timeseries", "Phase timings", [
            _target(q(f"mean({v})", phase, over_time), ref, alias=f"$tag_machine {phase[:-2]}")
            for ref, phase in zip("ABCD", ("fill_s", "stabilise_s", "measure_s", "vent_s"), strict=True)
        ], w=12, h=9, unit="s", min_interval="1m",
            description="Seconds per phase of each cycle, as segmented from the pressure trace: a longer fill "
                        "or vent points at the supply or a valve."),
        _panel(lay, "timeseries", "Temperature compensation", [_target(
            q(f"mean({v})", "thermal_pa_s", over_time), alias="$tag_machine")], w=12, h=9, unit="Pa/s",
            min_interval="1m", description="What the part's temperature relative to the chamber added to the "
                                          "measured decay (subtracted from the leak rate)."),
        _panel(lay, "table", "Drift episodes", [_target(
            f'SELECT "{s.F_STATE}", "{s.F_PEAK}", "{s.F_END_MS}", "{s.TAG_MACHINE}" FROM "{s.M_EVENTS}" WHERE '
            f'"{s.TAG_KIND}" = \'leak_drift\' AND {_where(*sel)} ORDER BY time DESC LIMIT 200', fmt="table")],
            w=24, h=7, description="peak: the episode's highest excess as a fraction of the pass/fail limit."),
    ]
    variables = [
        _query_var(s.TAG_SITE, f'SHOW TAG VALUES FROM "{s.M_SAMPLES}" WITH KEY = "{s.TAG_SITE}" '
                               f'WHERE {_leak_re("leak_rate_pa_s")}'),
        _query_var(s.TAG_MACHINE, f'SHOW TAG VALUES FROM "{s.M_SAMPLES}" WITH KEY = "{s.TAG_MACHINE}" '
                                  f'WHERE {_leak_re("leak_rate_pa_s")} AND {_re(s.TAG_SITE)}', label="station"),
    ]
    ann = _events_annotation(*sel, name="Leak drift")
    ann["query"] = ann["query"].replace("$timeFilter", f'"{s.TAG_KIND}" = \'leak_drift\' AND $timeFilter')
    ann["iconColor"] = "purple"
    return _dashboard("plantwire-leak-test", "plantwire: leak test",
                      "Results per leak-test station (parts tested, yield, failures), the temperature-compensated "
                      "leak rate with drift episodes, and phase timings, from the edge's leak-test agent.",
                      panels, variables, [ann], time_from="now-24h", refresh="1m")


def build_all() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON (as a dict) for every dashboard that ships."""
    return {
        "plant-overview.json": plant_overview(),
        "signal-explorer.json": signal_explorer(),
        "machine-health.json": machine_health(),
        "pipeline-health.json": pipeline_health(),
        "alarm-performance.json": alarm_performance(),
        "active-alarms.json": active_alarms(),

        "energy.json": energy(),
        "leak-test.json": leak_test(),
    }


def render(dashboard: dict[str, Any]) -> str:
    return json.dumps(dashboard, indent=2, sort_keys=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cloud.grafana.build", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=DASHBOARD_DIR)
    p.add_argument("--check", action="store_true", help="exit 1 if a file differs from what would be written")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    stale = []
    for name, dash in build_all().items():
        path = args.out / name
        text = render(dash)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)}; run python -m cloud.grafana.build", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
