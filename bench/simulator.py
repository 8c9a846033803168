"""CPU of ``plantwire sim`` serving a plant, per process and per signal update. Not collected by pytest.

Starts the simulator on the plant (ports moved to free ones) in its own session, waits until it is
ready, lets it settle, then measures utime+stime of the simulator and each OPC-UA child from
/proc over ``--duration`` seconds, for every rate of ``--rates`` (Modbus and OPC-UA both at that
rate). Prints one JSON line per rate: CPU % of one core per process and in total, CPU µs per
signal update, start-up time, and ticks missed (a part that misses ticks does not sustain that
rate). ``--clients`` also polls every Modbus device once per tick and subscribes to every OPC-UA
variable from this process, since serving reads and notifications is where servers spend; this
process's own CPU is not counted.

    .venv/bin/python bench/simulator.py                         # demo plant, 1 and 10 Hz, 20 s each
    .venv/bin/python bench/simulator.py --rates 1 --duration 60 --clients
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from plantwire.configfile import load_plant  # noqa: E402
from plantwire.plant import Protocol, SignalTable, expand, relocate_ports  # noqa: E402
from plantwire.ports import free_port_block  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(x) for x in (task / "children").read_text().split()]
    return out


async def clients(table: SignalTable, rate_hz: float, stop: asyncio.Event) -> None:
    """Poll every Modbus device (125-register blocks) each tick; subscribe to every OPC-UA variable."""
    from asyncua import Client, ua
    from pymodbus.client import AsyncModbusTcpClient

    from edge.sources.modbus_plan import plan_device

    async def modbus(dev_index: int) -> None:
        d = table.devices[dev_index]
        plan = plan_device(table, dev_index, max_gap=16)
        c = AsyncModbusTcpClient(d.host, port=d.port, timeout=2, retries=0)
        await c.connect()
        while not stop.is_set():
            t0 = time.monotonic()
            for b in plan.blocks:
                fn = {"holding": c.read_holding_registers, "input": c.read_input_registers,
                      "coil": c.read_coils, "discrete": c.read_discrete_inputs}[b.table.value]
                await fn(b.start, count=b.count, device_id=b.unit_id)
            await asyncio.sleep(max(0.0, 1.0 / rate_hz - (time.monotonic() - t0)))
        c.close()

    async def opcua(dev_index: int) -> None:
        d = table.devices[dev_index]
        async with Client(d.endpoint, timeout=30) as c:
            ns = await c.get_namespace_index(d.namespace)
            nodes = [c.get_node(ua.NodeId(table.ids[r], ns)) for r in table.signals_of(dev_index).tolist()]

            class Handler:
                def datachange_notification(self, *_: object) -> None:
                    pass

            sub = await c.create_subscription(round(1000 / rate_hz), Handler())
            for i in range(0, len(nodes), 1000):
                await sub.subscribe_data_change(nodes[i : i + 1000])
            await stop.wait()

    async with asyncio.TaskGroup() as tg:
        for d in table.devices:
            tg.create_task(modbus(d.index) if d.protocol is Protocol.MODBUS else opcua(d.index),
                           name=f"client-{d.name}")


def run_rate(plant_file: Path, rate: float, duration_s: float, settle_s: float,
             with_clients: bool) -> dict[str, object]:
    plant = relocate_ports(load_plant(plant_file), free_port_block)
    table = expand(plant)
    with tempfile.TemporaryDirectory(prefix="bench-sim-") as tmp:
        path = Path(tmp) / "plant.yaml"
        path.write_text(yaml.safe_dump(plant.model_dump(mode="json"), sort_keys=False))
        ready = Path(tmp) / "ready"
        log_path = Path(tmp) / "sim.log"
        with open(log_path, "wb") as log:
            t0 = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-m", "plantwire.cli", "sim", str(path), "--ready-file", str(ready),
                 "--modbus-rate", str(rate), "--opcua-rate", str(rate), "--log-level", "WARNING"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT,
            )
        try:
            while not ready.exists():
                if proc.poll() is not None or time.monotonic() - t0 > 180:
                    raise RuntimeError(f"simulator did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.1)
            startup_s = time.monotonic() - t0
            stop = asyncio.Event()
            loop = asyncio.new_event_loop()
            client_task = loop.create_task(clients(table, rate, stop)) if with_clients else None
            loop.run_until_complete(asyncio.sleep(settle_s))
            pids = {"sim": proc.pid, **{f"opcua{i + 1}": c for i, c in enumerate(children(proc.pid))}}
            before = {k: cpu_s(p) for k, p in pids.items()}
            w0 = time.monotonic()
            loop.run_until_complete(asyncio.sleep(duration_s))
            wall = time.monotonic() - w0
            after = {k: cpu_s(p) for k, p in pids.items()}
            if client_task is not None:
                stop.set()
                loop.run_until_complete(asyncio.wait_for(client_task, 30))
            loop.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        text = log_path.read_text()
    cpu = {k: (after[k] - before[k]) / wall * 100 for k in pids}
    total = sum(after[k] - before[k] for k in pids)
    nsig = len(table)
    missed = {"modbus": sum(int(x) for x in re.findall(r"modbus ticks \d+ \(missed (\d+)", text)),
              "opcua": sum(int(x) for x in re.findall(r"opcua \S+ stopped; ticks \d+ \(missed (\d+)", text))}
    return {
        "plant": str(plant_file.relative_to(ROOT) if plant_file.is_relative_to(ROOT) else plant_file),
        "signals": nsig, "rate_hz": rate, "clients": with_clients, "duration_s": round(wall, 1),
        "startup_s": round(startup_s, 1),
        "cpu_percent": {k: round(v, 1) for k, v in cpu.items()}, "cpu_percent_total": round(sum(cpu.values()), 1),
        "cpu_us_per_update": round(total / (nsig * rate * wall) * 1e6, 3),
        "ticks_missed": missed,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plant", type=Path, default=ROOT / "configs" / "demo" / "plant.yaml")
    ap.add_argument("--rates", default="1,10", help="comma-separated rates in Hz")
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--settle", type=float, default=3.0)
    ap.add_argument("--clients", action="store_true")
    args = ap.parse_args()
    for rate in [float(r) for r in args.rates.split(",")]:
        print(json.dumps(run_rate(args.plant.resolve(), rate, args.duration, args.settle, args.clients)), flush=True)


if __name__ == "__main__":
    main()
