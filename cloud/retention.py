"""Retention policies and rollups on InfluxDB 1.x: raw data for a while, 1-minute and 1-hour rollups for long.

Layout in the database (names in this module, measurement and field names from :mod:`cloud.schema`):

- ``raw`` (the database's default RP, so the ingestor writes there without naming it): every point
  as written, kept ``raw_days``.
- ``rollup_1m``, kept ``rollup_1m_days``, and ``rollup_1h``, kept ``rollup_1h_days`` (0 = forever):
  the same measurement names and tags, one point per series per minute / hour. Continuous queries
  fill them: 1 m from ``raw``, 1 h from ``rollup_1m`` (60 times fewer points to read every hour).
  For ``samples`` the fields are ``value`` (the mean, so a panel's ``mean("value")`` reads any
  RP), ``value_min``, ``value_max``, ``value_count``, ``value_sum`` (for the exact mean of means
  weighted by count one level up) and ``quality_max`` (the worst quality in the bucket; absent when every
  sample in it was good, since good points carry no ``quality``: cloud/sinks/lineproto.py). ``health``
  and ``pipeline`` keep their field names with the aggregate that makes sense per field (mean
  health and RUL, widest RUL band, summed counters, worst gauges); ``events`` become ``episodes``
  (count) and ``peak`` (max) per series.
- ``alarms``, kept ``alarms_days`` (365), and ``audit``, kept ``audit_days`` (1095): the alarm layer's
  ``incidents`` and ``incident_transitions`` (issue 16), and the ``audit`` trail of operator and agent
  actions. A year of alarm history is what an alarm-management review (EEMUA 191, ISA-18.2's monitoring
  and assessment) looks back over; an audit trail is kept longer, as a record of who did what. Not rolled
  up (one point per transition or action: small). The ingestor writes them there (:data:`ALARM_POLICIES`
  names which measurement goes where) and creates both policies even without the rollup layout
  (:func:`ensure_policies`); every reader (cloud/alarms, the Grafana alarm dashboards) reads them there.
- ``meta`` (infinite): the ``resolutions`` measurement, three points that tell Grafana which RP
  to read for a time range (``raw`` up to ``raw_max_span``, then ``rollup_1m`` up to
  ``rollup_1m_max_span``, then ``rollup_1h``) and which fields hold min and max there. The
  dashboards' ``$rp``, ``$vmin`` and ``$vmax`` variables query it on every time-range change.

Late data: a continuous query recomputes only its ``FOR`` window (``late_1m`` / ``late_1h``). A
gateway that replays its write-ahead log after an outage delivers data older than that, so
whoever sees the replay finish calls :func:`backfill` for the range (the ingestor when a gap
closes, or an operator: ``python -m cloud.retention backfill``). Rollup points are identified by
series and bucket time, so recomputing a range is idempotent.

:func:`ensure` is idempotent: it creates what is missing, alters retention policies whose
duration or default flag differ, and replaces continuous queries whose text differs; run it on
every ingestor start. Command line::

    python -m cloud.retention ensure --url http://127.0.0.1:8086 --database plantwire --raw-days 30
    python -m cloud.retention backfill --url ... --database plantwire --start 2026-01-01T00:00:00Z --end ...
    python -m cloud.retention print --database plantwire     # the InfluxQL, for review or for `influx`

InfluxDB 2.x/3.x have no continuous queries; cloud/README.md gives the equivalent tasks and buckets.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cloud import schema

__all__ = [
    "ALARM_POLICIES",
    "CQ_PREFIX",
    "RESOLUTIONS",
    "ROLLUPS",
    "RP_1H",
    "RP_1M",
    "RP_ALARMS",
    "RP_AUDIT",
    "RP_META",
    "RP_RAW",
    "RetentionError",
    "RetentionSettings",
    "Rollup",
    "backfill",
    "continuous_queries",
    "ensure",
    "ensure_policies",
    "main",
    "qualified",
    "resolution_points",
    "retention_policies",
    "split_by_policy",
]

RP_RAW = "raw"
RP_1M = "rollup_1m"
RP_1H = "rollup_1h"
RP_META = "meta"
RP_ALARMS = "alarms"
RP_AUDIT = "audit"
#: Measurement -> the retention policy it is written to and read from (every other measurement: the default RP).
ALARM_POLICIES: dict[str, str] = {
    schema.M_INCIDENTS: RP_ALARMS,
    schema.M_INCIDENT_TRANSITIONS: RP_ALARMS,
    schema.M_AUDIT: RP_AUDIT,
}
RESOLUTIONS = "resolutions"  # measurement in RP_META read by Grafana's $rp/$vmin/$vmax variables
CQ_PREFIX = "pw_"  # continuous queries with this prefix are ours; others are left alone

_MAX_SPAN_MS = 2**63 - 1


class RetentionError(RuntimeError):
    """InfluxDB refused a statement or could not be reached; the message names the statement."""


class RetentionSettings(BaseModel):
    """How long each resolution is kept and which resolution Grafana reads for a time range."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    raw_days: int = Field(default=30, ge=1, description="raw points (every sample, event, estimate) kept this long")
    rollup_1m_days: int = Field(default=400, ge=1, description="1-minute rollups kept this long")
    rollup_1h_days: int = Field(default=0, ge=0, description="1-hour rollups kept this long; 0 = forever")
    alarms_days: int = Field(default=365, ge=1, description="incidents and their transitions kept this long")
    audit_days: int = Field(default=1095, ge=1, description="the audit trail (who did what, when, why) kept this long")
    late_1m: str = Field(default="10m", pattern=r"^\d+[smh]$", description="1 m CQ recomputes this window")
    late_1h: str = Field(default="3h", pattern=r"^\d+[mhd]$", description="1 h CQ recomputes this window")
    raw_max_span_h: float = Field(default=6.0, gt=0, description="Grafana reads raw for ranges up to this")
    rollup_1m_max_span_h: float = Field(default=24.0 * 8, gt=0, description="and 1 m rollups up to this")
    make_raw_default: bool = Field(default=True, description="make `raw` the database's default RP")


