"""CPU cost per sample of Modbus acquisition + decode (ModbusSource into a FrameBuffer), against real servers.

The servers run in a separate process (its own session, stopped by PID) so that only the gateway
side is measured: pymodbus client, the source's polling and vectorised decode, and the sink's copy
into a FrameBuffer. Not collected by pytest.

    .venv/bin/python bench/modbus_source.py                       # 12,000 float32 on 40 devices, 1 Hz
    .venv/bin/python bench/modbus_source.py --plant demo          # the demo plant's Modbus part (mixed types)
    .venv/bin/python bench/modbus_source.py --period-ms 100       # 10 Hz
    .venv/bin/python bench/modbus_source.py --profile             # where the time goes (cProfile)

A stand-in for the edge's flush (``--flush-ms``): once a second, after draining, that much work holding
the GIL (a pure-Python loop: the worst case; ``--flush-gil release`` sleeps instead, as the numba kernels
release the GIL; the real flush is in between) runs either on the
event loop the polls run in (``--flush-on loop``: how edge/app.py flushed before edge/judge.py) or on a
worker thread (``--flush-on thread``: the judge thread). Missed ticks and late polls show what it costs
the polls:

    .venv/bin/python bench/modbus_source.py --plant demo --period-ms 100 --flush-ms 150 --flush-on loop
    .venv/bin/python bench/modbus_source.py --plant demo --period-ms 100 --flush-ms 150 --flush-on thread
    .venv/bin/python bench/modbus_source.py ... --flush-on thread --switch-interval-ms 1   # GIL handed back sooner
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import json
import pstats
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.config import ModbusSettings  # noqa: E402
from edge.frames import FrameBuffer  # noqa: E402
from edge.sources.modbus import ModbusSource  # noqa: E402
from edge.sources.modbus_codec import encode_registers  # noqa: E402
from edge.sources.stats import SourceStats  # noqa: E402
from plantwire.configfile import load_plant  # noqa: E402
from plantwire.lifeline import die_with_parent, stop_on_signals, stop_process  # noqa: E402
from plantwire.plant import (  # noqa: E402
    BYTE_ORDER_ORDER,
    TABLE_ORDER,
    TYPE_ORDER,
    PlantConfig,
    Protocol,
    RegisterType,
    SignalTable,
    Table,
    expand,
)


def build_table(plant: str, devices: int, signals: int, ports: list[int]) -> SignalTable:
    if plant == "demo":
        table = expand(load_plant(ROOT / "configs" / "demo" / "plant.yaml"))
    else:
        per_machine = 30
        machines = signals // per_machine
        table = expand(PlantConfig.model_validate({
            "site": "bench",
            "templates": {"f": {"signals": [{"name": "v{j}", "count": per_machine, "type": "float32"}]}},
            "devices": [{"name": "plc{i}", "protocol": "modbus", "count": devices, "port": 20000}],
            "machines": [{"name": "m{i}", "template": "f", "count": machines, "device": "plc{i}"}],
        }))
    modbus = [d for d in table.devices if d.protocol is Protocol.MODBUS]
    for d, port in zip(modbus, ports, strict=False):
        table.devices[d.index] = dataclasses.replace(d, host="127.0.0.1", port=port)
    return table


def modbus_devices(table: SignalTable) -> list[int]:
    return [d.index for d in table.devices if d.protocol is Protocol.MODBUS]


# ---- server process -----------------------------------------------------------------------------
async def serve(table: SignalTable) -> None:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    servers = []
    for index in modbus_devices(table):
        dev = table.devices[index]
        words: dict[Table, dict[int, int]] = {t: {} for t in Table}
        for r in table.signals_of(index).tolist():
            tbl, rt = TABLE_ORDER[table.table[r]], TYPE_ORDER[table.reg_type[r]]
            raw = 1 if rt in (RegisterType.BIT, RegisterType.BOOL) else (r % 1000) + 0.5
            if rt not in (RegisterType.FLOAT32, RegisterType.FLOAT64):
                raw = int(raw)
            addr = int(table.address[r])
            if tbl in (Table.COIL, Table.DISCRETE):
                words[tbl][addr] = 1
                continue
            for j, w in enumerate(encode_registers(raw, rt, BYTE_ORDER_ORDER[table.byte_order[r]], int(table.bit[r]))):
                words[tbl][addr + j] = words[tbl].get(addr + j, 0) | w

        def block(tbl: Table, bits: bool, words: dict[Table, dict[int, int]] = words) -> list[SimData]:
            w = words[tbl]
            size = max(w, default=0) + 1
            if bits:
                return [SimData(0, values=[bool(w.get(a, 0)) for a in range(size)], datatype=DataType.BITS)]
            return [SimData(0, values=[w.get(a, 0) for a in range(size)], datatype=DataType.REGISTERS)]

        sim = SimDevice(id=dev.unit_id, simdata=(block(Table.COIL, True), block(Table.DISCRETE, True),
                                                 block(Table.HOLDING, False), block(Table.INPUT, False)))
        server = ModbusTcpServer(sim, address=("127.0.0.1", dev.port))
        await server.serve_forever(background=True)
        servers.append(server)
    print("ready", flush=True)
    await asyncio.Event().wait()


# ---- client (measured) --------------------------------------------------------------------------
def cpu_s() -> tuple[float, float]:
    """(user, system) CPU seconds of this process."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime, ru.ru_stime


