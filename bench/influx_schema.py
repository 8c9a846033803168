"""Narrow vs wide InfluxDB schema: ingest rate and dashboard query times against a real InfluxDB 1.x.

    python bench/influx_schema.py [--machines 10] [--signals 300] [--seconds 900] [--repeat 7]

Starts its own InfluxDB (plantwire.services.InfluxDB1, Debian's 1.6) in a temporary directory and
compares, on the same simulated plant (``machines`` x ``signals`` at 1 Hz for ``seconds``):

- **narrow** (what cloud.schema ships): one series per signal,
  ``samples,site,gateway,machine,signal value=<f>,quality=<q>i <ts>``, built by lineproto.build_lines;
- **wide**: one row per machine per timestamp, one field per signal,
  ``samples_wide,site,gateway,machine s000=<f>,s001=<f>,... <ts>``. No per-sample quality (it would
  double the fields), which favours wide.

Ingest: pre-built line protocol POSTed to ``/write`` by one writer, ``--batch`` values per request for
both layouts, so the figure is the server's, not the builder's. Queries: the dashboards' shapes
(one signal over an hour at 10 s, five signals of a machine, the latest value of every signal of a
machine, one signal's 1-minute means over the whole range, a bucketed mean of one signal over the
whole range), each run ``--repeat`` times on the warm server; the median is printed. Prints a
Markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cloud.grafana.simdata import sample_columns
from cloud.sinks.lineproto import SeriesPrefixes, build_lines
from plantwire.lifeline import stop_on_signals
from plantwire.procstat import sample
from plantwire.services import InfluxDB1

SITE, GATEWAY = "north", "gw0"


def _post(url: str, db: str, body: bytes) -> None:
    req = urllib.request.Request(f"{url}/write?db={db}&precision=ns", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=120) as resp:
        if resp.status != 204:
            raise RuntimeError(f"write: HTTP {resp.status}")


def _query(url: str, db: str, q: str) -> int:
    body = urllib.parse.urlencode({"db": db, "q": q}).encode()
    with urllib.request.urlopen(urllib.request.Request(f"{url}/query", data=body), timeout=300) as resp:
        doc = json.loads(resp.read())
    res = doc["results"][0]
    if "error" in res:
        raise RuntimeError(f"{q}: {res['error']}")
    return sum(len(s["values"]) for s in res.get("series", []))


def _chunks(data: bytes, line_end: np.ndarray, per: int) -> list[bytes]:
    out, start = [], 0
    for k in range(per - 1, len(line_end) + per - 1, per):
        end = int(line_end[min(k, len(line_end) - 1)])
        out.append(data[start:end])
        start = end
    return out


def build_narrow(machines: int, signals: int, start_ns: int, seconds: int, per: int) -> tuple[list[bytes], int]:
    ids = [f"m{m:02d}.s{k:03d}" for m in range(machines) for k in range(signals)]
    mach = [f"m{m:02d}" for m in range(machines) for _ in range(signals)]
    prefixes = SeriesPrefixes.build("samples", site=SITE, gateway=GATEWAY, ids=ids, machines=mach)
    ts, sig, value, quality = sample_columns(len(ids), start_ns, seconds, 1.0)
    lines = build_lines(prefixes, ts, sig, value, quality)
    return _chunks(lines.tobytes(), lines.line_end, per), len(ts)


def build_wide(
    machines: int, signals: int, start_ns: int, seconds: int, per: int, *, aligned: bool = True
) -> tuple[list[bytes], int]:
    """Wide rows; ``aligned=False`` gives every signal its own millisecond offset within the second.

    Aligned is the Modbus case (one timestamp per block read of a device); unaligned is OPC-UA,
    where every value carries its own source timestamp and a "row" holds the fields that happen to
    share one, here exactly one.
    """
    n = machines * signals
    ts, _sig, value, _q = sample_columns(n, start_ns, seconds, 1.0)
    vals = value.reshape(seconds, machines, signals)
    names = [f"s{k:03d}" for k in range(signals)]
    rows: list[str] = []
    for t in range(seconds):
        stamp = int(ts[t * n])
        for m in range(machines):
            head = f"samples_wide,gateway={GATEWAY},machine=m{m:02d},site={SITE} "
            if aligned:
                fields = ",".join(f"{k}={v!r}" for k, v in zip(names, vals[t, m].tolist(), strict=True))
                rows.append(f"{head}{fields} {stamp}")
            else:
                rows.extend(
                    f"{head}{k}={v!r} {stamp + (i * 7919 % 1000) * 1_000_000}"
                    for i, (k, v) in enumerate(zip(names, vals[t, m].tolist(), strict=True))
                )
    rows_per = max(1, per // signals) if aligned else per
    chunks = ["\n".join(rows[i : i + rows_per]).encode() + b"\n" for i in range(0, len(rows), rows_per)]
    return chunks, n * seconds


def ingest(url: str, db: str, chunks: list[bytes], values: int, pid: int) -> tuple[float, float]:
    """Values per second and influxd CPU (% of one core) for posting all chunks in sequence."""
    cpu0 = sample(pid).cpu_s
    t0 = time.perf_counter()
    for c in chunks:
        _post(url, db, c)
    dt = time.perf_counter() - t0
    return values / dt, 100.0 * (sample(pid).cpu_s - cpu0) / dt


def queries(start_ns: int, seconds: int, machines: int, signals: int) -> dict[str, tuple[str, str]]:
    m, k = f"m{min(3, machines - 1):02d}", f"s{min(7, signals - 1):03d}"
    end = start_ns + seconds * 1_000_000_000
    hour = f"time >= {end - 3600 * 10**9} AND time < {end}"
    full = f"time >= {start_ns} AND time < {end}"
    five_n = " OR ".join(f"\"signal\" = '{m}.s{i:03d}'" for i in range(min(5, signals)))
    five_w = ", ".join(f'mean("s{i:03d}")' for i in range(min(5, signals)))
    return {
        "1 signal, last hour, 10 s buckets": (
            f"SELECT mean(\"value\") FROM samples WHERE \"signal\" = '{m}.{k}' AND {hour} GROUP BY time(10s)",
            f"SELECT mean(\"{k}\") FROM samples_wide WHERE \"machine\" = '{m}' AND {hour} GROUP BY time(10s)",
        ),
        "5 signals of a machine, last hour, 10 s": (
            f"SELECT mean(\"value\") FROM samples WHERE ({five_n}) AND {hour} GROUP BY time(10s), \"signal\"",
            f"SELECT {five_w} FROM samples_wide WHERE \"machine\" = '{m}' AND {hour} GROUP BY time(10s)",
        ),
        "latest value of every signal of a machine": (
            f"SELECT last(\"value\") FROM samples WHERE \"machine\" = '{m}' AND {full} GROUP BY \"signal\"",
            f"SELECT last(*) FROM samples_wide WHERE \"machine\" = '{m}' AND {full}",
        ),
        "1 signal, whole range, 1 min buckets": (
            f"SELECT mean(\"value\"), min(\"value\"), max(\"value\") FROM samples WHERE \"signal\" = '{m}.{k}' "
            f"AND {full} GROUP BY time(1m)",
            f"SELECT mean(\"{k}\"), min(\"{k}\"), max(\"{k}\") FROM samples_wide WHERE \"machine\" = '{m}' "
            f"AND {full} GROUP BY time(1m)",
        ),
        "whole machine mean per minute (all its signals)": (
            f"SELECT mean(\"value\") FROM samples WHERE \"machine\" = '{m}' AND {full} GROUP BY time(1m)",
            f"SELECT mean(*) FROM samples_wide WHERE \"machine\" = '{m}' AND {full} GROUP BY time(1m)",
        ),
    }


def _time_query(url: str, db: str, q: str, repeat: int) -> tuple[float, int]:
    rows = _query(url, db, q)  # warm
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        _query(url, db, q)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000, rows


def _spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):,.0f} ({min(xs) / 1e3:,.0f}-{max(xs) / 1e3:,.0f} k)"


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--machines", type=int, default=10)
    p.add_argument("--signals", type=int, default=300, help="signals per machine")
    p.add_argument("--seconds", type=int, default=600, help="seconds of 1 Hz data")
    p.add_argument("--batch", type=int, default=5000, help="values per write request")
    p.add_argument("--rounds", type=int, default=3, help="ingest rounds, layouts interleaved; medians printed")
    p.add_argument("--repeat", type=int, default=7, help="runs per query; median printed")
    args = p.parse_args()
    start_ns = (time.time_ns() - args.seconds * 10**9) // 10**9 * 10**9
    print(f"plant: {args.machines} machines x {args.signals} signals at 1 Hz for {args.seconds} s "
          f"= {args.machines * args.signals * args.seconds:,} values per layout", flush=True)
    t0 = time.perf_counter()
    narrow, n_values = build_narrow(args.machines, args.signals, start_ns, args.seconds, args.batch)
    t_narrow = time.perf_counter() - t0
    value_only = [re.sub(rb",quality=\d+i", b"", c) for c in narrow]
    t0 = time.perf_counter()
    wide, w_values = build_wide(args.machines, args.signals, start_ns, args.seconds, args.batch)
    t_wide = time.perf_counter() - t0
    loose, l_values = build_wide(args.machines, args.signals, start_ns, args.seconds, args.batch, aligned=False)
    layouts = {
        "narrow": (narrow, n_values),
        "narrow_noq": (value_only, n_values),
        "wide": (wide, w_values),
        "wide_unaligned": (loose, l_values),
    }
    heads = ["narrow (shipped)", "narrow without quality", "wide, aligned timestamps", "wide, per-signal timestamps"]
    print(f"line protocol built: narrow in {t_narrow:.2f} s (vectorised), wide in {t_wide:.2f} s (Python)")
    with tempfile.TemporaryDirectory(prefix="influx_schema_") as tmp, InfluxDB1(Path(tmp)) as server:
        assert server.pid is not None
        rates: dict[str, list[float]] = {k: [] for k in layouts}
        cpus: dict[str, list[float]] = {k: [] for k in layouts}
        _query(server.url, "warmup", 'CREATE DATABASE "warmup"')
        ingest(server.url, "warmup", narrow[:50], 1, server.pid)  # first writes of a fresh server are slower
        for rnd in range(args.rounds):
            for name, (chunks, values) in layouts.items():
                db = f"{name}_{rnd}"
                _query(server.url, db, f'CREATE DATABASE "{db}"')
                rate, cpu = ingest(server.url, db, chunks, values, server.pid)
                rates[name].append(rate)
                cpus[name].append(cpu)
                print(f"round {rnd}: {name}: {rate:,.0f} values/s, influxd {cpu:.0f} % CPU", flush=True)
        time.sleep(2)
        disk = {k: (_du(Path(tmp) / "data" / f"{k}_0") + _du(Path(tmp) / "wal" / f"{k}_0")) / 1e6 for k in layouts}
        print()
        print("| | " + " | ".join(heads) + " |")
        print("|---|---|---|---|---|")
        print(f"| ingest, values/s (1 writer, {args.batch} values/request; median of {args.rounds}, min-max) | "
              + " | ".join(_spread(rates[k]) for k in layouts) + " |")
        print("| influxd CPU during ingest (median) | "
              + " | ".join(f"{statistics.median(cpus[k]):.0f} %" for k in layouts) + " |")
        print("| line protocol per value | "
              + " | ".join(f"{sum(map(len, c)) / v:.1f} B" for c, v in layouts.values()) + " |")
        print(f"| series | {args.machines * args.signals:,} | same | {args.machines} x {args.signals} fields | same |")
        print("| data + WAL on disk after ingest | " + " | ".join(f"{disk[k]:.1f} MB" for k in layouts) + " |")
        for label, (qn, qw) in queries(start_ns, args.seconds, args.machines, args.signals).items():
            cells = []
            for name, q in (("narrow", qn), ("narrow_noq", qn), ("wide", qw), ("wide_unaligned", qw)):
                ms, rows = _time_query(server.url, f"{name}_0", q, args.repeat)
                cells.append(f"{ms:.1f} ms ({rows} rows)")
            print(f"| query: {label} (median of {args.repeat}) | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    with stop_on_signals():  # SIGTERM/SIGINT/SIGHUP run the clean-up: no child is left behind
        code = main()
    sys.exit(code)
