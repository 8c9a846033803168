"""CPU the edge agents cost per sample, as the daemon runs them (``AgentRunner.run`` after each flush).

    .venv/bin/python bench/agents_cost.py [--config configs/demo] [--rates 1,10] [--seconds 300]

Frames are the plant's signals as the simulator serves them (``SignalModel`` with its physics), one
frame per second (the edge's ``batch_interval_ms``) holding ``rate`` samples of every signal, as the daemon's
flush hands them over. Per agent, each in a runner of its own fed the same frames: thread CPU time of
``AgentRunner.run`` and ``take`` (masking out the agent's signals, its kernel, closing intervals each minute,
emitting), divided by every sample in the frames (what the agent adds to the edge's CPU per sample read) and
by the samples the agent consumed; the part of it spent in the agent's ``process`` (the rest is the runner's
masking and hand-over); the worst frame (thread CPU); and, for comparison, the wall-clock time the runner's
own statistics hold (``AgentStats.seconds``, ``perf_counter``: what the frame budget is checked against).

Until 2026-12-03 (night round) the per-agent figure was that wall-clock statistic, not thread CPU: on a
shared box at load 17 it read 2-4x the CPU (bench/RESULTS.md, "agents' CPU").
Kernels run under numba JIT here, compiled before timing (the daemon's AOT build runs the same code).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.agents.registry import agent_classes  # noqa: E402
from edge.agents.runner import AgentRunner  # noqa: E402
from edge.agents.settings import AgentsSettings  # noqa: E402
from edge.config import load_edge  # noqa: E402
from edge.frames import Frame  # noqa: E402
from edge.kernelbuild import _all_agents_settings  # noqa: E402
from plantwire.plant import expand  # noqa: E402
from simulators.physics import Physics, machine_templates  # noqa: E402
from simulators.signals import SignalModel  # noqa: E402

EPOCH_NS = int(np.datetime64("2026-01-05T08:00:00", "ns").astype(np.int64))  # a Monday, on shift


def _only(name: str) -> AgentsSettings:
    """The ``agents:`` section with only ``name`` on (at its defaults)."""
    every = _all_agents_settings()
    return every.model_copy(update={k: (getattr(every, k) if k == name else None) for k in agent_classes()})


class _CpuTimed:
    """Wraps an agent's ``process`` to add up its thread CPU time."""

    def __init__(self, process: Callable[..., None]) -> None:
        self.process = process
        self.seconds = 0.0

    def __call__(self, *args: object) -> None:
        t0 = time.thread_time()
        try:
            self.process(*args)
        finally:
            self.seconds += time.thread_time() - t0


def measure(config: Path, rate: int, seconds: int, warm_s: int = 130) -> list[dict[str, object]]:
    _, plant = load_edge(config / "edge.yaml")
    table = expand(plant)
    runners = {name: AgentRunner.build(table, plant, _only(name), None) for name in agent_classes()}
    rows = np.arange(len(table), dtype=np.int64)
    model = SignalModel(table, rows, 0, None, Physics(table, machine_templates(plant), 0, EPOCH_NS))
    n = len(table)
    sig = np.tile(rows.astype(np.uint32), rate)

    def frame(sec: int) -> Frame:
        ts = np.repeat(EPOCH_NS + sec * 1_000_000_000 + np.arange(rate, dtype=np.int64) * (1_000_000_000 // rate), n)
        val = np.concatenate([model.step(sec * rate + k, sec + k / rate).copy() for k in range(rate)])
        return Frame(ts, sig, val, np.zeros(val.size, dtype=np.uint8))

    warm = AgentRunner.build(table, plant, _all_agents_settings(), None)  # compile the kernels untimed
    for sec in range(0, warm_s, 2):  # past a first interval close (60 s) of every agent
        warm.run(frame(sec))
    timed = {}
    for name, runner in runners.items():
        for s in runner.slots:
            if s.agent is not None:
                timed[name] = _CpuTimed(s.agent.process)
                s.agent.process = timed[name]  # type: ignore[method-assign]
    cpu = dict.fromkeys(runners, 0.0)
    worst = dict.fromkeys(runners, 0.0)
    samples = 0
    n_frames = 0
    load_1m = os.getloadavg()[0]
    for sec in range(seconds):
        f = frame(sec)
        samples += len(f)
        n_frames += 1
        for name, runner in runners.items():
            t0 = time.thread_time()
            runner.run(f)
            runner.take()
            dt = time.thread_time() - t0
            cpu[name] += dt
            worst[name] = max(worst[name], dt)
    out = []
    for name, runner in runners.items():
        st = runner.slots[0].stats
        out.append({
            "agent": name, "enabled": st.enabled, "signals": len(table), "rate_hz": rate,
            "frames": n_frames, "samples": samples, "consumed": st.samples_in, "derived_out": st.samples_out,
            "ns_per_sample": round(cpu[name] / samples * 1e9, 1),
            "ns_per_consumed_sample": round(cpu[name] / max(1, st.samples_in) * 1e9, 1),
            "process_share": round(timed[name].seconds / cpu[name], 3) if name in timed and cpu[name] else None,
            "worst_frame_ms": round(worst[name] * 1000, 2),
            "wall_ns_per_sample": round(st.seconds / samples * 1e9, 1),
            "load_1m": [round(load_1m, 1), round(os.getloadavg()[0], 1)],
            "date": time.strftime("%Y-%m-%d %H:%M"), "python": platform.python_version(),
        })
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "demo")
    ap.add_argument("--rates", default="1,10")
    ap.add_argument("--seconds", type=int, default=300)
    ap.add_argument("--warm-s", type=int, default=130, help="simulated seconds of untimed warm-up (every 2nd frame)")
    a = ap.parse_args(argv)
    for rate in (int(r) for r in a.rates.split(",")):
        for row in measure(a.config, rate, a.seconds, a.warm_s):
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