async def measure(table: SignalTable, args: argparse.Namespace) -> dict[str, float]:
    settings = ModbusSettings(period_ms=args.period_ms, timeout_s=1.0, max_gap=16,
                              connections_per_device=args.connections)
    buffer = FrameBuffer(400_000, on_full=lambda: buffer.drain())

    def busy(seconds: float) -> None:  # holds the GIL throughout (worst case), or sleeps (a nogil kernel)
        if args.flush_gil == "release":
            time.sleep(seconds)
            return
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    async def drain() -> None:  # stands in for the publisher: empties the buffer once a second
        while True:
            await asyncio.sleep(1.0)
            buffer.drain()
            if args.flush_ms > 0 and args.flush_on == "loop":
                busy(args.flush_ms / 1000.0)
            elif args.flush_ms > 0:
                await asyncio.to_thread(busy, args.flush_ms / 1000.0)

    stats = [SourceStats() for _ in modbus_devices(table)]
    sources = [ModbusSource(table.devices[i], table, settings, buffer.append, st)
               for i, st in zip(modbus_devices(table), stats, strict=True)]
    profiler = cProfile.Profile() if args.profile else None
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(s.run(), name=f"modbus-{s.device.name}") for s in sources]
        tasks.append(tg.create_task(drain(), name="drain"))
        await asyncio.sleep(args.warmup_s)
        good0, bad0 = sum(s.samples_good for s in stats), sum(s.samples_bad for s in stats)
        missed0, late0 = sum(s.missed_ticks for s in stats), sum(s.late_polls for s in stats)
        (u0, s0), w0 = cpu_s(), time.perf_counter()
        if profiler:
            profiler.enable()
        await asyncio.sleep(args.duration_s)
        if profiler:
            profiler.disable()
        (u1, s1), w1 = cpu_s(), time.perf_counter()
        good, bad = sum(s.samples_good for s in stats) - good0, sum(s.samples_bad for s in stats) - bad0
        missed, late = sum(s.missed_ticks for s in stats) - missed0, sum(s.late_polls for s in stats) - late0
        for t in tasks:
            t.cancel()
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(40)
    samples = good + bad
    c0, c1 = u0 + s0, u1 + s1
    blocks = sum(len(s.plan.blocks) for s in sources)
    return {
        "devices": len(sources),
        "signals": sum(len(s.codec) for s in sources),
        "blocks_per_sweep": blocks,
        "registers_per_sweep": sum(s.plan.registers_read for s in sources),
        "period_ms": args.period_ms,
        "connections_per_device": args.connections,
        "window_s": round(w1 - w0, 2),
        "samples": samples,
        "samples_bad": bad,
        "flush_ms": args.flush_ms,
        "flush_on": args.flush_on,
        "flush_gil": args.flush_gil,
        "switch_interval_ms": round(sys.getswitchinterval() * 1000, 3),
        "ticks_in_window": round((w1 - w0) * 1000 / args.period_ms) * len(sources),
        "missed_ticks": missed,
        "late_polls": late,
        "cpu_s": round(c1 - c0, 3),
        "cpu_user_s": round(u1 - u0, 3),
        "cpu_sys_s": round(s1 - s0, 3),
        "cpu_percent": round(100 * (c1 - c0) / (w1 - w0), 1),
        "us_per_sample": round(1e6 * (c1 - c0) / max(samples, 1), 3),
        "us_per_request": round(1e6 * (c1 - c0) / max(1, blocks * (w1 - w0) * 1000 / args.period_ms), 1),
    }


