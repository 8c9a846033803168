"""InfluxDB's CPU per stored sample, alone: server settings and request shapes compared.

InfluxDB 1.6 is the largest CPU consumer of the end-to-end pipeline (bench/e2e.py). This script
measures what it costs per point with nothing else of the pipeline running: a fresh influxd per
variant (``plantwire.services.InfluxDB1`` with the variant's ``InfluxTuning``), the demo plant's
15,000 series (its real signal ids and machines, the ingestor's own line protocol from
``cloud.sinks.lineproto``), Modbus-like values (float32 read as float64) at 10 Hz per signal, posted
to ``/write`` by one or more kept-alive connections as the ingestor does.

CPU is influxd's own user + system seconds (``/proc``), so the figure is robust to other load on a
shared box (wall-clock rates are not, and are printed only as a hint). Two figures per run:

- ``write``: CPU during the writes, per million points;
- ``all``: the same plus what influxd spends after the last write until it is idle again (cache
  snapshots and compactions the writes caused; settled when a 3 s window uses < 3 % of a core, at
  most ``--settle`` seconds). The honest cost of a point is this one.

Variants run interleaved for ``--rounds`` rounds; the JSON line per variant holds the medians.

    .venv/bin/python bench/influx_cost.py [--points 3000000] [--rounds 3] [--variants stock,tuned,...]
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import itertools
import json
import os
import platform
import queue
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cloud.config import IngestSettings  # noqa: E402
from cloud.sinks.lineproto import SeriesPrefixes, build_lines  # noqa: E402
from cloud.sinks.split import lines_per_request  # noqa: E402
from plantwire.configfile import load_plant  # noqa: E402
from plantwire.lifeline import stop_on_signals  # noqa: E402
from plantwire.plant import expand  # noqa: E402
from plantwire.procstat import sample  # noqa: E402
from plantwire.services import STOCK_INFLUX, InfluxDB1, InfluxTuning  # noqa: E402

DB = "plantwire"


@dataclasses.dataclass(frozen=True)
class Variant:
    """Server settings plus the client's request shape."""

    tuning: InfluxTuning
    lines_per_request: int = 10_000
    connections: int = 1
    # ``quality=0i`` on good points too, as the ingestor wrote them before 2026-12-03 (since then quality is
    # only on points that are not good, cloud/sinks/lineproto.py); to compare the two schemas
    with_quality: bool = False
    precision_ms: bool = False  # timestamps written in ms (``precision=ms``): the same points, 6 digits shorter


VARIANTS: dict[str, Variant] = {
    # influxd's defaults and the ingestor's former 10,000 lines per request
    "stock": Variant(STOCK_INFLUX),
    # what plantwire runs now: plantwire.services' settings, and the request size the ingestor's defaults
    # give a 10 Hz demo group (~123,000 lines) on the demo's two connections (cloud.sinks.split)
    "tuned": Variant(
        InfluxTuning(), lines_per_request=lines_per_request(123_000, IngestSettings().lines_per_request, 2)
    ),
    "fsync100ms": Variant(dataclasses.replace(STOCK_INFLUX, wal_fsync_delay="100ms")),
    "gogc200": Variant(dataclasses.replace(STOCK_INFLUX, gogc=200)),
    "gogc400": Variant(dataclasses.replace(STOCK_INFLUX, gogc=400)),
    "snap256m": Variant(dataclasses.replace(STOCK_INFLUX, cache_snapshot_memory_size="256m")),
    "snap100m": Variant(dataclasses.replace(STOCK_INFLUX, cache_snapshot_memory_size="100m")),
    "tsi1": Variant(dataclasses.replace(STOCK_INFLUX, index_version="tsi1")),
    "req50k": Variant(STOCK_INFLUX, lines_per_request=50_000),
    "req31k": Variant(STOCK_INFLUX, lines_per_request=31_000),  # a 123 k group in 4 even requests
    "req100k": Variant(STOCK_INFLUX, lines_per_request=100_000),
    "req50k_gogc200": Variant(dataclasses.replace(STOCK_INFLUX, gogc=200), lines_per_request=50_000),
    "req50k_gogc400": Variant(dataclasses.replace(STOCK_INFLUX, gogc=400), lines_per_request=50_000),
    "req2k": Variant(STOCK_INFLUX, lines_per_request=2_000),
    "conn2": Variant(STOCK_INFLUX, connections=2),
    "stock_q": Variant(STOCK_INFLUX, with_quality=True),  # the stock server, the schema before 2026-12-03
    "tuned_q": Variant(
        InfluxTuning(), lines_per_request=lines_per_request(123_000, IngestSettings().lines_per_request, 2),
        with_quality=True,
    ),
    "req50k_ms": Variant(STOCK_INFLUX, lines_per_request=50_000, precision_ms=True),
}


