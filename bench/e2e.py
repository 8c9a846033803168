"""End-to-end benchmark: the demo plant through simulator, edge, Mosquitto, ingestor, InfluxDB.

Prints one JSON line: signals, target rates, samples/s achieved end to end (written to InfluxDB
per second over the measured window), samples lost (read by the edge but not in InfluxDB at the
end), p50/p99 sample-to-InfluxDB latency (from the ingestor's latency histogram), CPU seconds and
CPU µs per sample per component, peak RSS per component, and bytes per sample on the wire.

    .venv/bin/python bench/e2e.py --config configs/demo --duration 180 --rates 1:1,2:1,5:1,10:1 --naive-rates 1:1

Issue 16/18's figure (Modbus 10 Hz, both agents, alarm layer on, which is the edge's default):

    .venv/bin/python bench/e2e.py --config configs/demo --rates 10:1 --naive-rates '' --duration 120 \
        --agents energy,leak_test --alarms incidents

Each line also carries the command, the commit, the load average at the window's start and end (the
box is shared: CPU µs per sample is robust to other load, rates and latency are not) and the goals
checked (0 lost, p99 < 2 s, edge peak RSS <= 200 MB).

Per rate one JSON line for plantwire; where the naive baseline (bench/naive.py) runs too, one line for it
and one with the naive/plantwire CPU-per-sample ratio per component and in total.

A warm-up (start-up, numba compilation, first subscription burst) is excluded from the window.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.agents.settings import AgentsSettings  # noqa: E402
from edge.alarms.settings import AlarmMode  # noqa: E402
from plantwire.lifeline import stop_on_signals  # noqa: E402
from plantwire.pipeline import Pipeline  # noqa: E402
from plantwire.procstat import sample  # noqa: E402


def _pids(pipe: Pipeline) -> dict[str, int]:
    pids = {name: proc.pid for name, proc in pipe.procs.items()}
    for svc in pipe.services:
        name = "broker" if type(svc).__name__.lower().startswith("mosquitto") else "influxdb"
        pid = getattr(svc, "pid", None) or getattr(getattr(svc, "proc", None), "pid", None)
        if pid:
            pids[name] = int(pid)
    return pids


_LATENCY = "plantwire_ingest_sample_latency_seconds"


def _labels(key: str) -> dict[str, str]:
    """``name{a="x",b="y"}`` -> {a: x, b: y} (our label values hold no quotes or commas)."""
    if "{" not in key:
        return {}
    inner = key.split("{", 1)[1].rstrip("}")
    return {k: v.strip('"') for k, _, v in (part.partition("=") for part in inner.split(",") if part)}


def _buckets(m: dict[str, float], name: str = _LATENCY, **want: str) -> list[tuple[float, float]]:
    out = []
    for k, v in m.items():
        if not k.startswith(name + "_bucket{"):
            continue
        lab = _labels(k)
        if "le" in lab and all(lab.get(a) == b for a, b in want.items()):
            out.append((float(lab["le"]), v))
    return sorted(out)


def _quantile_from_histogram(
    end: dict[str, float], q: float, start: dict[str, float] | None = None, name: str = _LATENCY, **want: str
) -> float | None:
    """Quantile of the samples written between two scrapes, from Prometheus cumulative buckets,
    interpolated linearly inside the bucket it falls in (as Prometheus' histogram_quantile does)."""
    b1 = _buckets(end, name, **want)
    b0 = dict(_buckets(start, name, **want)) if start else {}
    buckets = [(le, cum - b0.get(le, 0.0)) for le, cum in b1]
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    prev_le, prev_cum = 0.0, 0.0
    for le, cum in buckets:
        if cum >= q * total:
            if le == float("inf"):
                return prev_le
            frac = (q * total - prev_cum) / (cum - prev_cum) if cum > prev_cum else 1.0
            return round(prev_le + (le - prev_le) * frac, 3)
        prev_le, prev_cum = le, cum
    return None


#: Where the latency goes: (row name, histogram, labels); e2e prints p50/p99 of each over the window.
_BREAKDOWN: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("edge: flush starts late", "plantwire_edge_flush_late_seconds", {}),
    ("edge: flush duration", "plantwire_edge_flush_seconds", {}),
    # The part of each flush on the event loop (drain, hand-off to the log): what the polls wait for. Before the
    # judge thread (edge/judge.py) that was the whole flush duration.
    ("edge: flush on the event loop", "plantwire_edge_flush_loop_seconds", {}),
    # Drain to the read samples' batches handed to the log and MQTT (encoded before the scoring, edge/judge.py).
    ("edge: drain to hand-off", "plantwire_edge_flush_handoff_seconds", {}),
    ("edge: read sample age at publish", "plantwire_edge_sample_publish_age_seconds", {"samples": "read"}),
    ("edge: derived sample age at publish", "plantwire_edge_sample_publish_age_seconds", {"samples": "derived"}),
    ("ingest: sample age at arrival", "plantwire_ingest_sample_arrival_seconds", {}),
    ("ingest group: wait to be collected", "plantwire_ingest_group_stage_seconds", {"stage": "collect"}),
    ("ingest group: build lines", "plantwire_ingest_group_stage_seconds", {"stage": "build"}),
    ("ingest group: queued for writer", "plantwire_ingest_group_stage_seconds", {"stage": "queue"}),
    ("ingest group: write", "plantwire_ingest_group_stage_seconds", {"stage": "write"}),
    ("ingest group: commit and ack", "plantwire_ingest_group_stage_seconds", {"stage": "commit"}),
    ("ingest: one InfluxDB request", "plantwire_ingest_influx_write_seconds", {}),
    ("sample age when stored", _LATENCY, {}),
)


