"""Ingest speed: the ingestor against the InfluxDB ceiling and a naive writer, in one run, same server.

Prints one JSON line (and a short table on stderr) with, against one InfluxDB 1.6 started here:

- ``ceiling``: the server's rate for pre-built line protocol posted raw to ``/write`` (one writer,
  kept-alive connection, the ingestor's request size), nothing else on the client's clock;
- ``ingestor``: :class:`cloud.app.Ingestor` draining telemetry batches that were queued in Mosquitto
  for its persistent session beforehand: MQTT receive, decode, line protocol, write, PUBACK, ledger,
  ack watermark; from start until every sample is written and every message acknowledged;
- ``naive``: influxdb-client with one ``Point`` per sample, serialised by the client
  (``Point.to_line_protocol``) and posted to ``/write`` in the same request size. (influxdb-client
  itself cannot write to 1.6, which has no ``/api/v2/write``: shared/MEASURED.md trap 6; the cost
  that makes it naive is the object per sample, which is all on the client side.)

Each writer gets a fresh database, so none overwrites another's points. Goals (issue 7): ingestor
>= 80 % of the ceiling and >= 10x the naive writer.

    python bench/ingest.py [--signals 15000] [--samples 1500000] [--batch 15000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cloud.app import Ingestor
from cloud.config import CloudConfig
from cloud.sinks.lineproto import SeriesPrefixes, build_lines
from plantwire import wire
from plantwire.lifeline import stop_on_signals
from plantwire.procstat import sample
from plantwire.services import InfluxDB1, Mosquitto, VictoriaMetrics

SITE = "bench"
GW = "gw-bench"
HASH = b"benchtbl"


def make_table(n: int) -> tuple[list[str], list[str]]:
    machines = [f"line{i // 3000}.m{(i // 300) % 10:02d}" for i in range(n)]
    ids = [f"{m}.sig{i % 300:03d}" for i, m in enumerate(machines)]
    return ids, machines


def make_batches(n_signals: int, samples: int, batch: int) -> list[dict[str, np.ndarray]]:
    """Demo-like data: every signal once per 'second', random walks rounded like real sensors."""
    rng = np.random.default_rng(1)
    t0 = time.time_ns() - 3 * 24 * 3600 * 10**9
    out = []
    level = rng.normal(50, 20, n_signals)
    done = 0
    k = 0
    while done < samples:
        n = min(batch, samples - done)
        sig = (np.arange(done, done + n) % n_signals).astype(np.uint32)
        level[sig] += rng.normal(0, 0.5, n)
        out.append(
            {
                "ts_ns": t0 + (np.arange(done, done + n) // n_signals) * 10**9 + sig.astype(np.int64) * 1000,
                "signal": sig,
                "value": np.round(level[sig], 3),
                "quality": np.zeros(n, dtype=np.uint8),
            }
        )
        done += n
        k += 1
    return out


WARM_TS_NS = 10**18  # 2001: far from the benchmark's data


Server = InfluxDB1 | VictoriaMetrics


def write_path(server: Server, db: str) -> str:
    """InfluxDB 1.6: ``/write?db=``; VictoriaMetrics: the v2 path the ingestor and influxdb-client use."""
    if isinstance(server, VictoriaMetrics):
        return "/api/v2/write?" + urllib.parse.urlencode({"bucket": db, "org": "o", "precision": "ns"})
    return "/write?" + urllib.parse.urlencode({"db": db, "precision": "ns"})


def warm(influx: Server, db: str, prefixes: SeriesPrefixes) -> None:
    """Create the database and every series once, untimed: each writer is measured in steady state,
    not paying the one-off series creation (the index insert that a real plant pays once per signal)."""
    if isinstance(influx, InfluxDB1):
        influx.query(f'CREATE DATABASE "{db}"')
    n = len(prefixes)
    lines = build_lines(
        prefixes, np.full(n, WARM_TS_NS, np.int64), np.arange(n, dtype=np.uint32), np.zeros(n), np.zeros(n, np.uint8)
    )
    post_all(influx, db, [bytes(c) for c in lines.chunks(10_000)])


def post_all(server: Server, db: str, bodies: list[bytes]) -> float:
    u = urllib.parse.urlsplit(server.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    path = write_path(server, db)
    t0 = time.perf_counter()
    for body in bodies:
        conn.request("POST", path, body=body, headers={"Content-Type": "text/plain"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 204:
            raise RuntimeError(f"write failed: {resp.status}")
    dt = time.perf_counter() - t0
    conn.close()
    return dt


def ceiling(
    influx: Server, db: str, prefixes: SeriesPrefixes, batches: list[dict[str, np.ndarray]], per_req: int
) -> float:
    warm(influx, db, prefixes)
    bodies: list[bytes] = []
    for b in batches:
        lines = build_lines(prefixes, b["ts_ns"], b["signal"], b["value"], b["quality"])
        bodies.extend(bytes(c) for c in lines.chunks(per_req))
    n = sum(len(b["ts_ns"]) for b in batches)
    return n / post_all(influx, db, bodies)


def naive(
    influx: Server,
    prefixes: SeriesPrefixes,
    ids: list[str],
    machines: list[str],
    batches: list[dict[str, np.ndarray]],
    per_req: int,
    limit: int,
) -> tuple[float, int, float]:
    from influxdb_client import Point, WritePrecision

    warm(influx, "naive", prefixes)
    u = urllib.parse.urlsplit(influx.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    path = write_path(influx, "naive")
    v2 = None
    if isinstance(influx, VictoriaMetrics):  # the client's own synchronous write path, Points as they are
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        v2 = InfluxDBClient(url=influx.url, token="t", org="o").write_api(write_options=SYNCHRONOUS)
    done = 0
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    pending: list[str] = []
    for b in batches:
        for ts, s, v, q in zip(
            b["ts_ns"].tolist(), b["signal"].tolist(), b["value"].tolist(), b["quality"].tolist(), strict=True
        ):
            p = (
                Point("samples")
                .tag("site", SITE)
                .tag("gateway", GW)
                .tag("machine", machines[s])
                .tag("signal", ids[s])
                .field("value", v)
                .field("quality", q)
                .time(ts, WritePrecision.NS)
            )
            pending.append(p if v2 is not None else p.to_line_protocol())
            done += 1
            if len(pending) == per_req:
                if v2 is not None:
                    v2.write(bucket="naive", org="o", record=pending, write_precision=WritePrecision.NS)
                else:
                    body = "\n".join(pending).encode()
                    conn.request("POST", path, body=body, headers={"Content-Type": "text/plain"})
                    conn.getresponse().read()
                pending.clear()
            if done >= limit:
                break
        if done >= limit:
            break
    if pending and v2 is not None:
        v2.write(bucket="naive", org="o", record=pending, write_precision=WritePrecision.NS)
    elif pending:
        conn.request("POST", path, body="\n".join(pending).encode(), headers={"Content-Type": "text/plain"})
        conn.getresponse().read()
    dt = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    conn.close()
    return done / dt, done, cpu / done * 1e6


def ingestor_rate(
    tmp: Path,
    broker: Mosquitto,
    influx: Server,
    prefixes: SeriesPrefixes,
    ids: list[str],
    machines: list[str],
    batches: list[dict[str, np.ndarray]],
    per_req: int,
    name: str = "ingestor",
    connections: int = 1,
) -> tuple[float, float, dict[str, float]]:
    warm(influx, name, prefixes)
    cfg = CloudConfig.model_validate(
        {
            "mqtt": {"host": broker.host, "port": broker.port, "client_id": f"bench-{name}", "max_inflight": 1000},
            "influx": {
                "api": "v2" if isinstance(influx, VictoriaMetrics) else "v1",
                "url": influx.url,
                "database": name,
                "org": "o",
            },
            "state_dir": str(tmp / name),
            "metrics": {"port": 0},
            "ingest": {"lines_per_request": per_req, "write_connections": connections},
        }
    )
    # 1) create the persistent session (subscription), 2) queue every batch in the broker while the
    # ingestor is away, 3) time the drain: what a real ingestor does after an outage, at full speed.
    ing = Ingestor(cfg)
    ing.start()
    assert ing.source.wait_subscribed(10)
    ing.close()
    pub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-pub", protocol=mqtt.MQTTv5)
    pub.max_inflight_messages_set(1000)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    table = wire.encode_signal_table(
        gateway=GW,
        table_hash=HASH,
        site=SITE,
        ids=ids,
        machines=machines,
        units=[""] * len(ids),
        kinds=["analog"] * len(ids),
    )
    infos = [pub.publish(wire.topic(SITE, GW, "signals"), table, qos=1, retain=True)]
    total = 0
    wire_bytes = 0
    for seq, b in enumerate(batches):
        payload = wire.encode_batch(gateway=GW, boot_epoch_ns=1, seq=seq, table_hash=HASH, **b)
        wire_bytes += len(payload)
        total += len(b["ts_ns"])
        infos.append(pub.publish(wire.topic(SITE, GW, "telemetry"), payload, qos=1))
    for info in infos:
        info.wait_for_publish(60)
    pub.disconnect()
    pub.loop_stop()

    ing = Ingestor(cfg)
    stop = threading.Event()
    server_pid = getattr(influx, "pid", None)
    server_cpu0 = sample(server_pid).cpu_s if server_pid else 0.0
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    ing.start()
    worker = threading.Thread(target=ing.run, args=(stop,), daemon=True)
    worker.start()
    while not (ing.m_samples.get() >= total and ing.pending() == 0):
        time.sleep(0.005)
        if time.perf_counter() - t0 > 600:
            raise TimeoutError("ingestor did not drain within 600 s")
    dt = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    server_cpu = sample(server_pid).cpu_s - server_cpu0 if server_pid else 0.0
    stop.set()
    worker.join(30)
    ing.close()
    extra = {
        "cpu_us_per_sample": round(cpu / total * 1e6, 3),
        # The server's CPU for the same samples (its process, robust to other load on the box).
        "server_cpu_us_per_sample": round(server_cpu / total * 1e6, 3),
        "wire_bytes_per_sample": round(wire_bytes / total, 2),
        "influx_requests": ing.sink.stats.requests,  # type: ignore[attr-defined]
        "influx_write_seconds": round(ing.sink.stats.seconds, 3),  # type: ignore[attr-defined]
        "samples_written": int(ing.m_samples.get()),
    }
    return total / dt, dt, extra


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--signals", type=int, default=15_000)
    ap.add_argument("--samples", type=int, default=1_500_000)
    ap.add_argument("--batch", type=int, default=15_000, help="samples per telemetry batch (edge message)")
    ap.add_argument("--lines-per-request", type=int, default=10_000)
    ap.add_argument(
        "--server",
        choices=("influxdb1", "victoria"),
        default="influxdb1",
        help="influxdb1: Debian's 1.6 over /write (v1 path); victoria: VictoriaMetrics over /api/v2/write "
        "(v2 path through influxdb-client, and the naive writer uses influxdb-client's own write API)",
    )
    ap.add_argument(
        "--write-connections", type=int, default=1, help="the ingestor's ingest.write_connections (the ceiling uses 1)"
    )
    ap.add_argument("--rounds", type=int, default=3, help="ingestor runs, each between two ceiling runs")
    ap.add_argument("--naive-samples", type=int, default=150_000, help="the naive writer is slow: a prefix only")
    args = ap.parse_args(argv)

    ids, machines = make_table(args.signals)
    prefixes = SeriesPrefixes.build("samples", site=SITE, gateway=GW, ids=ids, machines=machines)
    batches = make_batches(args.signals, args.samples, args.batch)
    build_lines(
        prefixes, batches[0]["ts_ns"][:1], batches[0]["signal"][:1], batches[0]["value"][:1], batches[0]["quality"][:1]
    )  # numba: load the cached kernel outside every clock
    per_req = args.lines_per_request
    ceilings: list[float] = []
    runs: list[tuple[float, float, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="pw-bench-ingest-") as d:
        tmp = Path(d)
        server: Server = VictoriaMetrics(tmp / "vm") if args.server == "victoria" else InfluxDB1(tmp / "influx")
        with server as influx, Mosquitto(tmp / "mqtt") as broker:
            # The box is shared and noisy: ceiling and ingestor alternate (C I C I ... C), each
            # ingestor run is compared with the higher of the two ceilings around it, and the
            # median of those ratios is reported.
            ceilings.append(ceiling(influx, "ceiling0", prefixes, batches, per_req))
            for r in range(args.rounds):
                runs.append(
                    ingestor_rate(
                        tmp,
                        broker,
                        influx,
                        prefixes,
                        ids,
                        machines,
                        batches,
                        per_req,
                        f"ingestor{r}",
                        args.write_connections,
                    )
                )
                ceilings.append(ceiling(influx, f"ceiling{r + 1}", prefixes, batches, per_req))
            nav, nav_n, nav_cpu = naive(influx, prefixes, ids, machines, batches, per_req, args.naive_samples)
            if isinstance(influx, InfluxDB1):
                q = f"SELECT count(value) FROM samples WHERE time > {WARM_TS_NS}"  # all finite here
                stored = [influx.rows(q, f"ingestor{r}")[0]["count"] for r in range(args.rounds)]
            else:  # VictoriaMetrics: the ingestor's own count of accepted samples
                stored = [int(x[2]["samples_written"]) for x in runs]
    ratios = [runs[r][0] / max(ceilings[r], ceilings[r + 1]) for r in range(args.rounds)]
    mid = sorted(range(args.rounds), key=lambda r: ratios[r])[args.rounds // 2]
    ing, ing_s, extra = runs[mid]
    ceil = max(ceilings[mid], ceilings[mid + 1])
    busy = [x[2]["influx_write_seconds"] / x[1] for x in runs]
    result = {
        "bench": "ingest",
        "server": args.server,
        "signals": args.signals,
        "samples": args.samples,
        "batch_samples": args.batch,
        "lines_per_request": per_req,
        "write_connections": args.write_connections,
        "rounds": args.rounds,
        "ceilings_samples_per_s": [round(c) for c in ceilings],
        "ingestor_runs_samples_per_s": [round(x[0]) for x in runs],
        "ingestor_vs_ceiling_runs": [round(x, 3) for x in ratios],
        "ceiling_samples_per_s": round(ceil),
        "ingestor_samples_per_s": round(ing),
        "ingestor_seconds": round(ing_s, 3),
        "ingestor_vs_ceiling": round(ratios[mid], 3),
        "influx_busy_fraction_runs": [round(b, 3) for b in busy],
        "server_cpu_us_per_sample_runs": [x[2]["server_cpu_us_per_sample"] for x in runs],
        "naive_samples_per_s": round(nav),
        "naive_samples": nav_n,
        "ingestor_vs_naive": round(ing / nav, 1),
        "ingestor_samples_stored": stored,
        **extra,
        "naive_cpu_us_per_sample": round(nav_cpu, 3),
        "client_cpu_vs_naive": round(nav_cpu / extra["cpu_us_per_sample"], 1),
    }
    print(json.dumps(result))
    print(
        f"ceiling {ceil:,.0f}/s  ingestor {ing:,.0f}/s ({ratios[mid]:.0%} of ceiling, median of {args.rounds}; "
        f"InfluxDB busy {min(busy):.0%}-{max(busy):.0%} of the drain)  naive {nav:,.0f}/s (ingestor {ing / nav:.1f}x)  "
        f"client CPU/sample ingestor {extra['cpu_us_per_sample']} us, naive {nav_cpu:.2f} us "
        f"({nav_cpu / extra['cpu_us_per_sample']:.1f}x)  stored {stored}",
        file=sys.stderr,
    )
    return 0 if all(n == args.samples for n in stored) else 1


if __name__ == "__main__":
    with stop_on_signals():  # SIGTERM/SIGINT/SIGHUP run the clean-up: no child is left behind
        code = main()
    sys.exit(code)
