"""Sparkplug B beside the compact wire: what it costs on the edge and on the wire.

Two parts, each printing JSON lines:

1. ``--part encode`` (seconds, no servers): the demo plant's catalogue (15,000 signals); µs per reported
   metric of building DDATA (``encode_data``, per-metric Python by nature) and of the vectorised report-by-
   exception step, and DBIRTH cost per metric; payload bytes per metric.
2. ``--part pipeline`` (minutes): the demo plant through simulator, edge, Mosquitto, ingestor and InfluxDB
   (plantwire.pipeline), once per variant: Sparkplug off, on (any change reported), on with deadbands
   (0.5 % of each signal's range), on with a device per PLC (``--variants``), at the given Modbus rates.
   Per run: edge CPU µs per sample read, compact wire bytes per sample, Sparkplug bytes and metric values
   per sample read, and the end-to-end figures bench/e2e.py prints (samples/s into InfluxDB, lost,
   p50/p99 latency).

    .venv/bin/python bench/sparkplug.py --part encode
    .venv/bin/python bench/sparkplug.py --part pipeline --rates 1,10 --duration 60
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from e2e import _pids, _quantile_from_histogram, _scrape_raw  # noqa: E402

from edge.sinks import sparkplug_payload as spb  # noqa: E402
from edge.sinks.sparkplug_catalogue import build, exceptions  # noqa: E402
from edge.sinks.sparkplug_settings import SparkplugSettings  # noqa: E402
from plantwire.configfile import load_plant  # noqa: E402
from plantwire.pipeline import Pipeline  # noqa: E402
from plantwire.plant import expand  # noqa: E402
from plantwire.procstat import sample  # noqa: E402

VARIANTS: dict[str, dict[str, Any] | None] = {
    "off": None,
    "on": {"group_id": "bench", "edge_node_id": "edge"},
    "on+deadband": {"group_id": "bench", "edge_node_id": "edge", "deadbands": [{"match": ["*"], "percent": 0.5}]},
    # A device per PLC (43 on the demo plant) instead of per machine (600): fewer, larger DDATA messages.
    "on+plc": {"group_id": "bench", "edge_node_id": "edge", "devices": "plc"},
}


def _machine() -> str:
    return f"{platform.machine()} {platform.node()} nproc={os.cpu_count()} python={platform.python_version()}"


def part_encode(config: Path, repeat: int) -> None:
    table = expand(load_plant(config / "plant.yaml"))
    cat = build(table, SparkplugSettings(group_id="b", edge_node_id="e"), with_health=True)
    n = len(table)
    rng = np.random.default_rng(0)
    value = rng.normal(50, 10, n)
    q = np.zeros(n, dtype=np.uint8)
    codes = spb.quality_codes(q)
    ts = np.full(n, int(time.time() * 1000), dtype=np.int64)
    send_q = np.zeros(n, dtype=bool)
    idx = np.arange(n)
    # DDATA: one payload per device, as the node builds them.
    best = float("inf")
    size = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        size = 0
        for ix in cat.device_metrics:
            ix = ix[ix < n]
            size += len(spb.encode_data(ts_ms=int(ts[0]), seq=1, alias=cat.metrics.alias[ix],
                                        datatype=cat.metrics.datatype[ix], value=value[ix], metric_ts_ms=ts[ix],
                                        quality=codes[ix], send_quality=send_q[ix]))
        best = min(best, time.perf_counter() - t0)
    # Report by exception over a frame of every signal.
    sent = value + rng.normal(0, 0.01, n)
    thr = np.full(n, 0.005)
    rbe = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        exceptions(value, q, sent, q, thr)
        last = np.full(n, -1, dtype=np.int64)
        np.maximum.at(last, idx.astype(np.uint32), np.arange(n, dtype=np.int64))
        rbe = min(rbe, time.perf_counter() - t0)
    birth = float("inf")
    bsize = 0
    for _ in range(max(1, repeat // 2)):
        t0 = time.perf_counter()
        bsize = 0
        for ix in cat.device_metrics:
            bsize += len(spb.encode_birth(ts_ms=int(ts[0]), seq=1, metrics=cat.columns(ix),
                                          value=np.resize(value, ix.size), quality=np.full(ix.size, 192),
                                          metric_ts_ms=np.full(ix.size, ts[0])))
        birth = min(birth, time.perf_counter() - t0)
    # The node's whole frame path (latest per signal, report by exception, a DDATA per device, hand to paho;
    # paho not connected, so no socket work) for a frame where every value changed and one where 20 % did.
    import tempfile

    from edge.config import MqttSettings
    from edge.sinks.sparkplug import NodePhase, SparkplugNode

    frame_us: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        node = SparkplugNode(SparkplugSettings(group_id="b", edge_node_id="e", history="drop"), MqttSettings(),
                             table, Path(tmp))
        node.phase = NodePhase.PUBLISHING
        sig = np.arange(n, dtype=np.uint32)
        for label, frac in (("all_changed", 1.0), ("20pct_changed", 0.2)):
            t_best = float("inf")
            for r in range(repeat):
                v = value + (r + 1) * (rng.random(n) < frac)
                t0 = time.perf_counter()
                node.on_frame(ts, sig, v, q)
                t_best = min(t_best, time.perf_counter() - t0)
            frame_us[f"node_frame_us_per_sample_{label}"] = round(t_best / n * 1e6, 3)
        node.phase = NodePhase.DISCONNECTED  # never connected: no NDEATH to send
        node.stop()
    print(json.dumps({
        **frame_us,
        "part": "encode", "date": time.strftime("%Y-%m-%d %H:%M"), "machine": _machine(), "signals": n,
        "devices": len(cat.device_ids), "metrics": cat.n_metrics,
        "ddata_us_per_metric": round(best / n * 1e6, 3),
        "ddata_bytes_per_metric": round(size / n, 2),
        "rbe_us_per_sample": round(rbe / n * 1e6, 4),
        "dbirth_us_per_metric": round(birth / cat.n_metrics * 1e6, 3),
        "dbirth_bytes_per_metric": round(bsize / cat.n_metrics, 2),
    }), flush=True)


def run_pipeline(config: Path, variant: str, rate: float, duration_s: float, warmup_s: float,
                 state: Path) -> dict[str, Any]:
    shutil.rmtree(state, ignore_errors=True)
    sp = VARIANTS[variant]
    pipe = Pipeline(config, state, modbus_rate_hz=rate, opcua_rate_hz=1.0,
                    edge_overrides={"sparkplug": sp} if sp else None)
    try:
        pipe.start(timeout_s=300)
        time.sleep(warmup_s)
        pids = _pids(pipe)
        cpu0 = {k: sample(p).cpu_s for k, p in pids.items()}
        e0 = _scrape_raw(pipe.edge_metrics_port)
        raw0 = _scrape_raw(pipe.ingest_metrics_port)
        m0 = pipe.progress()
        t0 = time.monotonic()
        time.sleep(duration_s)
        window = time.monotonic() - t0
        m1 = pipe.progress()
        cpu = {k: sample(p).cpu_s - cpu0[k] for k, p in pids.items()}
        e1 = _scrape_raw(pipe.edge_metrics_port)
        raw1 = _scrape_raw(pipe.ingest_metrics_port)
    except BaseException:
        pipe.close()
        raise
    summary = pipe.stop(drain_timeout_s=120)

    def d(m0: dict[str, float], m1: dict[str, float], key: str) -> float:
        return m1.get(key, 0.0) - m0.get(key, 0.0)

    read = d(m0, m1, "plantwire_edge_samples_read_total")
    written = d(m0, m1, "plantwire_ingest_samples_written_total")
    wire_bytes = d(e0, e1, "plantwire_edge_bytes_published_total")
    spb_bytes = d(e0, e1, "plantwire_edge_sparkplug_bytes_published_total")
    spb_metrics = d(e0, e1, "plantwire_edge_sparkplug_metrics_reported_total")
    spb_encode = d(e0, e1, "plantwire_edge_sparkplug_encode_seconds_total")
    return {
        "part": "pipeline", "variant": variant, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": _machine(),
        "signals": summary.signals, "modbus_rate_hz": rate, "window_s": round(window, 1),
        "samples_per_s_read": round(read / window, 1),
        "samples_per_s_end_to_end": round(written / window, 1),
        "samples_lost": summary.lost,
        "latency_p50_s": _quantile_from_histogram(raw1, 0.50, raw0),
        "latency_p99_s": _quantile_from_histogram(raw1, 0.99, raw0),
        "edge_cpu_us_per_sample": round(cpu.get("edge", 0.0) / max(read, 1) * 1e6, 3),
        "cpu_us_per_sample": {k: round(c / max(read, 1) * 1e6, 2) for k, c in cpu.items()},
        "compact_wire_bytes_per_sample": round(wire_bytes / max(read, 1), 3),
        "sparkplug_bytes_per_sample": round(spb_bytes / max(read, 1), 3),
        "sparkplug_metrics_per_sample": round(spb_metrics / max(read, 1), 4),
        "sparkplug_bytes_per_reported_metric": round(spb_bytes / spb_metrics, 2) if spb_metrics else None,
        "sparkplug_encode_us_per_reported_metric": round(spb_encode / spb_metrics * 1e6, 3) if spb_metrics else None,
        "sparkplug_messages": {k.split('type="')[1].rstrip('"}'): v for k, v in e1.items()
                               if k.startswith("plantwire_edge_sparkplug_messages_total{")},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["encode", "pipeline", "all"], default="all")
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "demo")
    p.add_argument("--rates", default="1,10", help="Modbus rates in Hz (OPC-UA at 1 Hz)")
    p.add_argument("--variants", default="off,on,on+deadband,on+plc")
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--warmup", type=float, default=15.0)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--state-dir", type=Path, default=ROOT / "state" / "bench-sparkplug")
    a = p.parse_args()
    if a.part in ("encode", "all"):
        part_encode(a.config, a.repeat)
    if a.part in ("pipeline", "all"):
        for rate in (float(r) for r in a.rates.split(",")):
            for variant in a.variants.split(","):
                if rate > 1 and variant in ("on+deadband", "on+plc"):
                    continue  # the 10 Hz question is whether the e2e figures hold with Sparkplug on
                print(json.dumps(run_pipeline(a.config, variant, rate, a.duration, a.warmup, a.state_dir)),
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
