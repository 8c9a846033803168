"""cloud.retention on the real InfluxDB 1.6: idempotent set-up, and the stored CQs roll up correctly.

The fixture server runs with its continuous-query service off (plantwire.services), so the tests
read each CQ back from ``SHOW CONTINUOUS QUERIES`` and run its SELECT ... INTO over a fixed range:
the statement the server would run, on data whose rollup is known.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from cloud import retention
from cloud.grafana.simdata import SimPlant, simulated_lines, write_v1
from cloud.retention import RetentionError, RetentionSettings
from plantwire.services import InfluxDB1

pytestmark = pytest.mark.integration

HOUR_NS = 3_600_000_000_000
START_NS = 1_700_000_000 // 3600 * 3600 * 1_000_000_000  # on an hour boundary, inside 1h rollups' forever


def _rps(server: InfluxDB1, db: str) -> dict[str, tuple[str, bool]]:
    return {r["name"]: (r["duration"], r["default"]) for r in server.rows(f'SHOW RETENTION POLICIES ON "{db}"', db)}


def _cqs(server: InfluxDB1, db: str) -> dict[str, str]:
    doc = server.query("SHOW CONTINUOUS QUERIES")
    out: dict[str, str] = {}
    for series in doc["results"][0].get("series", []):
        if series["name"] == db:
            out.update({name: q for name, q in series.get("values", [])})
    return out


def test_ensure_creates_everything_then_is_idempotent(influxdb: InfluxDB1, influx_db: str) -> None:
    settings = RetentionSettings(raw_days=7, rollup_1m_days=90, rollup_1h_days=0)
    ran = retention.ensure(influxdb.url, influx_db, settings)
    assert ran, "a fresh database needs statements"
    rps = _rps(influxdb, influx_db)
    assert rps[retention.RP_RAW] == ("168h0m0s", True)
    assert rps[retention.RP_1M] == ("2160h0m0s", False)
    assert rps[retention.RP_1H] == ("0s", False)
    assert rps[retention.RP_META] == ("0s", False)
    cqs = _cqs(influxdb, influx_db)
    assert set(cqs) == {f"pw_{m}_{lvl}" for m in retention.ROLLUPS for lvl in ("1m", "1h")}
    assert retention.ensure(influxdb.url, influx_db, settings) == []

    longer = settings.model_copy(update={"raw_days": 14, "late_1m": "20m"})
    ran = retention.ensure(influxdb.url, influx_db, longer)
    assert ran[0].startswith('ALTER RETENTION POLICY "raw"')
    assert {q.split('"')[1] for q in ran if q.startswith("CREATE CONTINUOUS")} == {
        f"pw_{m}_1m" for m in retention.ROLLUPS
    }
    assert _rps(influxdb, influx_db)[retention.RP_RAW] == ("336h0m0s", True)
    assert "FOR 20m" in _cqs(influxdb, influx_db)["pw_samples_1m"]
    assert retention.ensure(influxdb.url, influx_db, longer) == []


def test_alarms_and_audit_policies_alone_then_with_the_layout(influxdb: InfluxDB1, influx_db: str) -> None:
    """An ingestor without the rollup layout still gets the alarms and audit policies (incidents and audit records
    are written there); the full layout keeps them, with their own durations."""
    ran = retention.ensure_policies(influxdb.url, influx_db)
    assert [q.split('"')[1] for q in ran] == [retention.RP_ALARMS, retention.RP_AUDIT]
    rps = _rps(influxdb, influx_db)
    assert rps[retention.RP_ALARMS] == ("8760h0m0s", False) and rps[retention.RP_AUDIT] == ("26280h0m0s", False)
    assert retention.ensure_policies(influxdb.url, influx_db) == []
    ran = retention.ensure(influxdb.url, influx_db, RetentionSettings(alarms_days=30))
    altered = [q for q in ran if q.startswith("ALTER")]
    assert len(altered) == 1 and altered[0].startswith('ALTER RETENTION POLICY "alarms"')
    assert _rps(influxdb, influx_db)[retention.RP_ALARMS] == ("720h0m0s", False)
    assert retention.qualified("incidents") == '"alarms"."incidents"' and retention.qualified("samples") == '"samples"'
    parts = retention.split_by_policy(b"samples,a=1 v=1 1\nincident_transitions,a=1 v=1 1\naudit,a=1 v=1 1\n"
                                      b"incidents,a=1 v=2 2\n")
    assert parts == {None: b"samples,a=1 v=1 1\n", "alarms": b"incident_transitions,a=1 v=1 1\nincidents,a=1 v=2 2\n",
                     "audit": b"audit,a=1 v=1 1\n"}


def test_foreign_continuous_queries_are_left_alone(influxdb: InfluxDB1, influx_db: str) -> None:
    influxdb.query(
        f'CREATE CONTINUOUS QUERY "mine" ON "{influx_db}" '
        'BEGIN SELECT mean("x") INTO "y" FROM "z" GROUP BY time(1h) END'
    )
    retention.ensure(influxdb.url, influx_db)
    assert "mine" in _cqs(influxdb, influx_db)


def test_resolutions_pick_one_rp_per_time_range(influxdb: InfluxDB1, influx_db: str) -> None:
    retention.ensure(influxdb.url, influx_db, RetentionSettings(raw_max_span_h=6, rollup_1m_max_span_h=192))
    for span_h, rp, vmin in ((1, "raw", "value"), (6, "raw", "value"), (7, "rollup_1m", "value_min"),
                             (24 * 30, "rollup_1h", "value_min"), (24 * 365 * 20, "rollup_1h", "value_min")):
        span_ms = int(span_h * 3_600_000)
        where = f'WHERE {span_ms} > "min_span_ms" AND {span_ms} <= "max_span_ms"'
        rows = influxdb.rows(f'SELECT "rp", "vmin" FROM "meta"."resolutions" {where}', influx_db)
        assert [(r["rp"], r["vmin"]) for r in rows] == [(rp, vmin)], span_h


def _run_cq_over(server: InfluxDB1, db: str, cq: str, start_ns: int, end_ns: int) -> int:
    """Run a stored CQ's SELECT ... INTO over [start, end): what the CQ service does on schedule."""
    m = re.search(r"BEGIN (SELECT .*) (GROUP BY .*) END$", cq)
    assert m, cq
    q = f"{m.group(1)} WHERE time >= {start_ns} AND time < {end_ns} {m.group(2)}"
    return sum(int(r["written"]) for r in server.rows(q, db))