def decode_micro(table: SignalTable) -> dict[str, float]:
    """Decode + sink alone: the part of a poll that is ours, without the network."""
    settings = ModbusSettings()
    index = modbus_devices(table)[0]
    buffer = FrameBuffer(1_000_000)
    source = ModbusSource(table.devices[index], table, settings, buffer.append, SourceStats())
    codec = source.codec
    payloads = [bytes(b.nbytes) for b in source.plan.blocks]
    n, reps = len(codec), 2000
    t0 = time.perf_counter()
    for _ in range(reps):
        for k, p in enumerate(payloads):
            codec.load(k, p)
    t1 = time.perf_counter()
    for _ in range(reps):
        codec.decode()
    t2 = time.perf_counter()
    for _ in range(reps):
        buffer.append(1, codec.signals, codec.values, 0)
        if len(buffer) > 900_000:
            buffer.drain()
    t3 = time.perf_counter()
    return {
        "signals_per_device": n,
        "load_us_per_sample": round(1e6 * (t1 - t0) / (reps * n), 4),
        "decode_us_per_sample": round(1e6 * (t2 - t1) / (reps * n), 4),
        "framebuffer_append_us_per_sample": round(1e6 * (t3 - t2) / (reps * n), 4),
    }


def free_ports(count: int) -> list[int]:
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plant", choices=["float32", "demo"], default="float32")
    ap.add_argument("--devices", type=int, default=40)
    ap.add_argument("--signals", type=int, default=12_000)
    ap.add_argument("--period-ms", type=int, default=1000)
    ap.add_argument("--connections", type=int, default=1)
    ap.add_argument("--warmup-s", type=float, default=3.0)
    ap.add_argument("--duration-s", type=float, default=30.0)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--flush-ms", type=float, default=0.0, help="stand-in flush: CPU ms once a second (GIL held)")
    ap.add_argument("--flush-on", choices=["loop", "thread"], default="thread",
                    help="where the stand-in flush runs: the polls' event loop, or a worker thread")
    ap.add_argument("--flush-gil", choices=["hold", "release"], default="hold",
                    help="the stand-in flush holds the GIL (pure Python, worst case) or releases it (as numba nogil)")
    ap.add_argument("--switch-interval-ms", type=float, default=0.0,
                    help="sys.setswitchinterval for the client (0: Python's 5 ms): how soon the polls' thread gets "
                         "the GIL back from a flush thread that holds it")
    ap.add_argument("--serve", help=argparse.SUPPRESS)  # internal: run the servers for these ports
    args = ap.parse_args()

    if args.serve:
        ports = [int(p) for p in args.serve.split(",")]
        asyncio.run(serve(build_table(args.plant, args.devices, args.signals, ports)))
        return

    ports = free_ports(args.devices if args.plant == "float32" else 40)
    table = build_table(args.plant, args.devices, args.signals, ports)
    cmd = [sys.executable, __file__, "--plant", args.plant, "--devices", str(args.devices),
           "--signals", str(args.signals), "--serve", ",".join(map(str, ports))]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True, text=True,
                              preexec_fn=die_with_parent())
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise SystemExit("servers did not start")
        if args.switch_interval_ms > 0:
            sys.setswitchinterval(args.switch_interval_ms / 1000.0)
        result = {**asyncio.run(measure(table, args)), **decode_micro(table)}
        print(json.dumps(result, indent=2))
    finally:
        stop_process(server)


if __name__ == "__main__":
    with stop_on_signals():  # SIGTERM/SIGINT/SIGHUP run the clean-up: no child is left behind
        main()
