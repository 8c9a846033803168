"""``plantwire demo``: the whole pipeline on this machine with live progress and a final audit.

Starts (unless pointed at existing ones) a Mosquitto configured never to drop queued QoS 1
messages and an InfluxDB 1.x on free loopback ports with their data under ``--state-dir``, then
the simulator, the ingestor and the edge. Prints a progress line every two seconds; on Ctrl-C,
SIGTERM or SIGHUP (a closed terminal), or after ``--duration`` seconds it stops everything cleanly
and compares, signal by signal, the samples in InfluxDB with the samples the edge read. A signal
during start-up stops what was started so far; if the demo itself is killed (SIGKILL), the kernel
stops its children (``plantwire.lifeline``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

from plantwire.lifeline import STOP_SIGNALS, Stopped, stop_on_signals
from plantwire.pipeline import Pipeline


def _progress_line(m: dict[str, float], t0: float, last: dict[str, float]) -> str:
    read = m.get("plantwire_edge_samples_read_total", 0)
    pub = m.get("plantwire_edge_samples_published_total", 0)
    acked = m.get("plantwire_edge_samples_acked_total", 0)
    written = m.get("plantwire_ingest_samples_written_total", 0)
    anomalies = m.get("plantwire_edge_anomalies_total", 0)
    settling = m.get("plantwire_edge_anomalies_settling_total", 0)  # cold start: scores settle, no alarms yet
    lag = m.get("plantwire_ingest_last_write_lag_seconds", float("nan"))
    dt = max(time.monotonic() - last.get("t", t0), 1e-9)
    rate = (read - last.get("read", 0)) / dt
    last.update(t=time.monotonic(), read=read)
    return (
        f"[{time.monotonic() - t0:6.0f} s] read {read:>12,.0f} ({rate:8,.0f}/s)  published {pub:>12,.0f}  "
        f"acked {acked:>12,.0f}  in InfluxDB {written:>12,.0f}  anomalies {anomalies:>7,.0f} "
        f"(settling {settling:,.0f})  lag {lag:5.1f} s"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="plantwire demo", description=__doc__.splitlines()[0])
    p.add_argument("config_dir", nargs="?", type=Path, default=Path("configs/demo"),
                   help="folder with plant.yaml, edge.yaml and cloud.yaml (default configs/demo)")
    p.add_argument("--duration", type=float, default=0.0, help="seconds to run; 0 runs until Ctrl-C")
    p.add_argument("--state-dir", type=Path, default=Path("state/demo"))
    p.add_argument("--modbus-rate", type=float, default=1.0, help="Modbus sample rate in Hz")
    p.add_argument("--opcua-rate", type=float, default=1.0, help="OPC-UA sample rate in Hz")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--broker", help="use an existing MQTT broker HOST:PORT instead of starting one")
    p.add_argument("--influx", help="use an existing InfluxDB 1.x URL instead of starting one")
    args = p.parse_args(argv)
    broker = None
    if args.broker:
        host, _, port = args.broker.rpartition(":")
        broker = (host or "127.0.0.1", int(port))
    pipe = Pipeline(
        args.config_dir, args.state_dir, modbus_rate_hz=args.modbus_rate, opcua_rate_hz=args.opcua_rate,
        seed=args.seed, broker=broker, influx_url=args.influx,
    )
    stop = threading.Event()
    print(f"plantwire demo: starting {args.config_dir} (state in {args.state_dir}) ...", flush=True)
    t_start = time.monotonic()
    try:
        with stop_on_signals():  # start-up can take a minute: a signal interrupts it
            pipe.start()
    except Stopped as exc:
        print(f"plantwire demo: signal {exc.signum} during start-up; stopping what was started", flush=True)
        pipe.close()
        return int(exc.code) if isinstance(exc.code, int) else 1
    except Exception as exc:
        pipe.close()
        print(f"plantwire demo: start-up failed: {exc}", file=sys.stderr)
        return 1
    for sig in STOP_SIGNALS:  # from here on a signal ends the run the way --duration does
        signal.signal(sig, lambda *_: stop.set())
    print(f"plantwire demo: running after {time.monotonic() - t_start:.1f} s; "
          f"broker {pipe.broker[0]}:{pipe.broker[1]}, "
          f"InfluxDB {pipe.influx_url} (db {pipe.database}); Ctrl-C stops", flush=True)
    if pipe.console_url is not None:
        print(f"plantwire demo: edge console {pipe.console_url} (open it in a browser on this machine)", flush=True)
    t0 = time.monotonic()
    last: dict[str, float] = {}
    while not stop.wait(2.0):
        print(_progress_line(pipe.progress(), t0, last), flush=True)
        if args.duration and time.monotonic() - t0 >= args.duration:
            break
        for name in ("sim", "edge", "ingest"):
            if pipe.procs[name].poll() is not None:
                print(f"plantwire demo: {name} exited unexpectedly (see {pipe.logs / (name + '.log')})",
                      file=sys.stderr)
                stop.set()
    print("plantwire demo: stopping (edge flushes, ingestor drains) ...", flush=True)
    s = pipe.stop()
    print(f"summary: {s.signals} signals; edge read {s.samples_read:,} samples; "
          f"InfluxDB holds {s.samples_in_influx:,}; "
          f"lost {s.lost:,}; signals that differ {s.signals_mismatched}")
    for sid, (r, st) in list(s.mismatches.items())[:10]:
        print(f"  {sid}: read {r}, stored {st}")
    return 0 if s.signals_mismatched == 0 else 1
