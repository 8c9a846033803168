"""Reading incidents back from InfluxDB (InfluxQL over the v1 ``/query`` API) for the CLI and reports.

InfluxQL because it is what Debian's InfluxDB 1.6 speaks and what 2.x/3.x still answer on ``/query``
(the dashboards use it too). The figures themselves are computed by :mod:`cloud.alarms.kpi` from the
columns built here, so a bench script feeding the same columns gets the same numbers.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import numpy as np

from cloud import schema as s
from cloud.alarms import kpi
from cloud.retention import qualified

__all__ = ["InfluxQL", "QueryError", "find_incident", "find_machine", "open_incidents", "report", "transitions"]

#: Where they are: the ``alarms`` retention policy (cloud.retention: kept a year, apart from the samples' 30 days).
_INCIDENTS = qualified(s.M_INCIDENTS)
_TRANSITIONS = qualified(s.M_INCIDENT_TRANSITIONS)
#: How far back "open" incidents are looked for: an incident is stored at its start, and one can stay
#: open (standing, shelved, out of service) for months.
OPEN_LOOKBACK = "400d"


class QueryError(RuntimeError):
    """InfluxDB did not answer the query, or answered with an error (the message says which)."""


@dataclass(frozen=True)
class InfluxQL:
    """A minimal InfluxQL client: one POST per query, rows as dicts with the series' tags merged in."""

    url: str
    database: str
    username: str | None = None
    password: str | None = None
    timeout_s: float = 10.0

    def rows(self, q: str) -> list[dict[str, Any]]:
        params = {"q": q, "db": self.database, "epoch": "ns"}
        if self.username:
            params.update(u=self.username, p=self.password or "")
        req = urllib.request.Request(
            f"{self.url.rstrip('/')}/query", data=urllib.parse.urlencode(params).encode(), method="POST"
        )
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                doc = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise QueryError(f"{self.url}: query failed with HTTP {exc.code}: {exc.read()[:300]!r}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise QueryError(f"{self.url}: InfluxDB not reachable ({exc})") from None
        errors = [doc["error"]] if "error" in doc else []
        errors += [r["error"] for r in doc.get("results", []) if "error" in r]
        if errors:
            raise QueryError(f"{self.url}: {'; '.join(errors)} (query: {q})")
        out: list[dict[str, Any]] = []
        for result in doc.get("results", []):
            for series in result.get("series", []) or []:
                tags = series.get("tags", {})
                for values in series["values"]:
                    out.append({**tags, **dict(zip(series["columns"], values, strict=True))})
        return out


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def open_incidents(db: InfluxQL) -> list[dict[str, Any]]:
    """Latest states of incidents that need the operator (active or unacknowledged), newest first."""
    rows = db.rows(
        f'SELECT * FROM {_INCIDENTS} WHERE "{s.F_OPEN}" = 1 AND time > now() - {OPEN_LOOKBACK} GROUP BY *'
    )
    for r in rows:
        r["signals"] = json.loads(r.get(s.F_SIGNALS) or "[]")
    return sorted(rows, key=lambda r: (-int(r["time"]), r.get(s.F_ID, "")))


def find_incident(db: InfluxQL, id_: str, gateway: str | None = None) -> list[dict[str, Any]]:
    """Latest states of incidents with this id (ids are unique per gateway: several gateways may match)."""
    where = f'"{s.F_ID}" = {_quote(id_)} AND time > now() - {OPEN_LOOKBACK}'
    if gateway:
        where += f' AND "{s.TAG_GATEWAY}" = {_quote(gateway)}'
    return db.rows(f'SELECT * FROM {_INCIDENTS} WHERE {where} GROUP BY *')


def find_machine(db: InfluxQL, machine: str, gateway: str | None = None) -> list[dict[str, Any]]:
    """(site, gateway) rows of the gateways that stored incidents of this machine."""
    where = f'"{s.TAG_MACHINE}" = {_quote(machine)} AND time > now() - {OPEN_LOOKBACK}'
    if gateway:
        where += f' AND "{s.TAG_GATEWAY}" = {_quote(gateway)}'
    return db.rows(f'SELECT last("{s.F_SEQ}") FROM {_INCIDENTS} WHERE {where} '
                   f'GROUP BY "{s.TAG_SITE}", "{s.TAG_GATEWAY}"')


def transitions(db: InfluxQL, start_ns: int, end_ns: int) -> kpi.Transitions:
    """Transitions in [start_ns - 10 min, end_ns) as KPI columns (the extra 10 minutes feed the flood window)."""
    rows = db.rows(
        f'SELECT "{s.F_ID}", "{s.F_ACTIVE}", "{s.F_CHATTERING}", "{s.F_SUPPRESSED_BY}", "{s.F_SHELVED}", '
        f'"{s.F_OUT_OF_SERVICE}", "{s.F_START_MS}" FROM {_TRANSITIONS} '
        f"WHERE time >= {start_ns - kpi.NS_PER_10MIN} AND time < {end_ns} GROUP BY *"
    )
    cols = [
        {
            "ts_ns": r["time"],
            "start_ns": int(r.get(s.F_START_MS) or 0) * 1_000_000,
            "incident": f"{r[s.TAG_GATEWAY]}/{r[s.F_ID]}",
            "area": r.get(s.TAG_AREA, ""),
            "source": f"{r[s.TAG_GATEWAY]}/{r[s.TAG_MACHINE]}" if r.get(s.TAG_MACHINE)
            else f"{r[s.TAG_GATEWAY]}/area:{r.get(s.TAG_AREA, '')}",
            "priority": r[s.TAG_PRIORITY],
            "transition": r[s.TAG_TRANSITION],
            "active": r.get(s.F_ACTIVE) == 1,
            "chattering": r.get(s.F_CHATTERING) == 1,
            "suppressed": bool(r.get(s.F_SUPPRESSED_BY)) or r.get(s.F_SHELVED) == 1 or r.get(s.F_OUT_OF_SERVICE) == 1,
        }
        for r in rows
    ]
    return kpi.Transitions.from_rows(cols)


def report(db: InfluxQL, start_ns: int, end_ns: int) -> kpi.Report:
    """Every EEMUA 191 figure of :mod:`cloud.alarms.kpi` over [start_ns, end_ns), from InfluxDB."""
    t = transitions(db, start_ns, end_ns)
    opened = open_incidents(db)
    start = np.array([int(r["time"]) for r in opened], dtype=np.int64)
    active = np.array([r.get(s.F_ACTIVE) == 1 for r in opened], dtype=bool)
    idx = kpi.standing(start, active, end_ns)
    ids = [f"{opened[i][s.TAG_GATEWAY]}/{opened[i][s.F_ID]}" for i in idx.tolist()]
    return kpi.report(t, start_ns, end_ns, standing_ids=ids)