@dataclass(frozen=True, slots=True)
class Rollup:
    """One rolled-up field: its expression over ``raw`` (1 m), over ``rollup_1m`` (1 h), its name."""

    from_raw: str
    from_1m: str
    alias: str


def _same(agg: str, field: str) -> Rollup:
    return Rollup(f'{agg}("{field}")', f'{agg}("{field}")', field)


def _summed(field: str) -> Rollup:
    return Rollup(f'sum("{field}")', f'sum("{field}")', field)


S = schema
ROLLUPS: dict[str, tuple[Rollup, ...]] = {
    S.M_SAMPLES: (
        Rollup(f'mean("{S.F_VALUE}")', 'sum("value_sum") / sum("value_count")', S.F_VALUE),
        Rollup(f'min("{S.F_VALUE}")', 'min("value_min")', "value_min"),
        Rollup(f'max("{S.F_VALUE}")', 'max("value_max")', "value_max"),
        Rollup(f'count("{S.F_VALUE}")', 'sum("value_count")', "value_count"),
        Rollup(f'sum("{S.F_VALUE}")', 'sum("value_sum")', "value_sum"),
        Rollup(f'max("{S.F_QUALITY}")', 'max("quality_max")', "quality_max"),
    ),
    S.M_EVENTS: (
        Rollup(f'count("{S.F_PEAK}")', 'sum("episodes")', "episodes"),
        _same("max", S.F_PEAK),
    ),
    S.M_HEALTH: (
        _same("mean", S.F_HEALTH),
        _same("mean", S.F_RUL),
        _same("min", S.F_RUL_LOW),
        _same("max", S.F_RUL_HIGH),
    ),
    S.M_PIPELINE: (
        *(_summed(f) for f in (S.F_SAMPLES, S.F_BATCHES, S.F_BYTES, S.F_DUPLICATES, S.F_DEAD_LETTERS, S.F_DROPPED)),
        _same("mean", S.F_SAMPLES_PER_S),
        *(_same("max", f) for f in (S.F_LAG_S, S.F_GAPS, S.F_GAP_BATCHES, S.F_GAP_AGE_S)),
        *(_same("max", f) for f in (S.F_WAL_BYTES, S.F_WAL_RECORDS, S.F_WAL_OLDEST_AGE_S)),
        _same("min", S.F_ONLINE),
    ),
}
del S


