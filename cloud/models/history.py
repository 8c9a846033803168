"""Reading a site's history back from InfluxDB, machine by machine, as numpy columns on a fixed tick grid.

Why a grid of the edge's machine tick (``period_s``, 10 s by default) and ``last(value)``: the edge's machine
stage ticks a machine at most once per ``machine.period_s`` on the *latest* good value of each member, so a
model fitted on the same rows sees what it will score. The aggregation runs inside InfluxDB, so the client
receives one value per signal per tick, not every sample (a tenth of them at 1 Hz); the raw samples never
become Python objects here. A query covers one machine and one time chunk (``chunk_s``, a day by default),
so memory is bounded by one machine-chunk whatever the range, and the caller reduces each machine's rows
before reading the next.

Two paths, as the ingestor writes (``cloud.sinks.influx``):
- ``InfluxQLHistory``: ``POST /query`` with InfluxQL (InfluxDB 1.x; also 2.x/3.x through their v1
  compatibility API and a DBRP mapping, as the Grafana dashboards use it).
- ``FluxHistory``: influxdb-client's Flux query API (InfluxDB 2.x). Not exercised against a server in this
  repository's tests: Debian ships no InfluxDB 2 and VictoriaMetrics (the v2 *write* test server) has no Flux.

Quality: a tick whose window held a bad sample (``max(quality) >= 2``) is missing (NaN) for that signal; a
non-finite sample has no ``value`` field in the schema, so it never reaches ``last(value)``. Good points
carry no ``quality`` (since 2026-12-03; older ones carry ``quality=0``): a window of good samples has a null
``max(quality)`` (NaN here, never ``>= 2``) and keeps its value, whichever form its points have.
"""

from __future__ import annotations

import csv
import io
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from cloud import schema
from plantwire.plant import Quality

NS_PER_S = 1_000_000_000
# The alarm layer's transition history (issue 16, cloud/schema.py on its branch): names kept here so this
# reader works before and after that schema lands.
M_INCIDENT_TRANSITIONS = "incident_transitions"
RP_ALARMS = "alarms"  # the alarm layer's retention policy (cloud.retention.RP_ALARMS)
F_INCIDENT_ID = "id"
F_OUT_OF_SERVICE = "out_of_service"


class HistoryError(RuntimeError):
    """InfluxDB could not answer a history query (unreachable, refused, or an error in the statement)."""


@dataclass(frozen=True)
class MachineRows:
    """One machine's history on a tick grid: ``values[k, j]`` is signal ``signals[j]`` at ``ts_ns[k]``."""

    machine: str
    signals: tuple[str, ...]
    ts_ns: np.ndarray  # int64 (n,), tick starts
    values: np.ndarray  # float64 (n, d), NaN = missing or bad
    samples: int  # raw samples InfluxDB aggregated (count of value), for the report


@dataclass(frozen=True)
class Episodes:
    """Alarm episodes from the ``events`` measurement: machine, signal ("" for machine scope), start, end."""

    machine: np.ndarray  # object array of str (one per episode; episodes are few)
    signal: np.ndarray
    start_ns: np.ndarray  # int64
    end_ns: np.ndarray  # int64; an episode still open ends at the queried range's end


class History(Protocol):
    """A read path to the samples and alarm episodes the ingestor stored."""

    def machine_rows(self, site: str, machine: str, signals: tuple[str, ...], start_ns: int, end_ns: int,
                     period_s: int) -> MachineRows: ...

    def episodes(self, site: str, start_ns: int, end_ns: int, lookback_s: int) -> Episodes: ...


