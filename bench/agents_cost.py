"""CPU the edge agents cost per sample, as the daemon runs them (``AgentRunner.run`` after each flush).

    .venv/bin/python bench/agents_cost.py [--config configs/demo] [--rates 1,10] [--seconds 300]

Frames are the plant's signals as the simulator serves them (``SignalModel`` with its physics), one
frame per second (the edge's ``batch_interval_ms``) holding ``rate`` samples of every signal, as the daemon's
flush hands them over. Per agent: thread CPU time of ``AgentRunner.run`` (masking out the agent's signals,
its kernel, closing intervals each minute, emitting), divided by every sample in the frames (what the
agent adds to the edge's CPU per sample read) and by the samples the agent consumed; and the worst frame.
Kernels run under numba JIT here, compiled before timing (the daemon's AOT build runs the same code).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.agents.runner import AgentRunner  # noqa: E402
from edge.config import load_edge  # noqa: E402
from edge.frames import Frame  # noqa: E402
from edge.kernelbuild import _all_agents_settings  # noqa: E402
from plantwire.plant import expand  # noqa: E402
from simulators.physics import Physics, machine_templates  # noqa: E402
from simulators.signals import SignalModel  # noqa: E402

EPOCH_NS = int(np.datetime64("2026-01-05T08:00:00", "ns").astype(np.int64))  # a Monday, on shift


def measure(config: Path, rate: int, seconds: int) -> list[dict[str, object]]:
    _, plant = load_edge(config / "edge.yaml")
    table = expand(plant)
    runner = AgentRunner.build(table, plant, _all_agents_settings(), None)
    rows = np.arange(len(table), dtype=np.int64)
    model = SignalModel(table, rows, 0, None, Physics(table, machine_templates(plant), 0, EPOCH_NS))
    n = len(table)
    sig = np.tile(rows.astype(np.uint32), rate)

    def frame(sec: int) -> Frame:
        ts = np.repeat(EPOCH_NS + sec * 1_000_000_000 + np.arange(rate, dtype=np.int64) * (1_000_000_000 // rate), n)
        val = np.concatenate([model.step(sec * rate + k, sec + k / rate).copy() for k in range(rate)])
        return Frame(ts, sig, val, np.zeros(val.size, dtype=np.uint8))

    warm = AgentRunner.build(table, plant, _all_agents_settings(), None)  # compile the kernels untimed
    for sec in range(0, 130, 2):
        warm.run(frame(sec))
    cpu = {s.name: 0.0 for s in runner.slots}
    worst = dict.fromkeys(cpu, 0.0)
    total_cpu = 0.0
    samples = 0
    n_frames = 0
    for sec in range(seconds):
        f = frame(sec)
        samples += len(f)
        n_frames += 1
        before = {s.name: s.stats.seconds for s in runner.slots}
        t0 = time.thread_time()
        runner.run(f)
        dt = time.thread_time() - t0
        total_cpu += dt
        runner.take()
        for s in runner.slots:
            d = s.stats.seconds - before[s.name]
            cpu[s.name] += d
            worst[s.name] = max(worst[s.name], d)
    out = []
    for s in runner.slots:
        out.append({
            "agent": s.name, "enabled": s.stats.enabled, "signals": len(table), "rate_hz": rate,
            "frames": n_frames, "samples": samples, "consumed": s.stats.samples_in,
            "derived_out": s.stats.samples_out,
            "ns_per_sample": round(cpu[s.name] / samples * 1e9, 1),
            "ns_per_consumed_sample": round(cpu[s.name] / max(1, s.stats.samples_in) * 1e9, 1),
            "worst_frame_ms": round(worst[s.name] * 1000, 2),
            "runner_ns_per_sample": round(total_cpu / samples * 1e9, 1),
            "date": time.strftime("%Y-%m-%d %H:%M"), "python": platform.python_version(),
        })
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "demo")
    ap.add_argument("--rates", default="1,10")
    ap.add_argument("--seconds", type=int, default=300)
    a = ap.parse_args(argv)
    for rate in (int(r) for r in a.rates.split(",")):
        for row in measure(a.config, rate, a.seconds):
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
