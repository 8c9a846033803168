"""CPU cost of the OPC-UA source per sample: N nodes subscribed at 1 Hz and 10 Hz, against local asyncua servers.

The servers run in their own processes (``--servers``, nodes split evenly; one asyncua process
saturates near 17 k value changes/s, shared/MEASURED.md trap 3) and write every node on each
wall-clock tick. This process runs only the gateway side: one OpcuaSource per server feeding a real
FrameBuffer, drained once a second as the edge does. Printed per rate, as one JSON line:

- ``client_us_per_sample``: this process's CPU time (user + system) / samples delivered;
- ``callback_us_per_sample``: the part spent in our publish callback (numpy columns + sink);
  the rest is asyncua's (socket, binary decoding into Python objects, publish loop);
- ``delivered_ratio``: samples delivered / samples the servers wrote (< 1: servers fell behind).

Usage: python bench/opcua_source.py [--nodes 3000] [--rates 1 10] [--seconds 20] [--servers 3]
                                   [--mode subscribe|poll] [--profile]
Not a test: run it by hand on a quiet machine; the figures go to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from plantwire.lifeline import die_with_parent, stop_on_signals  # noqa: E402

NAMESPACE = "urn:plantwire:bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- server side (subprocess) ---------------------------------------------------------------
async def serve(port: int, ids: list[str], rate_hz: float) -> None:
    import logging
    from datetime import UTC, datetime

    from asyncua import Server, ua

    logging.getLogger("asyncua").setLevel(logging.ERROR)
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/plantwire")
    idx = await server.register_namespace(NAMESPACE)
    objects = server.nodes.objects
    nodeids = []
    for sid in ids:
        node = await objects.add_variable(ua.NodeId(sid, idx), sid, 0.0)
        nodeids.append(node.nodeid)
    await server.start()
    print("ready", flush=True)
    period_ns = int(1e9 / rate_hz)
    k = 0
    next_tick = (time.time_ns() // period_ns + 1) * period_ns
    while True:
        await asyncio.sleep(max(0.0, (next_tick - time.time_ns()) / 1e9))
        now = datetime.fromtimestamp(next_tick / 1e9, tz=UTC)
        k += 1
        for i, nid in enumerate(nodeids):
            await server.write_attribute_value(nid, ua.DataValue(ua.Variant(float(k + i), ua.VariantType.Double),
                                                                 SourceTimestamp=now))
        next_tick += period_ns
        if time.time_ns() > next_tick:  # overran: skip ticks (the delivered ratio shows it)
            next_tick = (time.time_ns() // period_ns + 1) * period_ns


# ---- client side ----------------------------------------------------------------------------
def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def measure(nodes: int, rate_hz: float, seconds: float, servers: int, profile: bool = False,
                  mode: str = "subscribe") -> dict[str, float]:
    import logging

    import numpy as np

    from edge.config import OpcuaSettings
    from edge.frames import FrameBuffer
    from edge.sources.opcua import OpcuaSource
    from edge.sources.stats import SourceStats
    from plantwire.plant import PlantConfig, expand

    logging.getLogger("asyncua").setLevel(logging.ERROR)
    per = nodes // servers
    ports = [free_port() for _ in range(servers)]
    table = expand(PlantConfig.model_validate({
        "site": "bench",
        "templates": {"t": {"signals": [{"name": "s{j}", "count": 100}]}},
        "devices": [{"name": f"opc{k}", "protocol": "opcua", "port": p, "namespace": NAMESPACE}
                    for k, p in enumerate(ports)],
        "machines": [{"name": f"m{k}_{{i}}", "template": "t", "count": per // 100, "device": f"opc{k}"}
                     for k in range(servers)],
    }))
    procs = []
    for k, port in enumerate(ports):
        ids = [table.ids[r] for r in table.signals_of(k).tolist()]
        procs.append(subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port), str(rate_hz), *ids],
            stdout=subprocess.PIPE, start_new_session=True, preexec_fn=die_with_parent()))
    try:
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != b"ready":
                raise RuntimeError("server did not start")
        buffer = FrameBuffer(400_000)
        buffer.on_full = buffer.drain
        settings = OpcuaSettings.model_validate({
            "publishing_interval_ms": 1000, "max_items_per_subscription": 1000, "queue_size": max(1, int(rate_hz) + 1),
            "groups": [{"match": ["*"], "mode": "poll", "poll_period_ms": round(1000 / rate_hz)}]
            if mode == "poll" else [],
        })
        callback_s = [0.0]
        sources = []
        for dev in table.devices:
            src = OpcuaSource(dev, table, settings, buffer.append, SourceStats())
            inner = src._on_publish

            def timed(sub, result, inner=inner):  # type: ignore[no-untyped-def]
                t = time.thread_time()
                inner(sub, result)
                callback_s[0] += time.thread_time() - t

            src._on_publish = timed  # type: ignore[method-assign]
            sources.append(src)

        async def drain() -> None:
            while True:
                await asyncio.sleep(1.0)
                buffer.drain()

        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(s.run(), name=f"source {s.device.name}") for s in sources]
            tasks.append(tg.create_task(drain(), name="drain"))
            while sum(s.stats.samples_good for s in sources) < len(table):  # subscribed, initial values in
                await asyncio.sleep(0.1)
            await asyncio.sleep(2.0)  # settle
            profiler = None
            if profile:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            c0, w0, cb0 = cpu_s(), time.monotonic(), callback_s[0]
            n0 = sum(s.stats.samples_good + s.stats.samples_bad for s in sources)
            await asyncio.sleep(seconds)
            c1, w1, cb1 = cpu_s(), time.monotonic(), callback_s[0]
            if profiler is not None:
                import pstats

                profiler.disable()
                pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
            n1 = sum(s.stats.samples_good + s.stats.samples_bad for s in sources)
            for t in tasks:
                t.cancel()
        n = max(n1 - n0, 1)
        wall = w1 - w0
        return {
            "mode": mode, "nodes": len(table), "rate_hz": rate_hz, "servers": servers, "seconds": round(wall, 1),
            "samples_per_s": round(n / wall), "delivered_ratio": round(n / (len(table) * rate_hz * wall), 3),
            "client_cpu_pct": round(100 * (c1 - c0) / wall, 1),
            "client_us_per_sample": round(1e6 * (c1 - c0) / n, 2),
            "callback_us_per_sample": round(1e6 * (cb1 - cb0) / n, 2),
            "errors": sum(s.stats.errors for s in sources),
            "numpy": np.__version__,
        }
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, 15)
            p.wait(timeout=10)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        port, rate = int(sys.argv[2]), float(sys.argv[3])
        asyncio.run(serve(port, sys.argv[4:], rate))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=3000)
    ap.add_argument("--rates", type=float, nargs="+", default=[1.0, 10.0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--servers", type=int, default=3)
    ap.add_argument("--mode", choices=["subscribe", "poll"], default="subscribe",
                    help="poll: bulk Read on ticks instead of subscriptions (callback_us_per_sample is then 0)")
    ap.add_argument("--profile", action="store_true", help="print where the client's time goes (cProfile, stderr)")
    args = ap.parse_args()
    for rate in args.rates:
        figures = asyncio.run(measure(args.nodes, rate, args.seconds, args.servers, args.profile, args.mode))
        print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    with stop_on_signals():  # SIGTERM/SIGINT/SIGHUP run the clean-up: no child is left behind
        main()