def test_stored_continuous_queries_roll_up_exactly(influxdb: InfluxDB1, influx_db: str) -> None:
    retention.ensure(influxdb.url, influx_db, RetentionSettings(raw_days=36500, rollup_1m_days=36500, alarms_days=36500,
                                                                      audit_days=36500))  # 2023 data
    plant = SimPlant(gateways_per_site=1, machines_per_gateway=1, signals_per_machine=2, period_s=7.0)
    write_v1(influxdb.url, influx_db, simulated_lines(plant, START_NS, 2 * 3600))
    cqs = _cqs(influxdb, influx_db)
    end = START_NS + 2 * HOUR_NS
    for name in sorted(cqs, key=lambda n: n.endswith("_1h")):  # minutes before hours, as on schedule
        assert _run_cq_over(influxdb, influx_db, cqs[name], START_NS, end) > 0, name

    sig = "north-gw0.press00.sig01"
    raw = influxdb.rows(f"SELECT \"value\", \"quality\", \"nonfinite\" FROM \"raw\".\"samples\" "
                        f"WHERE \"signal\" = '{sig}'", influx_db)
    ts = np.array([r["time"] for r in raw], dtype=np.int64)
    v = np.array([r["value"] for r in raw], dtype=np.float64)  # null (non-finite sample) -> nan
    q = np.array([r["quality"] or 0 for r in raw], dtype=np.int64)  # good points have no quality field
    assert (q == 0).any() and all((r["quality"] is None) == (qi == 0) for r, qi in zip(raw, q, strict=True))
    assert np.isnan(v).sum() == 1, "the simulated non-finite sample is stored without a value"
    m1 = influxdb.rows(f"SELECT * FROM \"rollup_1m\".\"samples\" WHERE \"signal\" = '{sig}'", influx_db)
    assert len(m1) == 120
    for row in m1[:5] + m1[-5:]:
        sel = v[(ts >= row["time"]) & (ts < row["time"] + 60_000_000_000) & ~np.isnan(v)]
        assert row["value_count"] == sel.size
        assert row["value_min"] == sel.min() and row["value_max"] == sel.max()
        assert row["value"] == pytest.approx(sel.mean(), rel=1e-12)
    # The worst quality per minute; a minute of good samples only has none (absent means good).
    worst = [int(q[(ts >= row["time"]) & (ts < row["time"] + 60_000_000_000)].max()) for row in m1]
    assert [row["quality_max"] for row in m1] == [w or None for w in worst]
    assert 0 < worst.count(0) < len(worst)
    h1 = influxdb.rows(f"SELECT * FROM \"rollup_1h\".\"samples\" WHERE \"signal\" = '{sig}'", influx_db)
    assert len(h1) == 2
    for row in h1:
        sel = v[(ts >= row["time"]) & (ts < row["time"] + HOUR_NS) & ~np.isnan(v)]
        assert (row["value_count"], row["value_min"], row["value_max"]) == (sel.size, sel.min(), sel.max())
        assert row["value"] == pytest.approx(sel.mean(), rel=1e-12)  # weighted by count, not a mean of means
        assert row["quality_max"] == q[(ts >= row["time"]) & (ts < row["time"] + HOUR_NS)].max() > 0
        assert {"site", "gateway", "machine", "signal"} <= row.keys()

    for meas, field in (("health", "rul_low"), ("events", "episodes"), ("pipeline", "samples")):
        for rp in ("rollup_1m", "rollup_1h"):
            assert influxdb.rows(f'SELECT "{field}" FROM "{rp}"."{meas}"', influx_db), (rp, meas)
    ep = influxdb.rows('SELECT sum("episodes") FROM "rollup_1h"."events"', influx_db)
    assert ep[0]["sum"] == len(influxdb.rows('SELECT "peak" FROM "raw"."events"', influx_db))
    piped = influxdb.rows('SELECT sum("samples") FROM "rollup_1h"."pipeline"', influx_db)[0]["sum"]
    assert piped == influxdb.rows('SELECT sum("samples") FROM "raw"."pipeline"', influx_db)[0]["sum"]


