"""How soon a flush's read samples leave the edge: drain to hand-off, against the judge job's end.

The edge hands a frame's batches to the write-ahead log and MQTT on the event loop. Until this round that
happened when the judge thread's whole job ended (scoring, model shadows, alarm layer, agents, derived
samples, and once per interval the detectors' checkpoints, health and timers); now the read samples are
encoded first and handed off at once while the rest runs (edge/judge.py). Both moments are measured here in
the same run, per flush, so the comparison does not depend on the load of the (shared) box: "job end" is
when the old code handed off, "hand-off" is when the new one does. Every sample of a flush gains the
difference; the end-to-end p99 is set by the flush's oldest samples, so this difference comes straight off
it (the rest of the path -- MQTT, ingestor, InfluxDB -- is unchanged).

In process, no servers: the demo plant's gateway (configs/demo, both agents, alarm layer on) built in a
temporary state directory, fed simulated values (``SignalModel``) as the sources would deliver them -- every
Modbus signal at ``--modbus-hz``, every OPC-UA signal once a second -- and flushed once a second of
simulated time through the daemon's own path (``_flush_off_loop`` on an asyncio loop, judge thread and
all). The MQTT client is never started: batches go to the log and wait there. Not collected by pytest.

    .venv/bin/python bench/flush_handoff.py [--config configs/demo] [--modbus-hz 10] [--warm-s 60] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.agents.settings import AgentsSettings  # noqa: E402
from edge.app import EdgeGateway  # noqa: E402
from edge.config import load_edge  # noqa: E402
from edge.judge import FlushJob  # noqa: E402
from plantwire.plant import Protocol, expand  # noqa: E402
from simulators.physics import Physics, machine_templates  # noqa: E402
from simulators.signals import SignalModel  # noqa: E402

EPOCH_NS = int(np.datetime64("2026-01-05T08:00:00", "ns").astype(np.int64))  # a Monday, on shift


def _pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(np.array(xs), q)), 4) if xs else float("nan")


async def measure(config: Path, modbus_hz: int, warm_s: int, seconds: int, state_dir: Path,
                  switch_interval_ms: float = 0.0) -> dict[str, object]:
    cfg, plant = load_edge(config / "edge.yaml")
    agents = AgentsSettings.model_validate({"energy": {}, "leak_test": {}})
    cfg = cfg.model_copy(update={"state_dir": state_dir, "agents": agents, "console": None})
    table = expand(plant)
    gw = EdgeGateway(cfg, plant, base_dir=config)
    gw._loop_thread = threading.get_ident()  # as run() does
    if switch_interval_ms > 0:
        sys.setswitchinterval(switch_interval_ms / 1000.0)
    elif hasattr(cfg, "judge"):
        sys.setswitchinterval(cfg.judge.switch_interval_ms / 1000.0)  # as the daemon does (edge/app.py serve)
    modbus = np.array([d.protocol is Protocol.MODBUS for d in table.devices])
    is_mb = modbus[table.device]
    mb_rows = np.flatnonzero(is_mb).astype(np.uint32)
    ua_rows = np.flatnonzero(~is_mb).astype(np.uint32)
    rows = np.arange(len(table), dtype=np.int64)
    model = SignalModel(table, rows, 0, None, Physics(table, machine_templates(plant), 0, EPOCH_NS))

    handed: list[float] = []  # when the flush's read batches were handed off (the first parts counted)
    if hasattr(gw, "_hand_off_ready"):
        real_ready = gw._hand_off_ready

        def ready(job: FlushJob) -> None:
            had = job.handed_parts
            real_ready(job)
            if had == 0 and job.handed_parts > 0:
                handed.append(time.perf_counter())

        gw._hand_off_ready = ready  # type: ignore[method-assign]
    else:  # the code before the early hand-off (an A/B against an older commit): all at the job's end
        real_hand_off = gw._hand_off

        def hand_off(job: FlushJob) -> None:
            real_hand_off(job)
            handed.append(time.perf_counter())

        gw._hand_off = hand_off  # type: ignore[method-assign]
    to_handoff: list[float] = []
    to_job_end: list[float] = []
    samples = 0
    load = [os.getloadavg()[0]]
    try:
        for sec in range(warm_s + seconds):
            for k in range(modbus_hz):
                t_s = sec + k / modbus_hz
                values = model.step(sec * modbus_hz + k, t_s)
                ts = EPOCH_NS + int(t_s * 1e9)
                gw._on_samples(ts, mb_rows, values[mb_rows].copy(), 0)
                if k == 0:
                    gw._on_samples(ts, ua_rows, values[ua_rows].copy(), 0)
            n = len(gw.buffer)
            t0 = time.perf_counter()
            job_end: list[float] = []
            real_submit = gw.judge.submit

            def submit(fn: Any, *args: Any, _real: Any = real_submit, _end: list[float] = job_end) -> Any:
                fut = _real(fn, *args)
                fut.add_done_callback(lambda _f: _end.append(time.perf_counter()))
                return fut

            gw.judge.submit = submit  # type: ignore[method-assign]
            await gw._flush_off_loop(tick=True)
            gw.judge.submit = real_submit  # type: ignore[method-assign]
            if sec >= warm_s and handed and job_end:
                to_handoff.append(handed[0] - t0)
                to_job_end.append(job_end[0] - t0)
                samples += n
            handed.clear()
        load.append(os.getloadavg()[0])
    finally:
        gw.judge.close()
        gw.spool.close()
        gw.mark.close(stopped=True)
    gain = [b - a for a, b in zip(to_handoff, to_job_end, strict=True)]
    return {
        "config": str(config),
        "modbus_hz": modbus_hz,
        "flushes": len(to_handoff),
        "samples_per_flush": round(samples / max(len(to_handoff), 1)),
        "drain_to_handoff_p50_p99_s": [_pct(to_handoff, 50), _pct(to_handoff, 99)],
        "drain_to_job_end_p50_p99_s": [_pct(to_job_end, 50), _pct(to_job_end, 99)],
        "gain_p50_p99_max_s": [_pct(gain, 50), _pct(gain, 99), round(max(gain), 4) if gain else float("nan")],
        "gain_mean_s": round(statistics.fmean(gain), 4) if gain else float("nan"),
        "loadavg_start_end": load,
        "switch_interval_ms": round(sys.getswitchinterval() * 1000, 3),
        "early_hand_off": hasattr(EdgeGateway, "_hand_off_ready"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "demo")
    ap.add_argument("--modbus-hz", type=int, default=10)
    ap.add_argument("--warm-s", type=int, default=60, help="flushes not timed (kernels compiled, agents started)")
    ap.add_argument("--seconds", type=int, default=60, help="flushes timed")
    ap.add_argument("--switch-interval-ms", type=float, default=0.0,
                    help="GIL switch interval (0: the config's judge.switch_interval_ms, as the daemon sets it)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="flush-handoff-") as tmp:
        result = asyncio.run(measure(args.config, args.modbus_hz, args.warm_s, args.seconds, Path(tmp),
                                     args.switch_interval_ms))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
