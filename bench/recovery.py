"""Recovery benchmark (issue 6 item 8): the demo plant (15,000 signals at 1 Hz), the broker down for
``--outage`` seconds, then back. How fast does the edge's write-ahead log drain, how late is live data
meanwhile, and is anything lost?

    .venv/bin/python bench/recovery.py                  # 600 s outage (about 15 minutes in all)
    .venv/bin/python bench/recovery.py --outage 120     # shorter, same figures

Method: after ``--warmup`` seconds of steady running the live rate is measured (samples read per
second by the edge) for ``--baseline`` seconds, together with the live lag. The broker is stopped
(SIGTERM) for the outage; the edge keeps reading and logs everything. When the broker is back the
edge and the ingestor reconnect (reported as ``reconnect_s`` and ``first_live_s``: until then the
newest stored sample is as old as the outage) and the drain runs; it ends when the edge has nothing
left to replay and its oldest batch the cloud has not acknowledged is younger than 5 s.

Drain rate = back-logged samples replayed per second of drain,
given as a multiple of the live rate. Live lag = now minus the newest sample stored in InfluxDB for
a Modbus and an OPC-UA signal (sampled every 0.5 s, max over both), so it is the age of the freshest
live data an operator sees on a dashboard; it includes the 1 s batch interval and the 1 s sampling
period. "During the drain" is from the first live sample after the outage to the end of the drain.
``--replay-rate`` overrides the edge's ``spool.replay_rate_samples_per_s`` (the back-log's rate cap).

Lost = samples the edge read that are not in InfluxDB at the end, signal by signal, and
drops the edge counted (both must be 0).

Prints a timeline during the drain and one JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from urllib.request import urlopen

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from plantwire.lifeline import stop_on_signals  # noqa: E402
from plantwire.pipeline import Pipeline, scrape  # noqa: E402

DRAINED_AGE_S = 5.0


def _last_ts_ns(pipe: Pipeline, signal: str) -> int | None:
    # last(value): every finite sample has it (quality is only on points that are not good)
    q = f"SELECT last(value) FROM samples WHERE signal = '{signal}' AND time > now() - 1h"
    url = f"{pipe.influx_url}/query?{urlencode({'db': pipe.database, 'q': q, 'epoch': 'ns'})}"
    with urlopen(url, timeout=10) as resp:
        doc = json.loads(resp.read())
    for result in doc.get("results", []):
        for series in result.get("series", []) or []:
            return int(series["values"][0][0])
    return None


class LagProbe:
    """Samples the live lag (now minus the newest stored sample) of a few signals in a thread."""

    def __init__(self, pipe: Pipeline, signals: list[str], period_s: float = 0.5) -> None:
        self.pipe = pipe
        self.signals = signals
        self.period_s = period_s
        self.samples: list[tuple[float, float]] = []  # (monotonic, lag_s: max over signals)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag-probe", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            lags = []
            for sid in self.signals:
                try:
                    ts = _last_ts_ns(self.pipe, sid)
                except OSError:
                    continue
                if ts is not None:
                    lags.append((time.time_ns() - ts) / 1e9)
            if lags:
                self.samples.append((time.monotonic(), max(lags)))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def between(self, t0: float, t1: float) -> list[float]:
        return [lag for t, lag in self.samples if t0 <= t <= t1]


def _probe_signals(pipe: Pipeline) -> list[str]:
    from plantwire.configfile import load_plant
    from plantwire.plant import Protocol, expand

    table = expand(load_plant(pipe.state_dir / "config" / "plant.yaml"))
    out: list[str] = []
    for proto in (Protocol.MODBUS, Protocol.OPCUA):
        devs = {d.index for d in table.devices if d.protocol == proto}
        for sid, dev in zip(table.ids, table.device.tolist(), strict=True):
            if dev in devs:
                out.append(sid)
                break
    return out


def _q(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2)


def _edge(pipe: Pipeline) -> dict[str, float]:
    return scrape(pipe.edge_metrics_port)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "demo")
    ap.add_argument("--state", type=Path, default=ROOT / "state" / "bench-recovery")
    ap.add_argument("--outage", type=float, default=600.0, help="seconds the broker stays down")
    ap.add_argument("--warmup", type=float, default=30.0)
    ap.add_argument("--baseline", type=float, default=30.0)
    ap.add_argument("--drain-timeout", type=float, default=1800.0)
    ap.add_argument("--replay-rate", type=int, default=None, help="spool.replay_rate_samples_per_s (samples/s)")
    args = ap.parse_args()

    import shutil

    shutil.rmtree(args.state, ignore_errors=True)
    overrides = {"spool": {"replay_rate_samples_per_s": args.replay_rate}} if args.replay_rate else {}
    pipe = Pipeline(args.config, args.state, edge_overrides=overrides)
    try:
        t_start = time.monotonic()
        pipe.start(timeout_s=300.0)
        print(f"started in {time.monotonic() - t_start:.0f} s; warm-up {args.warmup:.0f} s", flush=True)
        probe = LagProbe(pipe, _probe_signals(pipe))
        probe.start()
        time.sleep(args.warmup)

        m0, t0 = _edge(pipe), time.monotonic()
        time.sleep(args.baseline)
        m1, t1 = _edge(pipe), time.monotonic()
        live_rate = (m1["plantwire_edge_samples_read_total"] - m0["plantwire_edge_samples_read_total"]) / (t1 - t0)
        base_lag = probe.between(t0, t1)
        print(f"live: {live_rate:,.0f} samples/s, lag p50 {_q(base_lag, 0.5)} s, max {_q(base_lag, 1.0)} s",
              flush=True)

        pipe.halt("mosquitto")
        t_down = time.monotonic()
        print(f"broker down for {args.outage:.0f} s", flush=True)
        while time.monotonic() - t_down < args.outage:
            time.sleep(min(30.0, args.outage - (time.monotonic() - t_down)))
            m = _edge(pipe)
            print(f"  +{time.monotonic() - t_down:5.0f} s  log {m['plantwire_edge_spool_wal_samples']:>12,.0f} samples "
                  f"{m['plantwire_edge_spool_wal_bytes'] / 1e6:8.1f} MB", flush=True)
        before = _edge(pipe)
        backlog = before["plantwire_edge_spool_wal_samples"]
        pipe.restart("mosquitto")
        t_up = time.monotonic()
        print(f"broker back; back-log {backlog:,.0f} samples ({backlog / max(live_rate, 1):.0f} s of live data)",
              flush=True)

        replayed0 = before.get("plantwire_edge_spool_replayed_samples_total", 0.0)
        read0 = before["plantwire_edge_samples_read_total"]
        timeline: list[dict[str, Any]] = []
        t_last_print = 0.0
        t_reconnect: float | None = None
        t_first_live: float | None = None
        while True:
            time.sleep(0.5)
            now = time.monotonic()
            m = _edge(pipe)
            if t_reconnect is None and m.get("plantwire_edge_mqtt_connected") == 1.0:
                t_reconnect = now
            if t_first_live is None:
                fresh = [t for t, lag in probe.samples if t >= t_up and lag < args.outage / 2]
                t_first_live = fresh[0] if fresh else None
            drained = (
                m.get("plantwire_edge_mqtt_connected") == 1.0
                and m.get("plantwire_edge_spool_backlog_records", 1.0) == 0.0
                and m.get("plantwire_edge_spool_oldest_unacked_age_s", 1e9) < DRAINED_AGE_S
            )
            if now - t_last_print >= 5.0 or drained:
                t_last_print = now
                lag = probe.between(now - 5.0, now)
                row = {
                    "t_s": round(now - t_up, 1),
                    "log_samples": int(m["plantwire_edge_spool_wal_samples"]),
                    "replayed": int(m.get("plantwire_edge_spool_replayed_samples_total", 0.0) - replayed0),
                    "oldest_unacked_s": round(m.get("plantwire_edge_spool_oldest_unacked_age_s", 0.0), 1),
                    "live_lag_max_s": max(lag) if lag else None,
                }
                timeline.append(row)
                print("  " + json.dumps(row), flush=True)
            if drained:
                break
            if now - t_up > args.drain_timeout:
                raise TimeoutError(f"back-log not drained after {args.drain_timeout:.0f} s")
        t_drained = time.monotonic()
        m_end = _edge(pipe)
        drain_s = t_drained - t_up
        replayed = m_end.get("plantwire_edge_spool_replayed_samples_total", 0.0) - replayed0
        live_during = (m_end["plantwire_edge_samples_read_total"] - read0) / drain_s
        if t_first_live is None:
            fresh = [t for t, lag in probe.samples if t >= t_up and lag < args.outage / 2]
            t_first_live = fresh[0] if fresh else t_drained
        drain_lag = probe.between(t_first_live, t_drained)
        time.sleep(5.0)
        probe.stop()
        summary = pipe.stop(drain_timeout_s=120.0)
    except BaseException:
        pipe.close()
        raise
    dropped = int(summary.edge.get("spool", {}).get("dropped_samples", 0))
    result = {
        "bench": "recovery",
        "host": platform.node(),
        "signals": summary.signals,
        "outage_s": args.outage,
        "live_rate_samples_per_s": round(live_rate),
        "baseline_lag_p50_s": _q(base_lag, 0.5),
        "baseline_lag_max_s": _q(base_lag, 1.0),
        "replay_rate_cap": args.replay_rate or "config default",
        "backlog_samples": int(backlog),
        "reconnect_s": round((t_reconnect or t_drained) - t_up, 1),
        "first_live_s": round(t_first_live - t_up, 1),
        "drain_s": round(drain_s, 1),
        "replayed_samples": int(replayed),
        "drain_rate_samples_per_s": round(replayed / drain_s),
        "drain_multiple_of_live": round(replayed / drain_s / live_rate, 2),
        "backlog_drain_multiple": round(backlog / drain_s / live_rate, 2),
        "live_rate_during_drain": round(live_during),
        "live_lag_during_drain_p50_s": _q(drain_lag, 0.5),
        "live_lag_during_drain_p95_s": _q(drain_lag, 0.95),
        "live_lag_during_drain_max_s": _q(drain_lag, 1.0),
        "lag_samples_during_drain": len(drain_lag),
        "samples_read": summary.samples_read,
        "samples_in_influx": summary.samples_in_influx,
        "samples_lost": summary.lost,
        "signals_mismatched": summary.signals_mismatched,
        "dropped_counted": dropped,
        "goal_met": bool(
            summary.lost == 0
            and summary.signals_mismatched == 0
            and replayed / drain_s / live_rate >= 5.0
            and drain_lag
            and max(drain_lag) < 5.0
        ),
        "lag_median_whole_run_s": round(statistics.median(v for _, v in probe.samples), 2) if probe.samples else None,
    }
    print(json.dumps(result), flush=True)
    return 0 if summary.lost == 0 and summary.signals_mismatched == 0 else 1


if __name__ == "__main__":
    with stop_on_signals():  # SIGTERM/SIGINT/SIGHUP run the clean-up: no child is left behind
        code = main()
    raise SystemExit(code)
