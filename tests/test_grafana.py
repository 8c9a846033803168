"""The shipped Grafana dashboards: well-formed for Grafana, and every query returns rows on real InfluxDB 1.6.

The database holds 8 hours of simulated data for every measurement (cloud.grafana.simdata, samples
built by lineproto exactly as the ingestor writes them), with the retention layout of
cloud.retention and its rollups computed by backfill. Every panel target, annotation and template
variable query is taken from the JSON, its Grafana macros and variables filled in as Grafana
would, and run for three time ranges (so ``$rp`` resolves to raw, 1-minute and 1-hour data in
turn) and three selections (the first value of every variable, two values where there are two, and "All").
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloud import retention
from cloud.grafana import build
from cloud.grafana.simdata import SimPlant, simulated_lines, write_v1
from plantwire.services import InfluxDB1

GRAFANA = Path(build.__file__).parent
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
HOURS = 8
# (span, $__interval, the resolution $rp must pick for it)
RANGES = [(3 * 3600, "10s", "raw"), (HOURS * 3600, "30s", "rollup_1m"), (10 * 86400, "20m", "rollup_1h")]


def _load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def _datasource_uid() -> str:
    prov = yaml.safe_load((GRAFANA / "provisioning/datasources/plantwire.yaml").read_text())
    (ds,) = prov["datasources"]
    assert ds["type"] == "influxdb"
    return str(ds["uid"])


# -- structure ------------------------------------------------------------------------------------------


def test_committed_json_is_what_the_builder_writes() -> None:
    built = build.build_all()
    assert sorted(built) == [p.name for p in DASHBOARDS]
    for path in DASHBOARDS:
        assert path.read_text() == build.render(built[path.name]), f"{path.name}: run python -m cloud.grafana.build"


def test_provisioning_points_at_the_dashboards() -> None:
    prov = yaml.safe_load((GRAFANA / "provisioning/dashboards/plantwire.yaml").read_text())
    (provider,) = prov["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
    ds = yaml.safe_load((GRAFANA / "provisioning/datasources/plantwire.yaml").read_text())["datasources"][0]
    assert ds["jsonData"]["dbName"] and ds["url"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_has_what_grafana_needs(path: Path) -> None:
    dash = _load(path)
    assert dash["schemaVersion"] >= 36 and dash["uid"] and dash["title"]
    panels = dash["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids {ids}"
    boxes = []
    for p in panels:
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and 0 <= g["x"] and g["x"] + g["w"] <= 24, (p["title"], g)
        for q in boxes:
            overlap = g["x"] < q["x"] + q["w"] and q["x"] < g["x"] + g["w"] and g["y"] < q["y"] + q["h"] and (
                q["y"] < g["y"] + g["h"])
            assert not overlap, f"{p['title']} overlaps another panel: {g} {q}"
        boxes.append(g)
    uid = _datasource_uid()
    refs = [p["datasource"] for p in panels] + [t["datasource"] for p in panels for t in p["targets"]]
    refs += [v["datasource"] for v in dash["templating"]["list"] if v["type"] == "query"]
    refs += [a["datasource"] for a in dash["annotations"]["list"] if not a.get("builtIn")]
    assert refs and all(r == {"type": "influxdb", "uid": uid} for r in refs), refs
    defined = {v["name"] for v in dash["templating"]["list"]}
    for q in _queries(dash):
        used = set(re.findall(r"\$(\w+)", q)) - {"timeFilter", "__interval", "__interval_ms", "__from", "__to"}
        assert used <= defined, f"undefined variables {used - defined} in {q}"
    for p in panels:
        if p.get("repeat"):
            assert p["repeat"] in defined


def test_uids_are_unique_across_dashboards() -> None:
    uids = [_load(p)["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids))


def _queries(dash: dict[str, Any]) -> Iterator[str]:
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            yield v["query"]
    for a in dash["annotations"]["list"]:
        if not a.get("builtIn"):
            yield a["query"]
    for p in dash["panels"]:
        for t in p["targets"]:
            yield t["query"]


# -- every query, executed ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plant_db(influxdb: InfluxDB1) -> Iterator[tuple[str, int]]:
    """A database with the retention layout, 8 h of simulated data ending now, and its rollups."""
    db = f"g_{uuid.uuid4().hex[:12]}"
    retention.ensure(influxdb.url, db)
    now_ns = time.time_ns()
    start = now_ns - HOURS * 3_600_000_000_000
    write_v1(influxdb.url, db, simulated_lines(SimPlant(energy=True), start, HOURS * 3600))
    retention.backfill(influxdb.url, db, start, now_ns)
    try:
        yield db, now_ns
    finally:
        influxdb.query(f'DROP DATABASE "{db}"')


def _regex_escape(value: str) -> str:
    """What Grafana's InfluxDB data source does to values inside /^...$/ (kbn.regexEscape)."""
    return re.sub(r"([\\^$*+?.()|{}\[\]/])", r"\\\1", value)