def _breakdown(end: dict[str, float], start: dict[str, float]) -> dict[str, list[float | None]]:
    """p50, p99 and count over the window of each stage's histogram (absent ones are left out)."""
    out: dict[str, list[float | None]] = {}
    for row, name, want in _BREAKDOWN:
        b1 = _buckets(end, name, **want)
        if not b1:
            continue
        n = b1[-1][1] - dict(_buckets(start, name, **want)).get(b1[-1][0], 0.0)
        out[row] = [
            _quantile_from_histogram(end, 0.5, start, name, **want),
            _quantile_from_histogram(end, 0.99, start, name, **want),
            n,
        ]
    return out


def _scrape_raw(port: int) -> dict[str, float]:
    import urllib.request

    out: dict[str, float] = {}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line and not line.startswith("#"):
                key, _, val = line.rpartition(" ")
                out[key] = float(val)
    return out


NAIVE = [sys.executable, str(ROOT / "bench" / "naive.py")]
#: Agents' config blocks (edge.agents.settings.AgentsSettings): every optional block is an agent.
AGENT_NAMES = tuple(
    name for name, f in AgentsSettings.model_fields.items() if f.default is None and name != "frame_budget_ms"
)


def _loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def _commit() -> str:
    import subprocess

    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _setting(spec: str) -> dict[str, Any]:
    """``publish.batch_interval_ms=500`` -> {"publish": {"batch_interval_ms": 500}} (the value read as YAML)."""
    import yaml

    path, sep, raw = spec.partition("=")
    if not sep or not path:
        raise ValueError(f"{spec!r}: expected KEY.PATH=VALUE")
    out: dict[str, Any] = {}
    node = out
    *heads, last = path.split(".")
    for key in heads:
        node = node.setdefault(key, {})
    node[last] = yaml.safe_load(raw)
    return out


