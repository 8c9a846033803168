"""One OPC-UA server (asyncua) serving one plant device's signals; run as its own process.

Why a process per server: one asyncua server process saturates around 17,000 value changes a
second once a client subscribes (shared/MEASURED.md), so the demo plant spreads its OPC-UA signals
over several servers and each gets a core's share. ``python -m simulators.opcua_server PLANT
--device NAME ...`` is what ``simulators.app`` starts; it takes the same options as the parent
(same epoch and seed, hence the same values and anomalies) and writes ``--ready-file`` once it
listens.

Address space, as the edge expects it (plantwire.plant docstring): namespace ``Device.namespace``;
one variable per signal, NodeId ``ns=<idx>;s=<signal id>``, browse name the signal's short name,
Double, with an ``EngineeringUnits`` property (UNECE-style EUInformation, display name = unit);
variables sit in a folder hierarchy that follows the dots of the machine id (``line1`` /
``compressor01``), folder NodeIds ``s=<path>``.

Updates: every tick writes the signals whose value changed (a constant status word is not
re-notified, as a PLC would not), SourceTimestamp = the simulated time of the tick. A NaN value
(sensor dropout) is written as Bad_SensorFailure with no value, which is what the OPC-UA spec asks
of a server whose sensor failed. Items forced bad by a fault get that status instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
from asyncua import Server, ua

from plantwire.plant import Device, Protocol, SignalTable

from .runtime import SimOptions, TickLoop, add_common_arguments, build_schedule, load_table, options_from_args
from .signals import SignalModel

__all__ = ["OpcuaPlantServer", "main"]

log = logging.getLogger(__name__)

_BAD_SENSOR = ua.StatusCode(ua.StatusCodes.BadSensorFailure)
_GOOD = ua.StatusCode(ua.StatusCodes.Good)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class OpcuaPlantServer:
    """An asyncua server for ``device`` whose values come from ``model`` (rows of the device)."""

    def __init__(self, table: SignalTable, device: Device, model: SignalModel, *, epoch_ns: int = 0) -> None:
        if device.protocol is not Protocol.OPCUA:
            raise ValueError(f"device {device.name!r} is not an OPC-UA device")
        self.table = table
        self.device = device
        self.model = model
        self.epoch_ns = epoch_ns
        self.server = Server()
        self.ns_index = 0
        self.node_ids: list[ua.NodeId] = []
        self._last = np.full(len(model), np.nan)
        self._first = True
        self.forced_bad: dict[int, ua.StatusCode] = {}  # position in model -> status
        self.writes = 0

    async def start(self) -> None:
        s = self.server
        await s.init()
        s.set_endpoint(self.device.endpoint)
        s.set_server_name(f"plantwire simulator {self.device.name}")
        s.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        self.ns_index = await s.register_namespace(self.device.namespace)
        await self._build_address_space()
        await s.start()

    async def _build_address_space(self) -> None:
        idx = self.ns_index
        folders: dict[str, object] = {}
        objects = self.server.nodes.objects

        async def folder(path: str) -> object:
            got = folders.get(path)
            if got is not None:
                return got
            parent_path, _, name = path.rpartition(".")
            parent = await folder(parent_path) if parent_path else objects
            node = await parent.add_folder(ua.NodeId(path, idx), ua.QualifiedName(name, idx))  # type: ignore[attr-defined]
            folders[path] = node
            return node

        for row in self.model.rows.tolist():
            sid = self.table.ids[row]
            machine = self.table.machine_ids[int(self.table.machine[row])]
            parent = await folder(machine)
            name = sid[len(machine) + 1 :]
            nid = ua.NodeId(sid, idx)
            var = await parent.add_variable(nid, ua.QualifiedName(name, idx),  # type: ignore[attr-defined]
                                            ua.Variant(0.0, ua.VariantType.Double))
            unit = self.table.units[row]
            eu = ua.EUInformation(NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact", UnitId=-1,
                                  DisplayName=ua.LocalizedText(unit), Description=ua.LocalizedText(unit))
            await var.add_property(ua.NodeId(f"{sid}.EngineeringUnits", idx), "EngineeringUnits", eu)
            self.node_ids.append(nid)

    async def stop(self) -> None:
        await self.server.stop()

    async def tick(self, k: int, t_s: float, wall_ns: int) -> None:
        """Compute tick ``k`` and write what changed."""
        values = self.model.step(k, t_s)
        changed = (values != self._last) & ~(np.isnan(values) & np.isnan(self._last))
        if self._first:
            changed[:] = True
            self._first = False
        self._last[:] = values
        idx = np.flatnonzero(changed)
        if self.forced_bad:
            idx = np.union1d(idx, np.fromiter(self.forced_bad, dtype=np.int64))
        if idx.size == 0:
            return
        ts = _EPOCH + dt.timedelta(microseconds=(self.epoch_ns + round(t_s * 1e9)) // 1000)
        await self._write(idx, values[idx].tolist(), ts)

    async def _write(self, idx: np.ndarray, values: list[float], ts: dt.datetime) -> None:
        aspace = self.server.iserver.aspace
        value_attr = ua.AttributeIds.Value
        double = ua.VariantType.Double
        forced = self.forced_bad
        for i, v in zip(idx.tolist(), values, strict=True):
            status = forced.get(i)
            if status is not None:
                dv = ua.DataValue(StatusCode_=status, SourceTimestamp=ts, ServerTimestamp=ts)
            elif math.isnan(v):
                dv = ua.DataValue(StatusCode_=_BAD_SENSOR, SourceTimestamp=ts, ServerTimestamp=ts)
            else:
                dv = ua.DataValue(ua.Variant(v, double), SourceTimestamp=ts, ServerTimestamp=ts)
            await aspace.write_attribute_value(self.node_ids[i], value_attr, dv)
        self.writes += len(values)


async def serve(opts: SimOptions, device_name: str, ready_file: Path | None) -> None:
    table = load_table(opts)
    matches = [d for d in table.devices if d.name == device_name]
    if not matches or matches[0].protocol is not Protocol.OPCUA:
        raise SystemExit(f"no OPC-UA device named {device_name!r} in {opts.plant}")
    device = matches[0]
    model = SignalModel(table, table.signals_of(device.index), opts.seed, build_schedule(table, opts))
    srv = OpcuaPlantServer(table, device, model, epoch_ns=opts.epoch_ns)
    await srv.start()
    if ready_file is not None:
        ready_file.write_text(f"{os.getpid()}\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()
    ticker = TickLoop(opts.opcua_rate_hz, opts.epoch_ns, opts.time_scale, srv.tick)
    try:
        async with asyncio.TaskGroup() as tg:
            tick_task = tg.create_task(ticker.run(), name=f"opcua-ticks-{device.name}")
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                if os.getppid() != parent:  # orphaned: the simulator that started us is gone
                    log.warning("parent process went away; stopping")
                    break
            tick_task.cancel()
    finally:
        await srv.stop()
        print(f"plantwire sim: opcua {device.name} stopped; ticks {ticker.ticks} (missed {ticker.missed}, "
              f"busy {ticker.busy_ns / 1e9:.2f} s), writes {srv.writes}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators.opcua_server")
    add_common_arguments(parser)
    parser.add_argument("--device", required=True, help="name of the OPC-UA device to serve")
    parser.add_argument("--ready-file", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    t0 = time.monotonic()
    try:
        asyncio.run(serve(options_from_args(args), args.device, args.ready_file))
    except KeyboardInterrupt:
        pass
    log.debug("served for %.1f s", time.monotonic() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