def _fill(q: str, values: dict[str, str], frm_ms: int, to_ms: int, interval: str) -> str:
    unit = {"s": 1000, "m": 60_000, "h": 3_600_000}[interval[-1]]
    macros = {
        "$timeFilter": f"time >= {frm_ms}ms and time <= {to_ms}ms",
        "$__interval_ms": str(int(interval[:-1]) * unit),
        "$__interval": interval,
        "$__from": str(frm_ms),
        "$__to": str(to_ms),
    }
    for k in sorted(macros, key=len, reverse=True):
        q = q.replace(k, macros[k])
    for name in sorted(values, key=len, reverse=True):
        q = q.replace(f"${name}", values[name])
    assert "$" not in q.replace("$/", ""), f"unfilled variable in {q}"
    return q


def _series_values(server: InfluxDB1, q: str, db: str) -> list[tuple[dict[str, Any], list[str], list[Any]]]:
    out = []
    for result in server.query(q, db)["results"]:
        for series in result.get("series", []) or []:
            for row in series.get("values", []) or []:
                out.append((series.get("tags", {}), series["columns"], row))
    return out


def _resolve_variables(server: InfluxDB1, db: str, dash: dict[str, Any], frm: int, to: int, interval: str,
                       selection: str) -> dict[str, str]:
    """Run the variable queries in order, as Grafana does; each must offer at least one value."""
    values: dict[str, str] = {}
    for v in dash["templating"]["list"]:
        rows = _series_values(server, _fill(v["query"], values, frm, to, interval), db)
        # Grafana's metricFindQuery takes the second column (tag value, or the field after time).
        options = list(dict.fromkeys(str(r[2][1]) for r in rows))
        assert options, f"{dash['uid']}: variable ${v['name']} offers no values"
        if v["multi"] and selection == "all":
            # "All" is the variable's allValue when it has one, else every value as an alternation
            values[v["name"]] = v.get("allValue") or "(" + "|".join(_regex_escape(o) for o in options) + ")"
        elif v["multi"] and selection == "two":
            values[v["name"]] = "(" + "|".join(_regex_escape(o) for o in options[:2]) + ")"
        elif v["multi"]:
            values[v["name"]] = _regex_escape(options[0])
        else:
            assert len(options) == 1, f"{dash['uid']}: ${v['name']} must resolve to one value, got {options}"
            values[v["name"]] = options[0]
    return values


@pytest.mark.integration
@pytest.mark.parametrize("selection", ["first", "two", "all"])
@pytest.mark.parametrize(("span_s", "interval", "rp"), RANGES, ids=[r[2] for r in RANGES])
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_query_returns_rows(
    influxdb: InfluxDB1, plant_db: tuple[str, int], path: Path, span_s: int, interval: str, rp: str,
    selection: str,
) -> None:
    db, now_ns = plant_db
    to = now_ns // 1_000_000 + 1000
    frm = to - span_s * 1000
    dash = _load(path)
    values = _resolve_variables(influxdb, db, dash, frm, to, interval, selection)
    if "rp" in values:
        assert values["rp"] == rp
    ran = 0
    for p in dash["panels"]:
        for t in p["targets"]:
            q = _fill(t["query"], values, frm, to, interval)
            rows = _series_values(influxdb, q, db)
            assert rows and any(v is not None for _, _, r in rows for v in r[1:]), (
                f"{path.stem} / {p['title']} / {t['refId']} returned no rows: {q}")
            ran += 1
    for a in dash["annotations"]["list"]:
        if a.get("builtIn"):
            continue
        q = _fill(a["query"], values, frm, to, interval)
        rows = _series_values(influxdb, q, db)
        assert rows, f"{path.stem} / annotation {a['name']} returned no rows: {q}"
        cols = rows[0][1]
        wanted = [a["textColumn"], a["timeEndColumn"], *a["tagsColumn"].split(",")]
        assert set(wanted) <= set(cols), (wanted, cols)
        ran += 1
    assert ran >= 3


@pytest.mark.integration
def test_annotations_mark_open_and_closed_episodes(influxdb: InfluxDB1, plant_db: tuple[str, int]) -> None:
    db, now_ns = plant_db
    dash = _load(GRAFANA / "dashboards/signal-explorer.json")
    to = now_ns // 1_000_000 + 1000
    frm = to - 10 * 86400 * 1000
    values = _resolve_variables(influxdb, db, dash, frm, to, "20m", "first")
    (ann,) = [a for a in dash["annotations"]["list"] if not a.get("builtIn")]
    rows = [dict(zip(c, r, strict=True)) for _, c, r in _series_values(influxdb, _fill(ann["query"], values, frm, to,
                                                                                          "20m"), db)]
    closed = [r for r in rows if r["state"] == "closed"]
    opened = [r for r in rows if r["state"] == "open"]
    assert closed and all(r["end_ms"] > r["time"] // 1_000_000 for r in closed)  # regions
    assert opened and all(r["end_ms"] is None and r["signal"] is None for r in opened)  # machine-scope, still open
    assert {r["signal"] for r in closed} == {values["signal"].replace("\\", "")}