def _lit(s: str) -> str:
    """An InfluxQL string literal."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ident(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def grid(start_ns: int, end_ns: int, period_s: int) -> np.ndarray:
    """Tick starts aligned to multiples of ``period_s`` since the epoch (as InfluxDB's GROUP BY time)."""
    p = period_s * NS_PER_S
    first = (start_ns // p) * p
    return np.arange(first, end_ns, p, dtype=np.int64)


def _place(ts: np.ndarray, first_ns: int, period_s: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    k = (ts - first_ns) // (period_s * NS_PER_S)
    ok = (k >= 0) & (k < n)
    return k[ok], ok


class InfluxQLHistory:
    """History through InfluxQL (``/query``), one machine and one chunk of time per statement."""

    def __init__(self, url: str, database: str, *, retention_policy: str | None = None,
                 username: str | None = None, password: str | None = None, token: str | None = None,
                 timeout_s: float = 120.0, chunk_s: int = 86_400) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self.retention_policy = retention_policy
        self.username = username
        self.password = password
        self.token = token
        self.timeout_s = timeout_s
        self.chunk_s = chunk_s
        self.queries = 0
        self.bytes_read = 0
        self.query_s = 0.0  # wall time waiting for InfluxDB (the rest of a fit is our CPU)
        self._lock = threading.Lock()  # the fit keeps two queries in flight (cloud.models.fit._prefetched)

    def _from(self, measurement: str) -> str:
        rp = _ident(self.retention_policy) if self.retention_policy else ""  # empty: the default policy
        return f"{_ident(self.database)}.{rp}.{_ident(measurement)}"

    def query(self, q: str) -> list[dict]:
        """The statement's series (``[{"name", "tags", "columns", "values"}]``); raises HistoryError."""
        params = {"q": q, "db": self.database, "epoch": "ns"}
        if self.username:
            params |= {"u": self.username, "p": self.password or ""}
        req = urllib.request.Request(f"{self.url}/query", data=urllib.parse.urlencode(params).encode(), method="POST")
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
        if self.token:
            req.add_header("Authorization", f"Token {self.token}")
        t0 = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            raise HistoryError(f"InfluxDB {self.url}: HTTP {exc.code} for {q[:200]!r}: {exc.read()[:300]!r}") from exc
        except OSError as exc:
            raise HistoryError(f"InfluxDB {self.url}: {exc}") from exc
        finally:
            with self._lock:
                self.query_s += time.monotonic() - t0
        with self._lock:
            self.queries += 1
            self.bytes_read += len(body)
        doc = json.loads(body)
        results = doc.get("results", [])
        errors = ([doc["error"]] if "error" in doc else []) + [r["error"] for r in results if "error" in r]
        if errors:
            raise HistoryError(f"InfluxDB {self.url} refused {q[:200]!r}: {'; '.join(errors)}")
        return [s for r in results for s in (r.get("series") or [])]

    def machine_rows(self, site: str, machine: str, signals: tuple[str, ...], start_ns: int, end_ns: int,
                     period_s: int) -> MachineRows:
        ts = grid(start_ns, end_ns, period_s)
        n, col = ts.shape[0], {s: j for j, s in enumerate(signals)}
        values = np.full((n, len(signals)), np.nan)
        samples = 0
        prefix = machine + "."
        step = self.chunk_s * NS_PER_S
        first = int(ts[0]) if n else start_ns
        for a in range(first, end_ns, step):
            b = min(a + step, end_ns)
            q = (f'SELECT last("{schema.F_VALUE}") AS v, max("{schema.F_QUALITY}") AS q, '
                 f'count("{schema.F_VALUE}") AS c FROM {self._from(schema.M_SAMPLES)} '
                 f'WHERE "{schema.TAG_SITE}" = {_lit(site)} AND "{schema.TAG_MACHINE}" = {_lit(machine)} '
                 f'AND time >= {a} AND time < {b} GROUP BY time({period_s}s), "{schema.TAG_SIGNAL}" fill(none)')
            for series in self.query(q):
                sid = (series.get("tags") or {}).get(schema.TAG_SIGNAL, "")
                j = col.get(sid[len(prefix):] if sid.startswith(prefix) else sid)
                if j is None:
                    continue
                rows = np.array(series["values"], dtype=np.float64)  # time, v, q, c; null -> NaN
                if rows.size == 0:
                    continue
                k, ok = _place(rows[:, 0].astype(np.int64), first, period_s, n)
                v = np.where(rows[ok, 2] >= Quality.BAD, np.nan, rows[ok, 1])
                values[k, j] = v
                samples += int(np.nansum(rows[:, 3]))
        return MachineRows(machine, tuple(signals), ts, values, samples)

    def episodes(self, site: str, start_ns: int, end_ns: int, lookback_s: int) -> Episodes:
        q = (f'SELECT "{schema.F_ACTIVE}", "{schema.F_END_MS}" FROM {self._from(schema.M_EVENTS)} '
             f'WHERE "{schema.TAG_SITE}" = {_lit(site)} AND time >= {start_ns - lookback_s * NS_PER_S} '
             f'AND time < {end_ns} GROUP BY "{schema.TAG_MACHINE}", "{schema.TAG_SIGNAL}"')
        mach: list[str] = []
        sig: list[str] = []
        starts: list[np.ndarray] = []
        ends: list[np.ndarray] = []
        for series in self.query(q):
            tags = series.get("tags") or {}
            rows = np.array(series["values"], dtype=np.float64)  # time, active, end_ms
            t0 = rows[:, 0].astype(np.int64)
            end = np.where(np.isfinite(rows[:, 2]), rows[:, 2] * 1e6, np.nan)
            end = np.where(np.isfinite(end), end, end_ns).astype(np.int64)
            mach += [tags.get(schema.TAG_MACHINE, "")] * t0.shape[0]
            sig += [tags.get(schema.TAG_SIGNAL, "")] * t0.shape[0]
            starts.append(t0)
            ends.append(end)
        for machine, a, b in self._out_of_service(site, start_ns - lookback_s * NS_PER_S, end_ns):
            mach.append(machine)
            sig.append("")
            starts.append(np.array([a], dtype=np.int64))
            ends.append(np.array([b], dtype=np.int64))
        cat = (lambda a: np.concatenate(a) if a else np.zeros(0, dtype=np.int64))  # noqa: E731
        return Episodes(np.array(mach, dtype=object), np.array(sig, dtype=object), cat(starts), cat(ends))

    def _out_of_service(self, site: str, start_ns: int, end_ns: int) -> list[tuple[str, int, int]]:
        """(machine, start, end) of the periods an incident of the machine was out of service (ISA-18.2).

        From the alarm layer's ``incident_transitions`` (issue 16: one point per transition, ``id`` and
        ``out_of_service`` fields, ``machine`` tag); a database without it yields nothing. A period opens at
        the transition that set ``out_of_service`` and closes at the next one of that incident that cleared
        it (or at ``end_ns``).
        """
        src = f"{_ident(self.database)}.{_ident(RP_ALARMS)}.{_ident(M_INCIDENT_TRANSITIONS)}"  # cloud.retention
        q = (f'SELECT "{F_INCIDENT_ID}", "{F_OUT_OF_SERVICE}" FROM {src} '
             f'WHERE "{schema.TAG_SITE}" = {_lit(site)} AND time >= {start_ns} AND time < {end_ns} '
             f'GROUP BY "{schema.TAG_MACHINE}"')
        out: list[tuple[str, int, int]] = []
        for series in self.query(q):
            machine = (series.get("tags") or {}).get(schema.TAG_MACHINE, "")
            cols = series.get("columns", [])
            if not machine or F_INCIDENT_ID not in cols or F_OUT_OF_SERVICE not in cols:
                continue
            i_t, i_id, i_oos = cols.index("time"), cols.index(F_INCIDENT_ID), cols.index(F_OUT_OF_SERVICE)
            since: dict[str, int] = {}
            for row in sorted(series.get("values") or [], key=lambda r: r[i_t]):  # transitions: few
                t, iid, oos = int(row[i_t]), str(row[i_id]), row[i_oos]
                if oos == 1 and iid not in since:
                    since[iid] = t
                elif oos == 0 and iid in since:
                    out.append((machine, since.pop(iid), t))
            out += [(machine, t, end_ns) for t in since.values()]
        return out


class FluxHistory:
    """History through Flux (InfluxDB 2.x query API, influxdb-client): the same rows as ``InfluxQLHistory``."""

    def __init__(self, url: str, *, org: str, bucket: str, token: str | None, timeout_s: float = 120.0,
                 chunk_s: int = 86_400) -> None:
        from influxdb_client import InfluxDBClient

        self.bucket = bucket
        self.org = org
        self.chunk_s = chunk_s
        self._client = InfluxDBClient(url=url, token=token or "", org=org, timeout=int(timeout_s * 1000))
        self.queries = 0
        self.bytes_read = 0

    def _csv(self, flux: str) -> list[dict[str, str]]:
        try:
            raw = self._client.query_api().query_raw(flux, org=self.org, dialect=None)
            text = raw.data.decode() if hasattr(raw, "data") else raw.read().decode()
        except Exception as exc:  # urllib3 and ApiException alike: the server did not answer the query
            raise HistoryError(f"Flux query failed: {type(exc).__name__}: {exc}") from exc
        self.queries += 1
        self.bytes_read += len(text)
        rows: list[dict[str, str]] = []
        header: list[str] | None = None
        for rec in csv.reader(io.StringIO(text)):
            if not rec or rec[0].startswith("#"):
                header = None if not rec else header
                continue
            if header is None:
                header = rec
                continue
            rows.append(dict(zip(header, rec, strict=False)))
        return rows

    @staticmethod
    def _str(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    def machine_rows(self, site: str, machine: str, signals: tuple[str, ...], start_ns: int, end_ns: int,
                     period_s: int) -> MachineRows:
        ts = grid(start_ns, end_ns, period_s)
        n, col = ts.shape[0], {s: j for j, s in enumerate(signals)}
        values = np.full((n, len(signals)), np.nan)
        bad = np.zeros((n, len(signals)), dtype=bool)
        samples = 0
        prefix = machine + "."
        step = self.chunk_s * NS_PER_S
        first = int(ts[0]) if n else start_ns
        for a in range(first, end_ns, step):
            b = min(a + step, end_ns)
            base = (f'from(bucket: {self._str(self.bucket)}) |> range(start: time(v: {a}), stop: time(v: {b})) '
                    f'|> filter(fn: (r) => r._measurement == "{schema.M_SAMPLES}" and r.{schema.TAG_SITE} == '
                    f'{self._str(site)} and r.{schema.TAG_MACHINE} == {self._str(machine)})')
            flux = (f'v = {base} |> filter(fn: (r) => r._field == "{schema.F_VALUE}") '
                    f'|> aggregateWindow(every: {period_s}s, fn: last, createEmpty: false, timeSrc: "_start")\n'
                    f'q = {base} |> filter(fn: (r) => r._field == "{schema.F_QUALITY}") '
                    f'|> aggregateWindow(every: {period_s}s, fn: max, createEmpty: false, timeSrc: "_start")\n'
                    f'union(tables: [v, q]) |> keep(columns: ["_time", "_value", "_field", "{schema.TAG_SIGNAL}"])')
            for r in self._csv(flux):
                sid = r.get(schema.TAG_SIGNAL, "")
                j = col.get(sid[len(prefix):] if sid.startswith(prefix) else sid)
                if j is None:
                    continue
                t = int(np.datetime64(r["_time"].rstrip("Z"), "ns").astype(np.int64))
                k = (t - first) // (period_s * NS_PER_S)
                if not 0 <= k < n:
                    continue
                if r.get("_field") == schema.F_VALUE:
                    values[k, j] = float(r["_value"])
                    samples += period_s  # Flux path: count estimated at one sample per second per tick
                elif float(r["_value"]) >= Quality.BAD:
                    bad[k, j] = True
        values[bad] = np.nan
        return MachineRows(machine, tuple(signals), ts, values, samples)

    def episodes(self, site: str, start_ns: int, end_ns: int, lookback_s: int) -> Episodes:
        flux = (f'from(bucket: {self._str(self.bucket)}) |> range(start: time(v: {start_ns - lookback_s * NS_PER_S}), '
                f'stop: time(v: {end_ns})) |> filter(fn: (r) => r._measurement == "{schema.M_EVENTS}" and '
                f'r.{schema.TAG_SITE} == {self._str(site)} and r._field == "{schema.F_END_MS}" or '
                f'r._measurement == "{schema.M_EVENTS}" and r.{schema.TAG_SITE} == {self._str(site)} and '
                f'r._field == "{schema.F_ACTIVE}")')
        by_key: dict[tuple[str, str, str], float] = {}
        for r in self._csv(flux):
            key = (r.get(schema.TAG_MACHINE, ""), r.get(schema.TAG_SIGNAL, ""), r["_time"])
            end = float(r["_value"]) * 1e6 if r.get("_field") == schema.F_END_MS else float("nan")
            if key not in by_key or np.isfinite(end):
                by_key[key] = end
        mach = np.array([k[0] for k in by_key], dtype=object)
        sig = np.array([k[1] for k in by_key], dtype=object)
        start = np.array([np.datetime64(k[2].rstrip("Z"), "ns").astype(np.int64) for k in by_key], dtype=np.int64)
        end = np.array([v if np.isfinite(v) else end_ns for v in by_key.values()], dtype=np.int64)
        return Episodes(mach, sig, start, end)