def _merged(specs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for spec in specs:
        node, new = out, _setting(spec)
        while True:  # one key per level in ``new``
            (key, val), = new.items()
            if isinstance(val, dict) and isinstance(node.get(key), dict):
                node, new = node[key], val
                continue
            node[key] = val
            break
    return out


def run(
    config: Path, duration_s: float, rate: float, opcua_rate: float, warmup_s: float, state: Path,
    naive: bool = False, agents: tuple[str, ...] = (), alarms: AlarmMode | None = None,
    edge_set: dict[str, Any] | None = None, cloud_set: dict[str, Any] | None = None,
) -> dict[str, Any]:
    # A fresh state: a write-ahead log or detector checkpoint left by an earlier run would be replayed
    # into this run's InfluxDB and counted against it.
    shutil.rmtree(state, ignore_errors=True)
    argv: dict[str, Any] = {}
    if naive:
        argv = {"edge_argv": [*NAIVE, "gateway"], "ingest_argv": [*NAIVE, "ingest"]}
    if agents and not naive:  # edge agents at their default settings (edge/agents)
        argv["edge_overrides"] = {"agents": {name: {} for name in agents}}
    if alarms is not None and not naive:
        argv.setdefault("edge_overrides", {})["alarms"] = {"mode": alarms.value}
    if edge_set and not naive:
        argv.setdefault("edge_overrides", {}).update(edge_set)
    if cloud_set and not naive:
        argv["cloud_overrides"] = cloud_set
    pipe = Pipeline(config, state, modbus_rate_hz=rate, opcua_rate_hz=opcua_rate, **argv)
    try:
        t_start = time.monotonic()
        pipe.start(timeout_s=300)
        startup_s = time.monotonic() - t_start
        time.sleep(warmup_s)
        pids = _pids(pipe)
        load0 = _loadavg()
        cpu0 = {n: sample(p).cpu_s for n, p in pids.items()}
        m0 = pipe.progress()
        raw0 = _scrape_raw(pipe.ingest_metrics_port) | _scrape_raw(pipe.edge_metrics_port)
        t0 = time.monotonic()
        time.sleep(duration_s)
        window = time.monotonic() - t0
        m1 = pipe.progress()
        samples = {n: sample(p) for n, p in pids.items()}
        load1 = _loadavg()
        raw_ingest = _scrape_raw(pipe.ingest_metrics_port) | _scrape_raw(pipe.edge_metrics_port)
    except BaseException:
        pipe.close()
        raise
    summary = pipe.stop(drain_timeout_s=120)
    read = m1.get("plantwire_edge_samples_read_total", 0) - m0.get("plantwire_edge_samples_read_total", 0)
    written = m1.get("plantwire_ingest_samples_written_total", 0) - m0.get("plantwire_ingest_samples_written_total", 0)
    cpu = {n: samples[n].cpu_s - cpu0[n] for n in samples}
    edge = summary.edge
    p50 = _quantile_from_histogram(raw_ingest, 0.50, raw0)
    p99 = _quantile_from_histogram(raw_ingest, 0.99, raw0)
    return {
        "variant": "naive" if naive else "plantwire",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()} {platform.node()} nproc={__import__('os').cpu_count()}",
        "config": str(config),
        "signals": summary.signals,
        "modbus_rate_hz": rate,
        "opcua_rate_hz": opcua_rate,
        "loadavg_start": load0,
        "loadavg_end": load1,
        "window_s": round(window, 1),
        "startup_s": round(startup_s, 1),
        "samples_per_s_read": round(read / window, 1),
        "samples_per_s_end_to_end": round(written / window, 1),
        "samples_read_total": summary.samples_read,
        "samples_in_influx_total": summary.samples_in_influx,
        "samples_lost": summary.lost,
        # Poll ticks the Modbus sources skipped in the window because a poll overran its period (the event
        # loop busy with a flush, a slow device): why fewer samples are read than the plant makes.
        "missed_ticks": m1.get("plantwire_edge_source_missed_ticks_total", 0)
        - m0.get("plantwire_edge_source_missed_ticks_total", 0),
        # Ticks polled late (at once after an overrunning poll, stamped with their tick): read, not missed.
        "late_polls": m1.get("plantwire_edge_source_late_polls_total", 0)
        - m0.get("plantwire_edge_source_late_polls_total", 0),
        "signals_mismatched": summary.signals_mismatched,
        # Steps of the edge's alarm layer and agents that failed in the window (logged and counted by the edge,
        # which carries on): a figure "with the alarm layer / agents on" means something only when these are 0.
        "alarm_errors": m1.get("plantwire_edge_alarm_errors_total", 0) - m0.get("plantwire_edge_alarm_errors_total", 0),
        "agent_failures": m1.get("plantwire_edge_agent_failures_total", 0)
        - m0.get("plantwire_edge_agent_failures_total", 0),
        "latency_p50_s": p50,
        "latency_p99_s": p99,
        "latency_breakdown_p50_p99_n": _breakdown(raw_ingest, raw0),
        "cpu_s": {n: round(c, 2) for n, c in cpu.items()},
        "cpu_us_per_sample": {n: round(c / max(read, 1) * 1e6, 2) for n, c in cpu.items()},
        "peak_rss_mb": {n: round(s.rss_peak_bytes / 2**20, 1) for n, s in samples.items()},
        "pss_mb_at_end": {n: round(s.pss_bytes / 2**20, 1) for n, s in samples.items()},
        # Telemetry payload bytes per sample (the wire format's cost); events and health ride their own
        # lane and are reported apart. The naive baseline has only "bytes_published" (its JSON messages).
        "wire_bytes_per_sample": round(
            edge.get("telemetry_bytes", edge.get("bytes_published", 0)) / max(summary.samples_read, 1), 2
        ),
        "events_lane_bytes": edge.get("events_bytes"),
        "events_lane_messages": edge.get("events_messages"),
        "alarms_opened": edge.get("alarms_opened"),
        "wal_bytes_per_sample": round(edge["wal_bytes_written"] / max(summary.samples_read, 1), 2)
        if "wal_bytes_written" in edge
        else None,
        "cpu_us_per_sample_total": round(sum(cpu.values()) / max(read, 1) * 1e6, 2),
        "goals": {
            "lost_0": summary.lost == 0,
            "p99_under_2s": p99 is not None and p99 < 2.0,
            "edge_rss_le_200mb": samples["edge"].rss_peak_bytes / 2**20 <= 200 if "edge" in samples else None,
            "no_alarm_or_agent_failures": m1.get("plantwire_edge_alarm_errors_total", 0)
            + m1.get("plantwire_edge_agent_failures_total", 0) == 0,
        },
    }