def _ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _duration(days: int) -> str:
    return "INF" if days == 0 else f"{days * 24}h"


def retention_policies(settings: RetentionSettings) -> list[tuple[str, str, bool]]:
    """(name, InfluxQL duration, default) of every retention policy the layout needs."""
    return [
        (RP_RAW, _duration(settings.raw_days), settings.make_raw_default),
        (RP_1M, _duration(settings.rollup_1m_days), False),
        (RP_1H, _duration(settings.rollup_1h_days), False),
        (RP_META, "INF", False),
        *alarm_policies(settings),
    ]


def alarm_policies(settings: RetentionSettings) -> list[tuple[str, str, bool]]:
    """(name, InfluxQL duration, default) of the alarm layer's and the audit trail's retention policies."""
    return [(RP_ALARMS, _duration(settings.alarms_days), False), (RP_AUDIT, _duration(settings.audit_days), False)]


def qualified(measurement: str) -> str:
    """The measurement as an InfluxQL ``FROM`` names it: ``"alarms"."incidents"`` for the alarm layer's and the
    audit trail's (:data:`ALARM_POLICIES`), ``"samples"`` (the default policy) for the others."""
    rp = ALARM_POLICIES.get(measurement)
    return f"{_ident(rp)}.{_ident(measurement)}" if rp else _ident(measurement)


def _select_into(database: str, measurement: str, level: str, where: str = "") -> str:
    """The rollup SELECT ... INTO for one measurement at ``level`` ('1m' or '1h'), optionally with a WHERE."""
    fields = ROLLUPS[measurement]
    if level == "1m":
        exprs, src, dst, every = [(r.from_raw, r.alias) for r in fields], RP_RAW, RP_1M, "1m"
    else:
        exprs, src, dst, every = [(r.from_1m, r.alias) for r in fields], RP_1M, RP_1H, "1h"
    db, m = _ident(database), _ident(measurement)
    select = ", ".join(f"{e} AS {_ident(a)}" for e, a in exprs)
    return (
        f"SELECT {select} INTO {db}.{_ident(dst)}.{m} FROM {db}.{_ident(src)}.{m}"
        f"{' WHERE ' + where if where else ''} GROUP BY time({every}), *"
    )


def continuous_queries(database: str, settings: RetentionSettings) -> dict[str, str]:
    """CQ name -> ``CREATE CONTINUOUS QUERY`` statement, for every measurement at both levels."""
    out: dict[str, str] = {}
    for measurement in ROLLUPS:
        for level, late in (("1m", settings.late_1m), ("1h", settings.late_1h)):
            name = f"{CQ_PREFIX}{measurement}_{level}"
            out[name] = (
                f"CREATE CONTINUOUS QUERY {_ident(name)} ON {_ident(database)} RESAMPLE EVERY {level} FOR {late} "
                f"BEGIN {_select_into(database, measurement, level)} END"
            )
    return out


def resolution_points(settings: RetentionSettings) -> str:
    """Line protocol of the ``resolutions`` points (RP ``meta``, timestamp 0) Grafana's variables read."""
    raw_ms = int(settings.raw_max_span_h * 3_600_000)
    m1_ms = max(int(settings.rollup_1m_max_span_h * 3_600_000), raw_ms)
    rows = [
        (0, RP_RAW, 0, raw_ms, schema.F_VALUE, schema.F_VALUE),
        (1, RP_1M, raw_ms, m1_ms, "value_min", "value_max"),
        (2, RP_1H, m1_ms, _MAX_SPAN_MS, "value_min", "value_max"),
    ]
    return "\n".join(
        f'{RESOLUTIONS},idx={i} rp="{rp}",min_span_ms={lo}i,max_span_ms={hi}i,vmin="{vmin}",vmax="{vmax}" 0'
        for i, rp, lo, hi, vmin, vmax in rows
    )


