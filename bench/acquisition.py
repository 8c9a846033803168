"""Edge CPU per sample by protocol: acquisition through detectors, encoding, log and a published batch.

Runs the real pipeline (simulator, edge, Mosquitto, ingestor, InfluxDB; see bench/e2e.py) twice on
a plant cut from ``configs/demo``: once with only its Modbus devices, once with only its OPC-UA
devices, machine counts multiplied by ``--modbus-scale``/``--opcua-scale`` (defaults give 15,000
Modbus signals and 3,000 OPC-UA signals, the demo's split; ``--opcua-scale 5`` gives 15,000 OPC-UA
signals, which needs about 2.5 s of simulator start-up per 1,000 nodes). Prints one JSON line per
protocol with the edge's CPU µs per sample (all-in: the edge process's user + system time over the
window divided by the samples it read) and its peak RSS, next to the targets (Modbus ≤ 3 µs,
OPC-UA ≤ 20 µs) and the reference figures measured for Node-RED and NeuronEX.

    .venv/bin/python bench/acquisition.py --duration 120
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from e2e import run  # noqa: E402

from plantwire.configfile import read_yaml  # noqa: E402

TARGET_US = {"modbus": 3.0, "opcua": 20.0}
REFERENCE_US = {
    "modbus": {"node-red 5 (1 Hz, JSON)": 4.8, "node-red 5 (10 Hz)": 3.3, "neuronex 3.2": 12.0},
    "opcua": {"node-red 5": 22.0, "neuronex 3.2": 24.0},
}


def cut_plant(source: Path, protocol: str, scale: float, out: Path) -> Path:
    """A config folder holding only ``protocol``'s devices and machines of ``source``, scaled."""
    plant = read_yaml(source / "plant.yaml")
    plant["imports"] = [str((source / p).resolve()) for p in plant.get("imports", [])]
    devices = [d for d in plant["devices"] if d["protocol"] == protocol]
    kept = {d["name"] for d in devices}
    machines = [dict(m) for m in plant["machines"] if m["device"] in kept]
    for m in machines:
        m["count"] = max(1, math.ceil(m.get("count", 1) * scale))
    for d in devices:
        d["count"] = max(1, math.ceil(d.get("count", 1) * scale))
    plant["devices"], plant["machines"] = devices, machines
    out.mkdir(parents=True, exist_ok=True)
    (out / "plant.yaml").write_text(yaml.safe_dump(plant, sort_keys=False))
    for name in ("edge.yaml", "cloud.yaml"):  # the pipeline points them at its own plant and servers
        (out / name).write_text((source / name).read_text())
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "demo")
    p.add_argument("--duration", type=float, default=120.0)
    p.add_argument("--warmup", type=float, default=15.0)
    p.add_argument("--rate", type=float, default=1.0)
    p.add_argument("--modbus-scale", type=float, default=1.25, help="12,000 demo Modbus signals x 1.25 = 15,000")
    p.add_argument("--opcua-scale", type=float, default=1.0)
    p.add_argument("--only", choices=["modbus", "opcua"])
    p.add_argument("--state-dir", type=Path, default=ROOT / "state" / "bench-acquisition")
    a = p.parse_args()
    for protocol, scale in (("modbus", a.modbus_scale), ("opcua", a.opcua_scale)):
        if a.only and protocol != a.only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            cfg = cut_plant(a.config, protocol, scale, Path(tmp) / protocol)
            r: dict[str, Any] = run(cfg, a.duration, a.rate, a.rate, a.warmup, a.state_dir / protocol)
        edge_us = r["cpu_us_per_sample"].get("edge")
        print(
            json.dumps(
                {
                    "protocol": protocol,
                    "date": r["date"],
                    "machine": r["machine"],
                    "signals": r["signals"],
                    "rate_hz": a.rate,
                    "window_s": r["window_s"],
                    "samples_per_s_read": r["samples_per_s_read"],
                    "samples_lost": r["samples_lost"],
                    "edge_cpu_us_per_sample": edge_us,
                    "edge_peak_rss_mb": r["peak_rss_mb"].get("edge"),
                    "target_us": TARGET_US[protocol],
                    "meets_target": edge_us is not None and edge_us <= TARGET_US[protocol],
                    "reference_us": REFERENCE_US[protocol],
                    "other_components_us_per_sample": {k: v for k, v in r["cpu_us_per_sample"].items() if k != "edge"},
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