def _summary(r: dict[str, Any]) -> str:
    """The figures issues 16/18 ask for, one readable block (the JSON line has everything)."""
    cpu = " · ".join(f"{n} {v}" for n, v in r["cpu_us_per_sample"].items())
    goals = ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in r["goals"].items())
    return (
        f"Modbus {r['modbus_rate_hz']:g} Hz / OPC-UA {r['opcua_rate_hz']:g} Hz, {r['signals']} signals, "
        f"agents {r.get('agents') or 'none'}, alarms {r.get('alarms')}, commit {r.get('commit')}"
        f"{', edge ' + ' '.join(r['edge_set']) if r.get('edge_set') else ''}"
        f"{', ingest ' + ' '.join(r['cloud_set']) if r.get('cloud_set') else ''}\n"
        f"  Modbus ticks missed in the window: {r.get('missed_ticks')}, polled late: {r.get('late_polls')}\n"
        f"  read {r['samples_per_s_read']:,.0f}/s, into InfluxDB {r['samples_per_s_end_to_end']:,.0f}/s, "
        f"lost {r['samples_lost']} of {r['samples_read_total']}, signals mismatched {r['signals_mismatched']}\n"
        f"  latency p50 / p99 {r['latency_p50_s']} / {r['latency_p99_s']} s; edge peak RSS "
        f"{r['peak_rss_mb'].get('edge')} MB\n"
        f"  CPU µs per sample read: {cpu}; total {r['cpu_us_per_sample_total']}\n"
        f"  load average at start {r['loadavg_start']} and end {r['loadavg_end']} ({r['machine']})\n"
        f"  goals: {goals}\n"
        + "".join(
            f"    {row:<36} p50 {p50} s, p99 {p99} s ({n:,.0f})\n"
            for row, (p50, p99, n) in r.get("latency_breakdown_p50_p99_n", {}).items()
        )
    )