def test_backfill_equals_the_continuous_queries(influxdb: InfluxDB1, influx_db: str) -> None:
    retention.ensure(influxdb.url, influx_db, RetentionSettings(raw_days=36500, rollup_1m_days=36500, alarms_days=36500,
                                                                      audit_days=36500))  # 2023 data
    plant = SimPlant(gateways_per_site=1, machines_per_gateway=1, signals_per_machine=1, period_s=5.0)
    write_v1(influxdb.url, influx_db, simulated_lines(plant, START_NS + HOUR_NS // 2, 3600))
    written = retention.backfill(influxdb.url, influx_db, START_NS + HOUR_NS // 2, START_NS + HOUR_NS * 3 // 2)
    assert written["samples_1m"] == 60 and written["samples_1h"] == 2
    again = retention.backfill(influxdb.url, influx_db, START_NS, START_NS + 2 * HOUR_NS)
    assert again == written  # idempotent: same points, overwritten
    assert len(influxdb.rows('SELECT * FROM "rollup_1m"."samples"', influx_db)) == 60


def test_errors_name_the_place_and_the_cli_exits_nonzero(
    influxdb: InfluxDB1, influx_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(RetentionError, match=r"/query at http://127\.0\.0\.1:1"):
        retention.ensure("http://127.0.0.1:1", influx_db, timeout_s=2)
    with pytest.raises(ValueError, match="empty range"):
        retention.backfill(influxdb.url, influx_db, START_NS, START_NS)
    assert retention.main(["ensure", "--url", "http://127.0.0.1:1", "--database", influx_db]) == 1
    argv = ["backfill", "--url", influxdb.url, "--database", influx_db, "--start", "yesterday", "--end", "now"]
    assert retention.main(argv) == 1
    assert "--start: 'yesterday' is not an ISO 8601 time" in capsys.readouterr().err
    assert retention.main(["ensure", "--url", influxdb.url, "--database", influx_db, "--raw-days", "3"]) == 0
    assert _rps(influxdb, influx_db)[retention.RP_RAW] == ("72h0m0s", True)


class _InfluxWithCQs(InfluxDB1):
    """The fixture server with its continuous-query service on, checking every second."""

    def _write_config(self) -> None:
        super()._write_config()
        text = self.config_path.read_text()
        on = '[continuous_queries]\n  enabled = true\n  run-interval = "1s"\n  log-enabled = false'
        self.config_path.write_text(text.replace("[continuous_queries]\n  enabled = false\n  log-enabled = false", on))


def test_the_cq_service_fills_rollups_on_schedule(tmp_path_factory: pytest.TempPathFactory) -> None:
    """InfluxDB's own scheduler runs the stored CQs (a new CQ runs at its first check, ~2 s here)."""
    import time

    with _InfluxWithCQs(tmp_path_factory.mktemp("influx_cq")) as server:
        assert "enabled = true" in server.config_path.read_text()
        retention.ensure(server.url, "plant")
        now = time.time_ns()
        start = now - 5 * 60_000_000_000
        plant = SimPlant(gateways_per_site=1, machines_per_gateway=1, signals_per_machine=1, period_s=1.0)
        write_v1(server.url, "plant", simulated_lines(plant, start, 5 * 60))
        deadline = time.monotonic() + 90
        rows: list[dict] = []
        while time.monotonic() < deadline and len(rows) < 4:
            time.sleep(2)
            rows = server.rows('SELECT * FROM "rollup_1m"."samples"', "plant")
        assert len(rows) >= 4, "the CQ service wrote no 1-minute rollups within 90 s"
        full = [r for r in rows if r["time"] >= start and r["time"] + 60_000_000_000 <= now]
        assert full and all(r["value_count"] in (59, 60, 61) for r in full), [r["value_count"] for r in full]
