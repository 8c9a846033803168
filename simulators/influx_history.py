"""Simulated plant history written straight into InfluxDB, in the ingestor's schema.

Why: fitting from history (``plantwire models fit``) needs days of history; running the whole pipeline for
days is not possible in a test or a benchmark. The values come from the simulator's own generator
(``SignalModel.step``, deterministic in plant, seed and tick, as ``bench/sim_eval.py`` uses it, the same
code the Modbus and OPC-UA servers serve), with the anomaly schedule of ``plantwire sim``; the points are
built by ``cloud.sinks.lineproto.build_lines`` exactly as the ingestor writes them. Modbus register
quantisation is not applied (values are what the physics produce).

``every_s`` > 1 writes only the last second of every ``every_s`` window: for a fit on ``every_s`` ticks of
``last(value)`` that is exactly the row the full 1 Hz history gives (the generator is stateless in the
tick), at a tenth of the write cost; sample counts are then a tenth too, and said so by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cloud import schema
from cloud.sinks.influx import InfluxSink
from cloud.sinks.lineproto import SeriesPrefixes, build_lines
from plantwire.plant import PlantConfig
from simulators.runtime import SimOptions, World, build_world

EPOCH_NS = int(np.datetime64("2026-01-05T00:00:00", "ns").astype(np.int64))  # a Monday 00:00 UTC, as sim_eval


@dataclass(frozen=True)
class Written:
    samples: int
    ticks: int
    world: World


def write_history(sink: InfluxSink, plant_path: Path, *, gateway: str, seconds: int, seed: int = 0,
                  anomaly_rate_per_h: float = 0.0, every_s: int = 1, start_s: int = 0, epoch_ns: int = EPOCH_NS,
                  plant: PlantConfig | None = None, lines_per_write: int = 50_000) -> Written:
    """Write ``seconds`` of simulated history from ``start_s`` (relative to ``epoch_ns``); returns counts."""
    world = build_world(SimOptions(plant=plant_path, seed=seed, anomaly_rate_per_h=anomaly_rate_per_h,
                                   wear_fraction=0.0, epoch_ns=epoch_ns), plant)
    table = world.table
    n = len(table)
    model = world.model(np.arange(n), seed)
    prefixes = SeriesPrefixes.build(schema.M_SAMPLES, site=table.site, gateway=gateway, ids=table.ids,
                                    machines=table.signal_machines())
    per_write = max(1, lines_per_write // max(n, 1))
    sig = np.tile(np.arange(n, dtype=np.int64), per_write)
    samples = 0
    ticks = list(range(start_s + every_s - 1, start_s + seconds, every_s))
    for c in range(0, len(ticks), per_write):
        part = ticks[c:c + per_write]
        vals = np.empty((len(part), n))
        for i, k in enumerate(part):
            vals[i] = model.step(k, float(k))
        ts = np.repeat(np.array([epoch_ns + k * 1_000_000_000 for k in part], dtype=np.int64), n)
        v = vals.ravel()
        q = np.where(np.isfinite(v), 0, 2).astype(np.uint8)
        lines = build_lines(prefixes, ts, sig[: v.shape[0]], v, q)
        sink.write(lines.tobytes())
        samples += v.shape[0]
    return Written(samples, len(ticks), world)


def write_episode(sink: InfluxSink, *, site: str, gateway: str, machine: str, signal: str, kind: str,
                  start_ns: int, end_ns: int, peak: float = 1.0) -> None:
    """One closed alarm episode in the ``events`` measurement, as the ingestor stores the edge's events."""
    tags = {schema.TAG_SITE: site, schema.TAG_GATEWAY: gateway, schema.TAG_MACHINE: machine,
            schema.TAG_SIGNAL: signal, schema.TAG_KIND: kind}
    fields = {schema.F_ACTIVE: 0, schema.F_STATE: schema.EventState.CLOSED.value, schema.F_PEAK: peak,
              schema.F_DURATION_S: (end_ns - start_ns) / 1e9, schema.F_END_MS: end_ns // 1_000_000}
    sink.write((schema.format_point(schema.M_EVENTS, tags, fields, start_ns) + "\n").encode())
