"""Profile the daemons at a given rate with py-spy: where each one's CPU goes, as top self-time frames.

Starts the demo pipeline (bench/e2e.py's parts) at ``--rate`` Hz for Modbus and 1 Hz for OPC-UA, lets
it warm up, then samples the edge, the ingestor and the simulator with ``py-spy record --format raw``
(collapsed stacks) for ``--duration`` seconds each, concurrently, and prints per daemon the frames
with the largest share of samples (self time, and inclusive time of plantwire's own functions).

py-spy is a profiling tool, not a dependency: install it for this script only, e.g.
``pip install --target state/pyspy py-spy`` (the default ``--py-spy`` path looks there).

    .venv/bin/python bench/profile_daemons.py --rate 10 --duration 20
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from plantwire.lifeline import die_with_parent, stop_on_signals  # noqa: E402
from plantwire.pipeline import Pipeline  # noqa: E402


def top_frames(raw: str, n: int) -> dict[str, list[tuple[str, float]]]:
    """Self-time and inclusive-time shares from py-spy's collapsed stacks (``a;b;c count`` lines)."""
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        total += c
        frames = stack.split(";")
        self_t[frames[-1]] += c
        for f in set(frames):
            if any(k in f for k in ("edge/", "cloud/", "plantwire/", "simulators/")):
                incl[f] += c
    if total == 0:
        return {"self": [], "inclusive_own_code": []}
    return {
        "self": [(f, round(100 * c / total, 1)) for f, c in self_t.most_common(n)],
        "inclusive_own_code": [(f, round(100 * c / total, 1)) for f, c in incl.most_common(n)],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "demo")
    p.add_argument("--rate", type=float, default=10.0)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=15.0)
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--py-spy", type=Path, default=ROOT / "state" / "pyspy" / "bin" / "py-spy")
    p.add_argument("--state-dir", type=Path, default=ROOT / "state" / "bench-profile")
    a = p.parse_args()
    if not a.py_spy.exists():
        print(f"py-spy not found at {a.py_spy}: pip install --target state/pyspy py-spy", file=sys.stderr)
        return 2
    env_path = str(a.py_spy.parent.parent)
    pipe = Pipeline(a.config, a.state_dir, modbus_rate_hz=a.rate, opcua_rate_hz=1.0)
    try:
        pipe.start(timeout_s=300)
        time.sleep(a.warmup)
        out_dir = a.state_dir / "profiles"
        out_dir.mkdir(parents=True, exist_ok=True)
        procs = {}
        for name in ("edge", "ingest", "sim"):
            out = out_dir / f"{name}.txt"
            procs[name] = (
                subprocess.Popen(
                    [str(a.py_spy), "record", "--pid", str(pipe.procs[name].pid), "--duration", str(int(a.duration)),
                     "--rate", "50", "--format", "raw", "--output", str(out), "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={"PYTHONPATH": env_path},
                    preexec_fn=die_with_parent(),
                ),
                out,
            )
        for name, (proc, out) in procs.items():
            _, err = proc.communicate(timeout=a.duration + 60)
            result = top_frames(out.read_text() if out.exists() else "", a.top)
            print(json.dumps({"daemon": name, "rate_hz": a.rate, **result,
                              "error": err.decode()[-300:] if proc.returncode else None}), flush=True)
    finally:
        pipe.close()
    return 0


if __name__ == "__main__":
    with stop_on_signals():  # SIGTERM/SIGINT/SIGHUP run the clean-up: no child is left behind
        code = main()
    sys.exit(code)
