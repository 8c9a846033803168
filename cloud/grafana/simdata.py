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

import numpy as np

from cloud import schema as s
from cloud.sinks.lineproto import SeriesPrefixes, build_lines

__all__ = ["SimPlant", "main", "sample_columns", "simulated_lines"]


@dataclass(frozen=True, slots=True)
class SimPlant:
    """A small plant: ``sites`` x ``gateways`` x ``machines`` x ``signals`` series."""

    sites: tuple[str, ...] = ("north",)
    gateways_per_site: int = 2
    machines_per_gateway: int = 2
    signals_per_machine: int = 3
    period_s: float = 10.0

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
                 s.F_WAL_OLDEST_AGE_S: 1.0 + i % 5, s.F_ONLINE: 1},
                t,
            ))
        out.append(("\n".join(lines) + "\n").encode())
    # The energy agent's signals, on a site of their own that sorts after the others, so that the other
    # dashboards' "first value" selections (and the tests that pin them) see the same data as before.
    site, gw = ENERGY_SITE, f"{ENERGY_SITE}-gw0"
    machines = [f"{gw}.press{m:02d}" for m in range(plant.machines_per_gateway)]
    out.append(_energy_lines(site, gw, machines, start_ns, seconds, 0))
    events = _energy_events({s.TAG_SITE: site, s.TAG_GATEWAY: gw}, machines[0], start_ns, seconds)
    out.append(("\n".join(events) + "\n").encode())
    return b"".join(out)


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


def write_v1(url: str, database: str, body: bytes, *, chunk_bytes: int = 4 << 20) -> None:
    """POST line protocol to InfluxDB 1.x ``/write`` in chunks cut at line ends."""
    start = 0
    while start < len(body):
        end = min(len(body), start + chunk_bytes)
        if end < len(body):
            end = body.rindex(b"\n", start, end) + 1
        req = urllib.request.Request(
            f"{url.rstrip('/')}/write?db={database}&precision=ns", data=body[start:end], method="POST"
        )
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
    body = simulated_lines(SimPlant(), now - int(args.hours * 3600e9), args.hours * 3600)
    write_v1(args.url, args.database, body)
    n = body.count(b"\n")
    print(f"wrote {n} points to {args.database}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
