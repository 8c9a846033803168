"""Simulated points for every measurement of :mod:`cloud.schema`, to fill a database the dashboards can show.

Used by the dashboard and rollup tests (every panel must return rows) and by ``bench/influx_schema.py``;
also handy to look at the dashboards without a plant: ``python -m cloud.grafana.simdata --url ... --database ...``.
Samples are built with :func:`cloud.sinks.lineproto.build_lines`, exactly as the ingestor writes them;
events, health and pipeline points with :func:`cloud.schema.format_point`.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cloud import schema as s
from cloud.sinks.lineproto import SeriesPrefixes, build_lines

__all__ = [
    "SimPlant", "main", "sample_columns", "simulated_incident_docs", "simulated_incident_lines", "simulated_lines"
]


@dataclass(frozen=True, slots=True)
class SimPlant:
    """A small plant: ``sites`` x ``gateways`` x ``machines`` x ``signals`` series."""

    sites: tuple[str, ...] = ("north",)
    gateways_per_site: int = 2
    machines_per_gateway: int = 2
    signals_per_machine: int = 3
    period_s: float = 10.0
    energy: bool = False  # the energy agent's derived signals on a site of their own (the energy dashboard's data)

    def gateways(self) -> Iterator[tuple[str, str]]:
        for site in self.sites:
            for g in range(self.gateways_per_site):
                yield site, f"{site}-gw{g}"

    def table(self, gateway: str) -> tuple[list[str], list[str]]:
        """(signal ids, machine per signal) of one gateway."""
        ids: list[str] = []
        machines: list[str] = []
        for m in range(self.machines_per_gateway):
            machine = f"{gateway}.press{m:02d}"
            for k in range(self.signals_per_machine):
                ids.append(f"{machine}.sig{k:02d}")
                machines.append(machine)
        return ids, machines


def sample_columns(n_signals: int, start_ns: int, seconds: float, period_s: float, seed: int = 0) -> tuple[
    np.ndarray, np.ndarray, np.ndarray, np.ndarray
]:
    """Columns (ts_ns, signal, value, quality) of ``n_signals`` sine-plus-noise signals, time-major."""
    steps = max(1, int(seconds / period_s))
    t = np.arange(steps, dtype=np.int64)
    ts = np.repeat(start_ns + t * int(period_s * 1e9), n_signals)
    sig = np.tile(np.arange(n_signals, dtype=np.int64), steps)
    rng = np.random.default_rng(seed)
    phase = sig.astype(np.float64) * 0.7
    value = 50.0 + 10.0 * np.sin(np.repeat(t, n_signals) * period_s / 600.0 + phase) + rng.normal(0, 0.5, ts.size)
    quality = np.zeros(ts.size, dtype=np.uint8)
    step = np.repeat(t, n_signals)
    quality[step % 50 == 7] = 1  # every signal has an uncertain sample now and then
    quality[step % 211 == 13] = 2  # and a bad one
    return ts, sig, value, quality


def simulated_lines(plant: SimPlant, start_ns: int, seconds: float) -> bytes:
    """Line protocol for ``seconds`` of the plant from ``start_ns``: samples, alarm episodes, health, pipeline."""
    out: list[bytes] = []
    minute = 60_000_000_000
    for gi, (site, gw) in enumerate(plant.gateways()):
        ids, machines = plant.table(gw)
        prefixes = SeriesPrefixes.build(s.M_SAMPLES, site=site, gateway=gw, ids=ids, machines=machines)
        ts, sig, value, quality = sample_columns(len(ids), start_ns, seconds, plant.period_s, seed=gi)
        value[len(ids) * 3 + 1] = np.nan  # one non-finite sample, as a flaky sensor delivers
        out.append(build_lines(prefixes, ts, sig, value, quality).tobytes())
        lines: list[str] = []
        tags = {s.TAG_SITE: site, s.TAG_GATEWAY: gw}
        unique_machines = list(dict.fromkeys(machines))
        n_min = max(1, int(seconds // 60))
        for k, machine in enumerate(unique_machines):
            for i in range(n_min):
                t = start_ns + i * minute + k * 1_000_000
                health = max(0.0, 1.0 - 0.4 * i / n_min - 0.1 * k)
                rul = 3600.0 * 24 * health
                lines.append(s.format_point(
                    s.M_HEALTH, {**tags, s.TAG_MACHINE: machine},
                    {s.F_HEALTH: health, s.F_RUL: rul, s.F_RUL_LOW: 0.7 * rul, s.F_RUL_HIGH: 1.3 * rul}, t,
                ))
            # one closed episode per signal of the first machine, one machine-scope episode left open
            for j, sid in enumerate(ids[: plant.signals_per_machine]):
                t0 = start_ns + (j + 1) * int(seconds * 1e9) // (plant.signals_per_machine + 2)
                dur_ns = 90_000_000_000
                lines.append(s.format_point(
                    s.M_EVENTS, {**tags, s.TAG_MACHINE: machine, s.TAG_SIGNAL: sid, s.TAG_KIND: "level"},
                    {s.F_ACTIVE: 0, s.F_STATE: s.EventState.CLOSED.value, s.F_PEAK: 0.8,
                     s.F_DURATION_S: dur_ns / 1e9, s.F_END_MS: (t0 + dur_ns) // 1_000_000}, t0,
                ))
            t_open = start_ns + int(seconds * 1e9) * 3 // 4
            lines.append(s.format_point(
                s.M_EVENTS, {**tags, s.TAG_MACHINE: machine, s.TAG_KIND: "machine"},
                {s.F_ACTIVE: 1, s.F_STATE: s.EventState.OPEN.value, s.F_PEAK: 0.6 + 0.1 * k}, t_open,
            ))
        for i in range(max(1, int(seconds // 10))):
            t = start_ns + i * 10_000_000_000
            n = len(ids) * int(10 / plant.period_s or 1)
            lines.append(s.format_point(
                s.M_PIPELINE, tags,
                {s.F_INTERVAL_S: 10.0, s.F_SAMPLES: n, s.F_SAMPLES_PER_S: n / 10.0, s.F_BATCHES: 10,
                 s.F_BYTES: 40 * n, s.F_DUPLICATES: int(i % 3 == 0), s.F_DEAD_LETTERS: int(i % 17 == 5),
                 s.F_LAG_S: 0.2 + 0.01 * (i % 50), s.F_GAPS: int(i % 20 < 3), s.F_GAP_BATCHES: 2 * int(i % 20 < 3),
                 s.F_GAP_AGE_S: 5.0 * (i % 20) if i % 20 < 3 else 0.0, s.F_DROPPED: int(i % 29 == 7),
                 s.F_WAL_BYTES: 1_000_000 + 1000 * (i % 60), s.F_WAL_RECORDS: 100 + i % 60,
                 s.F_WAL_OLDEST_AGE_S: 1.0 + i % 5, s.F_ONLINE: 1, s.F_MODEL_REFUSALS: i // 360,
                 s.F_MODELS: f"machine_pca/press active=v{1 + i // 720} shadow=- previous=v{i // 720 or '-'}"},
                t,
            ))
        lines += simulated_incident_lines(site, gw, unique_machines, start_ns, seconds, burst=gi == 0)
        out.append(("\n".join(lines) + "\n").encode())
    if not plant.energy:
        return b"".join(out)
    # The energy agent's signals, on a site of their own that sorts after the others, so that the other
    # dashboards' "first value" selections (and the tests that pin them) see the same data as before.
    site, gw = ENERGY_SITE, f"{ENERGY_SITE}-gw0"
    machines = [f"{gw}.press{m:02d}" for m in range(plant.machines_per_gateway)]
    out.append(_energy_lines(site, gw, machines, start_ns, seconds, 0))
    events = _energy_events({s.TAG_SITE: site, s.TAG_GATEWAY: gw}, machines[0], start_ns, seconds)
    out.append(("\n".join(events) + "\n").encode())
    stations = [f"{gw}.leak_test{m:02d}" for m in range(2)]
    out.append(_leak_lines(site, gw, stations, start_ns, seconds))
    events = _leak_events({s.TAG_SITE: site, s.TAG_GATEWAY: gw}, stations[0], start_ns, seconds)
    out.append(("\n".join(events) + "\n").encode())
    return b"".join(out)


def simulated_incident_docs(
    machines: Sequence[str], start_ns: int, seconds: float, *, burst: bool = False
) -> list[dict[str, Any]]:
    """Incident and audit documents (the events lane's, contracts.md) of a few machines over a span.

    Every 20 minutes per machine an incident opens, is acknowledged a minute later and clears after five;
    every fifth one chatters; ``burst`` adds a flood (12 incidents in 2 minutes in one area); one incident
    stays open unacknowledged, one is shelved, one out of service, and one has stood since 30 h before the span's end.
    Machine ``k`` is in area ``hall-a`` or ``hall-b`` by parity.
    """
    s_ns = 1_000_000_000
    end_ns = start_ns + int(seconds * s_ns)
    docs: list[dict[str, Any]] = []

    def incident(id_: str, machine: str, k: int, start: int, priority: str) -> list[dict[str, Any]]:
        base = {"type": "incident", "id": id_, "start_ns": start, "end_ns": None, "machine": machine,
                "area": f"hall-{'ab'[k % 2]}", "priority": priority, "active": True, "acked": False,
                "shelved_until_ns": None, "out_of_service": False, "suppressed_by": None, "chattering": False,
                "flood_count": None, "kinds": ["level", "machine"], "signals": [f"{machine}.sig00", f"{machine}.sig01"],
                "peak": 0.8, "actor": None, "reason": None}
        return [{**base, "seq": 1, "ts_ns": start, "transition": "open"}]

    for k, machine in enumerate(machines):
        n = max(1, int(seconds // 1200))
        for i in range(n):
            t0 = start_ns + i * 1200 * s_ns + k * 7 * s_ns
            id_ = f"{machine}-{i}"
            opened = incident(id_, machine, k, t0, ("low", "low", "high", "low", "critical")[i % 5])[0]
            docs.append(opened)
            if i % 5 == 4:  # chatters: two more activations within the minute, then marked
                docs.append({**opened, "seq": 2, "ts_ns": t0 + 10 * s_ns, "transition": "update", "active": False})
                docs.append({**opened, "seq": 3, "ts_ns": t0 + 20 * s_ns, "transition": "update"})
                docs.append({**opened, "seq": 4, "ts_ns": t0 + 30 * s_ns, "transition": "chatter",
                             "chattering": True, "shelved_until_ns": t0 + 630 * s_ns})
            acked = {**opened, "seq": 5, "ts_ns": t0 + 60 * s_ns, "transition": "ack", "acked": True,
                     "actor": "alice", "reason": "seen"}
            docs.append(acked)
            docs.append({"type": "audit", "ts_ns": t0 + 60 * s_ns, "request_id": f"req-{id_}", "actor": "alice",
                         "source": "mqtt", "service": "alarms", "action": "ack", "target": id_, "reason": "seen",
                         "outcome": "applied", "detail": ""})
            if t0 + 300 * s_ns < end_ns:
                docs.append({**acked, "seq": 6, "ts_ns": t0 + 300 * s_ns, "transition": "clear", "active": False,
                             "end_ns": t0 + 300 * s_ns, "actor": None, "reason": None})
        t_open = start_ns + int(seconds * s_ns) * 3 // 4 + k * s_ns
        docs += incident(f"{machine}-open", machine, k, t_open, "high")
        shelved = incident(f"{machine}-shelved", machine, k, t_open + 60 * s_ns, "low")[0]
        docs += [shelved, {**shelved, "seq": 2, "ts_ns": t_open + 90 * s_ns, "transition": "shelve",
                           "shelved_until_ns": end_ns + 3600 * s_ns, "actor": "bob", "reason": "sensor swap"}]
        oos = incident(f"{machine}-oos", machine, k, t_open + 120 * s_ns, "low")[0]
        docs += [oos, {**oos, "seq": 2, "ts_ns": t_open + 150 * s_ns, "transition": "oos", "out_of_service": True,
                       "actor": "bob", "reason": "sensor removed for calibration"}]
        if k == 0:
            stood = end_ns - 30 * 3600 * s_ns
            docs += incident(f"{machine}-standing", machine, k, stood, "critical")
            docs.append({**docs[-1], "seq": 2, "ts_ns": stood + 60 * s_ns, "transition": "ack", "acked": True})
    if burst and machines:
        ten_min = 600 * s_ns  # within one 10-minute bucket of the clock, an hour or so before the end
        t_burst = (start_ns + int(seconds * s_ns) * 7 // 8) // ten_min * ten_min + 60 * s_ns
        for j in range(12):
            docs += incident(f"burst-{j}", machines[0], 0, t_burst + j * 10 * s_ns, "low")
    return docs


def simulated_incident_lines(
    site: str, gateway: str, machines: Sequence[str], start_ns: int, seconds: float, *, burst: bool = False
) -> list[str]:
    """The points the ingestor writes for :func:`simulated_incident_docs` (cloud.alarms.store), latest
    state last, as the ingestor's order check leaves it."""
    from cloud.alarms.store import audit_line, incident_points

    lines: list[str] = []
    latest: dict[str, str] = {}
    for d in simulated_incident_docs(machines, start_ns, seconds, burst=burst):
        if d["type"] == "audit":
            lines.append(audit_line(site, gateway, d))
            continue
        p = incident_points(site, gateway, d)
        lines.append(p.transition_line)
        latest[p.id] = p.state_line
    return lines + list(latest.values())


ENERGY_SITE = "plant-e"
_ENERGY_ALL = ("power_kw", "energy_kwh", "idle_kwh", "shift_kwh", "day_kwh")
_ENERGY_MACHINE = ("energy_per_part_kwh", "baseline_kw")


def _energy_lines(site: str, gw: str, machines: list[str], start_ns: int, seconds: float, seed: int) -> bytes:
    """The energy agent's derived signals (edge/agents/energy.py) for the machines, their line and an area:
    one sample a minute, demand and its peak every 15 minutes, as the ingestor stores them."""
    minute = 60_000_000_000
    owners = [*machines, gw, "area.site"]
    ids: list[str] = []
    tags: list[str] = []
    for k, owner in enumerate(owners):
        names = _ENERGY_ALL + (_ENERGY_MACHINE if k < len(machines) else ())
        names += ("demand_kw", "demand_peak_kw")
        for name in names:
            ids.append(f"{owner}.energy.{name}")
            tags.append(owner)
    index = {sid: i for i, sid in enumerate(ids)}
    prefixes = SeriesPrefixes.build(s.M_SAMPLES, site=site, gateway=gw, ids=ids, machines=tags)
    rng = np.random.default_rng(100 + seed)
    n_min = max(1, int(seconds // 60))
    cols: dict[str, list[float | int]] = {"ts": [], "sig": [], "value": []}

    def add(t: int, sid: str, v: float) -> None:
        cols["ts"].append(t)
        cols["sig"].append(index[sid])
        cols["value"].append(v)

    shift = np.zeros(len(owners))
    day = np.zeros(len(owners))
    block = np.zeros(len(owners))
    peak = np.zeros(len(owners))
    for i in range(n_min):
        t = start_ns + (i + 1) * minute
        power = np.array([20.0 + 5.0 * np.sin(i / 30.0 + k) + rng.normal(0, 0.3) for k in range(len(machines))])
        power = np.concatenate([power, [power.sum()], [power.sum()]])
        energy = power / 60.0
        idle = energy * (i % 60 < 10)
        shift = np.where(i % 480 == 0, 0.0, shift) + energy
        day = np.where(i % 1440 == 0, 0.0, day) + energy
        block += energy
        for k, owner in enumerate(owners):
            add(t, f"{owner}.energy.power_kw", float(power[k]))
            add(t, f"{owner}.energy.energy_kwh", float(energy[k]))
            add(t, f"{owner}.energy.idle_kwh", float(idle[k]))
            add(t, f"{owner}.energy.shift_kwh", float(shift[k]))
            add(t, f"{owner}.energy.day_kwh", float(day[k]))
            if k < len(machines):
                add(t, f"{owner}.energy.energy_per_part_kwh", float(energy[k] / 30.0))
                add(t, f"{owner}.energy.baseline_kw", 20.0)
        if (i + 1) % 15 == 0:
            demand = block * 4.0
            peak = np.maximum(peak, demand)
            for k, owner in enumerate(owners):
                add(t, f"{owner}.energy.demand_kw", float(demand[k]))
                add(t, f"{owner}.energy.demand_peak_kw", float(peak[k]))
            block[:] = 0.0
    n = len(cols["ts"])
    return build_lines(prefixes, np.asarray(cols["ts"], dtype=np.int64), np.asarray(cols["sig"], dtype=np.int64),
                       np.asarray(cols["value"], dtype=np.float64), np.zeros(n, dtype=np.uint8)).tobytes()


def _energy_events(tags: dict[str, str], machine: str, start_ns: int, seconds: float) -> list[str]:
    """One closed energy_idle episode and one open energy_excess episode, as the agent sends them."""
    span = int(seconds * 1e9)
    t_idle, t_excess = start_ns + span // 5, start_ns + span * 3 // 4  # the open one inside every range
    sig = f"{machine}.energy.power_kw"
    return [
        s.format_point(s.M_EVENTS, {**tags, s.TAG_MACHINE: machine, s.TAG_SIGNAL: sig, s.TAG_KIND: "energy_idle"},
                       {s.F_ACTIVE: 0, s.F_STATE: s.EventState.CLOSED.value, s.F_PEAK: 7.5,
                        s.F_DURATION_S: 3600.0, s.F_END_MS: (t_idle + 3_600_000_000_000) // 1_000_000}, t_idle),
        s.format_point(s.M_EVENTS, {**tags, s.TAG_MACHINE: machine, s.TAG_SIGNAL: sig, s.TAG_KIND: "energy_excess"},
                       {s.F_ACTIVE: 1, s.F_STATE: s.EventState.OPEN.value, s.F_PEAK: 0.22}, t_excess),
    ]


_LEAK = ("leak_rate_pa_s", "decay_raw_pa_s", "thermal_pa_s", "leak_pass", "leak_excess_pa_s", "fill_s", "stabilise_s",
         "measure_s", "vent_s", "leak_valid", "temp_flags")


def _leak_lines(site: str, gw: str, stations: list[str], start_ns: int, seconds: float) -> bytes:
    """The leak-test agent's per-cycle results (edge/agents/leaktest.py): one sample per signal per 45 s cycle,
    the first station's leak rate creeping up over the last quarter (a seal leak), a failing part an hour."""
    cycle_ns = 45_000_000_000
    ids = [f"{st}.{name}" for st in stations for name in _LEAK]
    prefixes = SeriesPrefixes.build(s.M_SAMPLES, site=site, gateway=gw, ids=ids,
                                    machines=[st for st in stations for _ in _LEAK])
    rng = np.random.default_rng(7)
    n = max(1, int(seconds * 1e9 // cycle_ns))
    t = start_ns + (np.arange(n) + 1) * cycle_ns
    ts, sig, val = [], [], []
    for k in range(len(stations)):
        thermal = rng.normal(0.0, 15.0, n)
        drift = np.where((k == 0) & (np.arange(n) > 3 * n // 4), 0.2 * (np.arange(n) - 3 * n // 4), 0.0)
        leak = 4.0 + rng.normal(0.0, 2.5, n) + drift
        leak[np.arange(n) % 80 == 40] = 140.0  # a failing part
        cols = {"leak_rate_pa_s": leak, "decay_raw_pa_s": leak + thermal, "thermal_pa_s": thermal,
                "leak_pass": (leak < 100.0).astype(float), "leak_excess_pa_s": np.maximum(leak - 4.0, 0.0),
                "fill_s": 8.1 + rng.normal(0, 0.2, n), "stabilise_s": np.full(n, 12.0), "measure_s": np.full(n, 20.0),
                "vent_s": 4.5 + rng.normal(0, 0.2, n), "leak_valid": np.ones(n), "temp_flags": np.zeros(n)}
        for j, name in enumerate(_LEAK):
            ts.append(t)
            sig.append(np.full(n, k * len(_LEAK) + j))
            val.append(cols[name])
    tsa, siga, vala = np.concatenate(ts), np.concatenate(sig), np.concatenate(val)
    return build_lines(prefixes, tsa.astype(np.int64), siga.astype(np.int64), vala.astype(np.float64),
                       np.zeros(tsa.size, dtype=np.uint8)).tobytes()


def _leak_events(tags: dict[str, str], station: str, start_ns: int, seconds: float) -> list[str]:
    """One closed and one open leak_drift episode on the station, as the agent sends them."""
    span = int(seconds * 1e9)
    t_closed, t_open = start_ns + span // 5, start_ns + span * 3 // 4
    sig = f"{station}.leak_rate_pa_s"
    tag = {**tags, s.TAG_MACHINE: station, s.TAG_SIGNAL: sig, s.TAG_KIND: "leak_drift"}
    return [
        s.format_point(s.M_EVENTS, tag, {s.F_ACTIVE: 0, s.F_STATE: s.EventState.CLOSED.value, s.F_PEAK: 0.3,
                                         s.F_DURATION_S: 1800.0,
                                         s.F_END_MS: (t_closed + 1_800_000_000_000) // 1_000_000}, t_closed),
        s.format_point(s.M_EVENTS, tag, {s.F_ACTIVE: 1, s.F_STATE: s.EventState.OPEN.value, s.F_PEAK: 0.25}, t_open),
    ]


def write_v1(url: str, database: str, body: bytes, *, chunk_bytes: int = 4 << 20) -> None:
    """POST line protocol to InfluxDB 1.x ``/write`` in chunks cut at line ends; incidents and audit records go to
    their own retention policies, as the ingestor writes them (cloud.retention.ALARM_POLICIES, created here if
    missing)."""
    from cloud import retention

    parts = retention.split_by_policy(body)
    if any(rp is not None for rp in parts):
        retention.ensure_policies(url, database, alter=False)
    for rp, part in parts.items():
        _write_part(url, database, rp, part, chunk_bytes)


def _write_part(url: str, database: str, rp: str | None, body: bytes, chunk_bytes: int) -> None:
    start = 0
    where = f"db={database}&precision=ns" + (f"&rp={rp}" if rp else "")
    while start < len(body):
        end = min(len(body), start + chunk_bytes)
        if end < len(body):
            end = body.rindex(b"\n", start, end) + 1
        req = urllib.request.Request(f"{url.rstrip('/')}/write?{where}", data=body[start:end], method="POST")
        with urllib.request.urlopen(req, timeout=60) as resp:
            if resp.status != 204:
                raise RuntimeError(f"write to {url}: HTTP {resp.status}")
        start = end


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cloud.grafana.simdata", description=__doc__.split("\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8086")
    p.add_argument("--database", default="plantwire")
    p.add_argument("--hours", type=float, default=6.0, help="simulated history ending now")
    args = p.parse_args(argv)
    now = time.time_ns()
    body = simulated_lines(SimPlant(energy=True), now - int(args.hours * 3600e9), args.hours * 3600)
    write_v1(args.url, args.database, body)
    n = body.count(b"\n")
    print(f"wrote {n} points to {args.database}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
