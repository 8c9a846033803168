"""How long ``plantwire models fit`` takes and how much memory it uses, from a real InfluxDB 1.6.

A private InfluxDB (``plantwire.services.InfluxDB1``) is filled with simulated history of the demo plant
reduced to ``--machines-per-template`` machines of each template (``simulators.influx_history``, the ingestor's
schema and line protocol), then ``plantwire models fit --json`` runs as a child process (so its peak RSS is
its own) and its report is printed with the derived rates.

Two shapes:
- ``--every-s 1`` (default): full 1 Hz history: InfluxDB aggregates every raw sample into 10 s ticks, so
  the figure ``samples/s`` is the read path's real throughput, the one that bounds 15,000 signals x a week;
- ``--every-s 10``: one sample per 10 s tick (the rows the fit reads are identical, see
  ``simulators/influx_history.py``): a week of history for the fit's per-machine memory and its CPU on a
  week's rows, at a tenth of the write cost.

The extrapolation to 15,000 signals x one week at 1 Hz (9.07e9 samples) is printed, with its assumption:
the fit reads machine by machine, so time scales with samples and memory does not grow with machines.

    python bench/model_fit.py [--hours 6] [--every-s 1] [--machines-per-template 1] [--instances 0]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cloud.models.fit import FitOptions  # noqa: E402
from cloud.sinks.influx import InfluxV1Sink  # noqa: E402
from plantwire.configfile import load_plant  # noqa: E402
from plantwire.services import InfluxDB1  # noqa: E402
from simulators.influx_history import EPOCH_NS, write_history  # noqa: E402

DEMO = ROOT / "configs" / "demo" / "plant.yaml"
WEEK_SAMPLES_15K = 15_000 * 7 * 86_400


def reduced_plant(path: Path, per_template: int, out: Path) -> Path:
    """The demo plant with ``per_template`` machines of every template (same templates and devices)."""
    import yaml

    doc = yaml.safe_load(path.read_text())
    seen: dict[str, int] = {}
    groups = []
    for g in doc["machines"]:
        left = per_template - seen.get(g["template"], 0)
        if left <= 0:
            continue
        g = {**g, "count": min(int(g.get("count", 1)), left)}
        seen[g["template"]] = seen.get(g["template"], 0) + g["count"]
        groups.append(g)
    doc["machines"] = groups
    doc["imports"] = [str((path.parent / i).resolve()) for i in doc.get("imports", [])]
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hours", type=float, default=6.0)
    p.add_argument("--every-s", type=int, default=1)
    p.add_argument("--machines-per-template", type=int, default=1)
    p.add_argument("--instances", type=int, default=0, help="passed to models fit (0: all)")
    p.add_argument("--plant", type=Path, default=DEMO)
    args = p.parse_args()
    seconds = int(args.hours * 3600)
    with tempfile.TemporaryDirectory(prefix="pw-model-fit-") as tmp:
        d = Path(tmp)
        plant_path = reduced_plant(args.plant, args.machines_per_template, d / "plant.yaml")
        plant = load_plant(plant_path)
        server = InfluxDB1(d / "influx")
        server.start()
        try:
            server.query('CREATE DATABASE "bench"')
            sink = InfluxV1Sink(server.url, "bench")
            t0 = time.monotonic()
            w = write_history(sink, plant_path, gateway="gw1", seconds=seconds, every_s=args.every_s, plant=plant)
            write_s = time.monotonic() - t0
            n_signals = len(w.world.table)
            print(f"history: {len(w.world.table.machine_ids)} machines, {n_signals} signals, {args.hours:g} h, "
                  f"one sample per {args.every_s} s: {w.samples:,} samples written in {write_s:.1f} s "
                  f"({w.samples / write_s:,.0f}/s)")
            cmd = [sys.executable, "-m", "plantwire.cli", "models", "fit", "--plant", str(plant_path),
                   "--influx-url", server.url, "--database", "bench", "--start", str(EPOCH_NS),
                   "--end", str(EPOCH_NS + seconds * 1_000_000_000), "--json", "--instances", str(args.instances)]
            t0 = time.monotonic()
            out = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
            wall = time.monotonic() - t0
            if out.returncode != 0:
                print(out.stderr, file=sys.stderr)
                return 1
            rep = json.loads(out.stdout)
        finally:
            server.stop()
    samples = sum(t["samples"] for t in rep["templates"])
    ticks = sum(t["ticks"] for t in rep["templates"])
    print(f"fit: {rep['seconds']:.1f} s inside the command, {rep['influx_wait_s']:.1f} s of it waiting for InfluxDB "
          f"({wall:.1f} s with interpreter start), peak RSS "
          f"{rep['peak_rss_mb']:.0f} MB, {rep['influx_queries']} queries, {rep['influx_bytes'] / 1e6:.1f} MB of "
          f"answers; {samples:,} samples read as {ticks:,} machine ticks")
    for t in rep["templates"]:
        kinds = ", ".join(f"{f['kind']} {f['signals']} signals {f['rows']:,} rows "
                          f"{ {k: v for k, v in f['validation'].items() if k != 'note'} }" for f in t["fitted"])
        print(f"  {t['template']}: {t['machines_read']} machine(s): {kinds}")
    rate = samples * args.every_s / rep["seconds"] if args.every_s > 1 else samples / rep["seconds"]
    label = "1 Hz-equivalent samples/s" if args.every_s > 1 else "samples/s"
    print(f"read + fit rate: {rate:,.0f} {label}")
    if args.every_s == 1:
        est = WEEK_SAMPLES_15K / rate
        print(f"extrapolated, reading everything: 15,000 signals x 1 week at 1 Hz = {WEEK_SAMPLES_15K:.3g} samples "
              f"-> {est / 3600:.1f} h at this rate (InfluxDB-bound, one query at a time)")
        read = week_read_samples(args.plant)
        print(f"extrapolated, as the fit reads (staggered hour windows, read_ticks {FitOptions().read_ticks:,} per "
              f"template): {read:.3g} samples -> {read / rate / 60:.0f} min at this rate; memory does not grow with "
              f"machines (one machine's rows at a time + a {FitOptions().max_rows:,}-row pool per template)")
    return 0


def week_read_samples(plant_path: Path) -> float:
    """Raw samples the fit reads from a week of ``plant_path`` at 1 Hz, with the default read budget."""
    from cloud.models.fit import _windows, template_machines

    plant = load_plant(plant_path)
    o = FitOptions()
    week_ns = 7 * 86_400 * 1_000_000_000
    total = 0.0
    for template, machines in template_machines(plant).items():
        d = len(plant.templates[template].expanded())
        wins = _windows(0, week_ns, len(machines), o)
        hours = sum(len(w) for w in wins)
        total += hours * 3600.0 * d
    return total


if __name__ == "__main__":
    raise SystemExit(main())