# -- talking to InfluxDB 1.x -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Client:
    url: str
    username: str | None
    password: str | None
    timeout_s: float

    def _request(self, path: str, params: dict[str, str], body: bytes | None) -> bytes:
        if self.username:
            params = {**params, "u": self.username, "p": self.password or ""}
        data = body if body is not None else urllib.parse.urlencode(params).encode()
        url = f"{self.url.rstrip('/')}{path}" + (f"?{urllib.parse.urlencode(params)}" if body is not None else "")
        req = urllib.request.Request(url, data=data, method="POST")
        if body is None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return bytes(resp.read())
        except urllib.error.HTTPError as exc:
            raise RetentionError(f"{path} at {self.url}: HTTP {exc.code} {exc.read()[:300]!r}") from exc
        except OSError as exc:
            raise RetentionError(f"{path} at {self.url}: {exc}") from exc

    def query(self, q: str, db: str | None = None) -> list[dict[str, Any]]:
        params = {"q": q} | ({"db": db} if db else {})
        doc = json.loads(self._request("/query", params, None))
        results: list[dict[str, Any]] = doc.get("results", [])
        errors = ([doc["error"]] if "error" in doc else []) + [r["error"] for r in results if "error" in r]
        if errors:
            raise RetentionError(f"InfluxDB refused {q!r}: {'; '.join(errors)}")
        return results

    def rows(self, q: str, db: str | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for result in self.query(q, db):
            for series in result.get("series", []) or []:
                for values in series.get("values", []) or []:
                    out.append({"_series": series.get("name"), **dict(zip(series["columns"], values, strict=True))})
        return out

    def write(self, db: str, rp: str, lines: str) -> None:
        self._request("/write", {"db": db, "rp": rp, "precision": "ns"}, lines.encode())


def _normalise(q: str) -> str:
    return re.sub(r"\s+", " ", q.replace('"', "")).strip().lower()


def _duration_matches(shown: str, wanted: str) -> bool:
    """SHOW RETENTION POLICIES prints ``720h0m0s``; INF is ``0s``."""
    if wanted == "INF":
        return shown in ("0s", "0")
    return shown == f"{wanted}0m0s"


def ensure(
    url: str,
    database: str,
    settings: RetentionSettings | None = None,
    *,
    username: str | None = None,
    password: str | None = None,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create or correct the database, retention policies, continuous queries and resolution points.

    Idempotent; returns the statements it had to run (empty when all was in place), so the caller
    can log what changed. Raises :class:`RetentionError` naming the statement InfluxDB refused.
    """
    settings = settings or RetentionSettings()
    client = _Client(url, username, password, timeout_s)
    ran: list[str] = []
    run = _recording(client, database, ran)
    _ensure_database_and_policies(client, database, retention_policies(settings), alter=True, run=run)
    existing = {
        r["name"]: r["query"]
        for r in client.rows("SHOW CONTINUOUS QUERIES")
        if r.get("_series") == database and str(r.get("name", "")).startswith(CQ_PREFIX)
    }
    wanted = continuous_queries(database, settings)
    for name, statement in wanted.items():
        if name in existing and _normalise(existing[name]) == _normalise(statement):
            continue
        if name in existing:
            run(f"DROP CONTINUOUS QUERY {_ident(name)} ON {_ident(database)}")
        run(statement)
    for name in existing.keys() - wanted.keys():
        run(f"DROP CONTINUOUS QUERY {_ident(name)} ON {_ident(database)}")
    points = resolution_points(settings)
    shown = client.rows(f"SELECT * FROM {_ident(RP_META)}.{_ident(RESOLUTIONS)}", database)
    if sorted(_resolution_key(r) for r in shown) != sorted(_line_key(line) for line in points.splitlines()):
        client.query(f"DELETE FROM {_ident(RESOLUTIONS)}", database)
        client.write(database, RP_META, points)
        ran.append(f"write {RP_META}.{RESOLUTIONS}")
    return ran


def split_by_policy(body: bytes) -> dict[str | None, bytes]:
    """Line protocol cut by the retention policy each line's measurement belongs to (:data:`ALARM_POLICIES`;
    None: the default policy), line order kept within each; for writers that build one body (bench, tests)."""
    heads = {rp: tuple(f"{m},".encode() for m, r in ALARM_POLICIES.items() if r == rp)
             for rp in set(ALARM_POLICIES.values())}
    out: dict[str | None, list[bytes]] = {}
    for line in body.splitlines(keepends=True):
        rp = next((r for r, h in heads.items() if line.startswith(h)), None)
        out.setdefault(rp, []).append(line)
    return {rp: b"".join(lines) for rp, lines in out.items()}


def ensure_policies(
    url: str,
    database: str,
    settings: RetentionSettings | None = None,
    *,
    username: str | None = None,
    password: str | None = None,
    timeout_s: float = 30.0,
    alter: bool = True,
) -> list[str]:
    """Only the database and the ``alarms`` / ``audit`` policies (:func:`ensure` does them with the rest): what an
    ingestor without the rollup layout still needs, since it writes incidents and audit records there.
    ``alter=False`` only creates missing ones (a writer of test data must not undo a test's durations).
    Idempotent; returns the statements run; raises :class:`RetentionError`."""
    settings = settings or RetentionSettings()
    client = _Client(url, username, password, timeout_s)
    ran: list[str] = []
    run = _recording(client, database, ran)
    _ensure_database_and_policies(client, database, alarm_policies(settings), alter=alter, run=run)
    return ran


def _recording(client: _Client, database: str, ran: list[str]) -> Callable[[str], None]:
    """A statement runner that also records what it ran (``ensure``'s return value: what had to change)."""
    def run(q: str) -> None:
        client.query(q, database)
        ran.append(q)
    return run


def _ensure_database_and_policies(client: _Client, database: str, policies: list[tuple[str, str, bool]], *,
                                  alter: bool, run: Callable[[str], None]) -> None:
    """The database, then each (name, duration, default) policy created if missing and, with ``alter``, corrected
    where its duration or default flag differs; every statement goes through ``run``."""
    if not any(r.get("name") == database for r in client.rows("SHOW DATABASES")):
        run(f"CREATE DATABASE {_ident(database)}")
    have = {r["name"]: r for r in client.rows(f"SHOW RETENTION POLICIES ON {_ident(database)}")}
    for name, duration, default in policies:
        tail = f"DURATION {duration} REPLICATION 1" + (" DEFAULT" if default else "")
        cur = have.get(name)
        if cur is None:
            run(f"CREATE RETENTION POLICY {_ident(name)} ON {_ident(database)} {tail}")
        elif alter and (not _duration_matches(str(cur["duration"]), duration) or (default and not cur["default"])):
            run(f"ALTER RETENTION POLICY {_ident(name)} ON {_ident(database)} {tail}")


def _resolution_key(row: dict[str, Any]) -> tuple[str, int, int, str, str]:
    return (row["rp"], int(row["min_span_ms"]), int(row["max_span_ms"]), row["vmin"], row["vmax"])


def _line_key(line: str) -> tuple[str, int, int, str, str]:
    fields = dict(kv.split("=", 1) for kv in line.split(" ")[1].split(","))
    return (
        fields["rp"].strip('"'),
        int(fields["min_span_ms"].rstrip("i")),
        int(fields["max_span_ms"].rstrip("i")),
        fields["vmin"].strip('"'),
        fields["vmax"].strip('"'),
    )


def backfill(
    url: str,
    database: str,
    start_ns: int,
    end_ns: int,
    *,
    username: str | None = None,
    password: str | None = None,
    timeout_s: float = 300.0,
) -> dict[str, int]:
    """Recompute the rollups of every measurement for ``[start_ns, end_ns)``, widened to whole hours.

    The same SELECT ... INTO the continuous queries run, over a range they no longer cover (late
    data from a replay). 1-minute rollups first, then hours from them. Returns points written per
    ``<measurement>_<level>``.
    """
    hour = 3_600_000_000_000
    lo = start_ns // hour * hour
    hi = -(-end_ns // hour) * hour
    if hi <= lo:
        raise ValueError(f"backfill: empty range [{start_ns}, {end_ns})")
    client = _Client(url, username, password, timeout_s)
    written: dict[str, int] = {}
    for level in ("1m", "1h"):
        for measurement in ROLLUPS:
            q = _select_into(database, measurement, level, f"time >= {lo} AND time < {hi}")
            rows = client.rows(q, database)
            written[f"{measurement}_{level}"] = sum(int(r.get("written", 0)) for r in rows)
    return written


# -- command line ------------------------------------------------------------------------------------


def _parse_time(text: str, option: str) -> int:
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{option}: {text!r} is not an ISO 8601 time such as 2026-01-01T00:00:00Z") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp() * 1_000_000_000)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cloud.retention {ensure,backfill,print}``; exit 1 with the refused statement on errors."""
    p = argparse.ArgumentParser(prog="python -m cloud.retention", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("ensure", "backfill", "print"):
        s = sub.add_parser(name)
        s.add_argument("--database", default="plantwire")
        if name != "print":
            s.add_argument("--url", default="http://127.0.0.1:8086")
            s.add_argument("--username")
            s.add_argument("--password-env", help="environment variable holding the password")
        if name == "backfill":
            s.add_argument("--start", required=True, help="ISO 8601, e.g. 2026-01-01T00:00:00Z")
            s.add_argument("--end", required=True)
        else:
            defaults = RetentionSettings()
            s.add_argument("--raw-days", type=int, default=defaults.raw_days)
            s.add_argument("--rollup-1m-days", type=int, default=defaults.rollup_1m_days)
            s.add_argument("--rollup-1h-days", type=int, default=defaults.rollup_1h_days, help="0 = forever")
            s.add_argument("--alarms-days", type=int, default=defaults.alarms_days)
            s.add_argument("--audit-days", type=int, default=defaults.audit_days)
    args = p.parse_args(argv)
    password = None
    if getattr(args, "password_env", None):
        import os

        password = os.environ.get(args.password_env)
        if password is None:
            print(f"--password-env: {args.password_env} is not set", file=sys.stderr)
            return 2
    try:
        if args.cmd == "backfill":
            n = backfill(
                args.url, args.database, _parse_time(args.start, "--start"), _parse_time(args.end, "--end"),
                username=args.username, password=password,
            )
            print(json.dumps(n))
            return 0
        settings = RetentionSettings(
            raw_days=args.raw_days, rollup_1m_days=args.rollup_1m_days, rollup_1h_days=args.rollup_1h_days,
            alarms_days=args.alarms_days, audit_days=args.audit_days,
        )
        if args.cmd == "print":
            db = _ident(args.database)
            for rp, duration, default in retention_policies(settings):
                print(f"CREATE RETENTION POLICY {_ident(rp)} ON {db} DURATION {duration} REPLICATION 1"
                      + (" DEFAULT" if default else "") + ";")
            for statement in continuous_queries(args.database, settings).values():
                print(statement + ";")
            print(f"-- then write to RP {RP_META} of {args.database}:\n{resolution_points(settings)}")
            return 0
        for statement in ensure(args.url, args.database, settings, username=args.username, password=password):
            print(statement)
        return 0
    except (RetentionError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