_QUALITY_AFTER_VALUE = re.compile(rb"( value=[^ ]+) ")


def plant_prefixes(config: Path) -> tuple[SeriesPrefixes, np.ndarray]:
    """The demo plant's series keys as the ingestor builds them, and each signal's device (for timestamps)."""
    table = expand(load_plant(config / "plant.yaml"))
    prefixes = SeriesPrefixes.build(
        "samples", site=table.site, gateway="gw-demo", ids=table.ids, machines=table.signal_machines()
    )
    return prefixes, table.device.astype(np.int64)


def bodies(
    prefixes: SeriesPrefixes, device: np.ndarray, t0: int, points: int, per_req: int, with_quality: bool, seed: int = 1,
    precision_ms: bool = False,
) -> Iterator[bytes]:
    """Request bodies of ``per_req`` lines: rounds of every signal at 10 Hz from ``t0``, random walks as float32."""
    n = len(prefixes)
    rng = np.random.default_rng(seed)
    level = rng.normal(50.0, 20.0, n).astype(np.float32)
    sig = np.arange(n, dtype=np.uint32)
    quality = np.zeros(n, np.uint8)
    pending = b""
    done = 0
    k = 0
    while done < points:
        level += rng.normal(0.0, 0.05, n).astype(np.float32)
        # one read per device per round, devices a millisecond apart (Modbus ticks are whole ms)
        ts = t0 + k * 100_000_000 + device * 1_000_000
        lines = build_lines(prefixes, ts, sig, level.astype(np.float64), quality)
        fresh = lines.tobytes()
        if with_quality:  # every point good here: insert the field the old schema wrote before the timestamp
            fresh = _QUALITY_AFTER_VALUE.sub(rb"\1,quality=0i ", fresh)
        data = pending + fresh
        if precision_ms:
            data = data.replace(b"000000\n", b"\n")
        k += 1
        done += n
        # cut into per_req lines
        starts = [0]
        pos = 0
        count = 0
        while True:
            nl = data.find(b"\n", pos)
            if nl < 0:
                break
            pos = nl + 1
            count += 1
            if count == per_req:
                starts.append(pos)
                count = 0
        for a, b in itertools.pairwise(starts):
            yield data[a:b]
        pending = data[starts[-1] :]
    if pending:
        yield pending