def speedup(plantwire: dict[str, Any], naive: dict[str, Any]) -> dict[str, Any]:
    """Naive CPU per sample over plantwire's, per component and in total (higher is better)."""
    out: dict[str, Any] = {}
    for name, ours in plantwire["cpu_us_per_sample"].items():
        theirs = naive["cpu_us_per_sample"].get(name)
        if theirs is not None and ours > 0:
            out[name] = round(theirs / ours, 1)
    a, b = plantwire["cpu_us_per_sample_total"], naive["cpu_us_per_sample_total"]
    out["total"] = round(b / a, 1) if a > 0 else None
    out["end_to_end_rate"] = round(
        plantwire["samples_per_s_end_to_end"] / max(naive["samples_per_s_end_to_end"], 1e-9), 2
    )
    return {"variant": "speedup", "modbus_rate_hz": plantwire["modbus_rate_hz"], "cpu_per_sample": out}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "demo")
    p.add_argument("--duration", type=float, default=180.0, help="measured window per rate, in seconds")
    p.add_argument("--rates", default="1:1,2:1,5:1,10:1", help="comma-separated MODBUS_HZ:OPCUA_HZ pairs")
    p.add_argument("--naive-rates", default="1:1", help="rates at which to also run bench/naive.py ('' for none)")
    p.add_argument("--warmup", type=float, default=15.0)
    p.add_argument("--state-dir", type=Path, default=ROOT / "state" / "bench-e2e")
    p.add_argument(
        "--agents", default="", help=f"comma-separated edge agents to turn on, of: {','.join(AGENT_NAMES)}"
    )
    p.add_argument(
        "--alarms", choices=[m.value for m in AlarmMode], default=None,
        help="the edge's alarm layer (alarms.mode); default: the config's (incidents, unless it says otherwise)",
    )
    p.add_argument("--edge-set", action="append", default=[], metavar="KEY=VALUE",
                   help="an edge setting for this run, e.g. publish.batch_interval_ms=500 (repeatable)")
    p.add_argument("--cloud-set", action="append", default=[], metavar="KEY=VALUE",
                   help="an ingestor setting for this run, e.g. ingest.linger_ms=50 (repeatable)")
    a = p.parse_args()
    agents = tuple(x for x in a.agents.split(",") if x)
    for name in agents:
        if name not in AGENT_NAMES:
            p.error(f"--agents: unknown agent {name!r}; known: {', '.join(AGENT_NAMES)}")
    alarms = AlarmMode(a.alarms) if a.alarms else None
    command = " ".join([".venv/bin/python", "bench/e2e.py", *sys.argv[1:]])
    commit = _commit()  # at start: the code every process of the run was started from
    naive_rates = {r for r in a.naive_rates.split(",") if r}
    for pair in a.rates.split(","):
        mb, ua = (float(x) for x in pair.split(":"))
        ours = run(
            a.config, a.duration, mb, ua, a.warmup, a.state_dir / f"plantwire-{pair}", agents=agents, alarms=alarms,
            edge_set=_merged(a.edge_set), cloud_set=_merged(a.cloud_set),
        )
        ours["edge_set"], ours["cloud_set"] = a.edge_set, a.cloud_set
        ours["agents"] = list(agents)
        ours["alarms"] = a.alarms or "config default"
        ours["command"] = command
        ours["commit"] = commit
        print(json.dumps(ours), flush=True)
        print(_summary(ours), file=sys.stderr, flush=True)
        if pair in naive_rates:
            theirs = run(a.config, a.duration, mb, ua, a.warmup, a.state_dir / f"naive-{pair}", naive=True)
            print(json.dumps(theirs), flush=True)
            print(json.dumps(speedup(ours, theirs)), flush=True)
    return 0


if __name__ == "__main__":
    with stop_on_signals():  # SIGTERM/SIGINT/SIGHUP run the clean-up: no child is left behind
        code = main()
    sys.exit(code)