def post(url: str, path: str, q: queue.Queue[bytes | None], errors: list[str]) -> None:
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
    while (body := q.get()) is not None:
        conn.request("POST", path, body=body, headers={"Content-Type": "text/plain"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 204:
            errors.append(f"{resp.status}: {data[:200]!r}")
    conn.close()


def user_sys_s(pid: int) -> tuple[float, float]:
    """influxd's user and system CPU seconds (system time: syscalls, fsync and page-cache work)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tck, int(fields[12]) / tck


def cpu_rate(pid: int, window_s: float) -> float:
    c0 = sample(pid).cpu_s
    time.sleep(window_s)
    return (sample(pid).cpu_s - c0) / window_s


def measure(
    name: str, v: Variant, prefixes: SeriesPrefixes, device: np.ndarray, want: int, settle_s: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"influx-cost-{name}-") as tmp:
        influx = InfluxDB1(Path(tmp), tuning=v.tuning).start()
        try:
            assert influx.pid is not None
            influx.query(f'CREATE DATABASE "{DB}"')
            path = "/write?" + urllib.parse.urlencode({"db": DB, "precision": "ms" if v.precision_ms else "ns"})
            # Series creation is a one-off per signal: done (and its CPU excluded) before the window.
            t0_ns = (time.time_ns() // 10**9 - 3600) * 10**9  # the warm-up's points are overwritten by the first round
            warm = list(bodies(
                prefixes, device, t0_ns, len(prefixes), 10_000, v.with_quality, seed=99, precision_ms=v.precision_ms
            ))
            errors: list[str] = []
            wq: queue.Queue[bytes | None] = queue.Queue()
            for b in warm:
                wq.put(b)
            wq.put(None)
            post(influx.url, path, wq, errors)
            time.sleep(1.0)
            q: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
            threads = [
                threading.Thread(target=post, args=(influx.url, path, q, errors), daemon=True)
                for _ in range(v.connections)
            ]
            cpu0 = sample(influx.pid).cpu_s
            us0 = user_sys_s(influx.pid)
            t0 = time.monotonic()
            for t in threads:
                t.start()
            points = 0  # whole rounds of every signal: at least the points asked for
            for body in bodies(
                prefixes, device, t0_ns, want, v.lines_per_request, v.with_quality, precision_ms=v.precision_ms
            ):
                points += body.count(b"\n")
                q.put(body)
            for _ in threads:
                q.put(None)
            for t in threads:
                t.join()
            wall = time.monotonic() - t0
            cpu_write = sample(influx.pid).cpu_s - cpu0
            t_settle = time.monotonic()
            while time.monotonic() - t_settle < settle_s and cpu_rate(influx.pid, 3.0) >= 0.03:
                pass
            s = sample(influx.pid)
            cpu_all = s.cpu_s - cpu0
            us1 = user_sys_s(influx.pid)
            count = influx.rows("SELECT count(value) FROM samples WHERE time > now() - 2h", DB)
            stored = int(count[0]["count"]) if count else 0
            if errors:
                raise RuntimeError(f"{name}: {len(errors)} writes failed, first: {errors[0]}")
            return {
                "cpu_s_per_mpoint_write": round(cpu_write / points * 1e6, 2),
                "cpu_s_per_mpoint_all": round(cpu_all / points * 1e6, 2),
                "user_us_per_point": round((us1[0] - us0[0]) / points * 1e6, 2),
                "sys_us_per_point": round((us1[1] - us0[1]) / points * 1e6, 2),
                "points_per_s_wall": round(points / wall),
                "points": points,
                "stored": stored,
                "peak_rss_mb": round(s.rss_peak_bytes / 2**20, 1),
            }
        finally:
            influx.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "demo")
    p.add_argument("--points", type=int, default=3_000_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--settle", type=float, default=60.0, help="at most this long for influxd to go idle after writing")
    p.add_argument("--variants", default="stock,tuned", help=f"comma-separated, of: {','.join(VARIANTS)}")
    a = p.parse_args()
    names = [x for x in a.variants.split(",") if x]
    for n in names:
        if n not in VARIANTS:
            p.error(f"--variants: unknown {n!r}")
    prefixes, device = plant_prefixes(a.config)
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for r in range(a.rounds):
        for n in names:
            res = measure(n, VARIANTS[n], prefixes, device, a.points, a.settle)
            runs[n].append(res)
            print(f"round {r + 1} {n}: {res}", file=sys.stderr, flush=True)
    for n in names:
        rs = runs[n]
        v = VARIANTS[n]
        print(
            json.dumps(
                {
                    "variant": n,
                    "date": time.strftime("%Y-%m-%d %H:%M"),
                    "machine": f"{platform.machine()} nproc={os.cpu_count()}",
                    "points": rs[0]["points"],
                    "series": len(prefixes),
                    "rounds": len(rs),
                    "tuning": dataclasses.asdict(v.tuning),
                    "lines_per_request": v.lines_per_request,
                    "connections": v.connections,
                    "with_quality": v.with_quality,
                    "influxd_cpu_s_per_mpoint_write": statistics.median(x["cpu_s_per_mpoint_write"] for x in rs),
                    "influxd_cpu_s_per_mpoint_all": statistics.median(x["cpu_s_per_mpoint_all"] for x in rs),
                    "all_runs": [x["cpu_s_per_mpoint_all"] for x in rs],
                    "user_sys_us_per_point": [
                        statistics.median(x["user_us_per_point"] for x in rs),
                        statistics.median(x["sys_us_per_point"] for x in rs),
                    ],
                    "points_per_s_wall": statistics.median(x["points_per_s_wall"] for x in rs),
                    "stored_ok": all(x["stored"] == x["points"] for x in rs),
                    "peak_rss_mb": max(x["peak_rss_mb"] for x in rs),
                    "loadavg_end": open("/proc/loadavg").read().split()[:3],
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    with stop_on_signals():
        code = main()
    sys.exit(code)
