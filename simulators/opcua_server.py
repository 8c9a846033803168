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

History: servers chosen by ``--opcua-history`` (default every other one: "some servers", so a
gateway meets both kinds) historize every variable in memory (``simulators.history``: numpy ring
buffers fed by the tick, not asyncua's per-node subscription), the last ``--history-samples``
values each, and answer HistoryRead (raw) for back-fill. History is lost when the server restarts,
as it is on PLCs that keep it in RAM.

Security: ``--opcua-security both`` (default) offers a None endpoint and a Basic256Sha256
SignAndEncrypt one. The server's key and self-signed certificate (application URI
``urn:plantwire:sim:<device>``) are generated on first start under ``--pki-dir`` and reused after,
so a gateway that pinned the certificate keeps trusting it. Client certificates are accepted
without a trust list: this is a test bench, not a plant.

Command points (``simulators.commands``): machines that declare them (a leak-test station's
``hold`` and ``stack_light``) get writable Double variables ``ns=<idx>;s=<machine>.cmd.<name>``;
each tick reads them back, clips them to their range and applies a hold to the physics.

Transport faults (``simulators.schedule``) for this server: ``bad_status`` writes the chosen
status on the chosen items while it lasts; ``restart`` stops the server (every session and
subscription is gone, clients see the connection drop) and starts a fresh one when it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import stat
import sys
import time
from pathlib import Path

import numpy as np
from asyncua import Server, ua

from plantwire.configfile import ConfigError
from plantwire.plant import Device, Protocol, SignalTable

from .aspace import fast_init
from .commands import CommandPoints
from .history import RingHistory
from .physics import machine_templates
from .runtime import SimOptions, TickLoop, World, add_common_arguments, build_world, options_from_args
from .schedule import TransportFault, TransportKind, faults_from_data
from .signals import SignalModel

__all__ = ["OpcuaPlantServer", "main"]

log = logging.getLogger(__name__)

_BAD_SENSOR = ua.StatusCode(ua.StatusCodes.BadSensorFailure)
_GOOD = ua.StatusCode(ua.StatusCodes.Good)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
WRITE_SLICE = 250  # writes between yields to the event loop


class _SharedDataValue(ua.DataValue):
    """A DataValue that deep-copies as itself.

    asyncua's server deep-copies every written value once per monitored item (to guard against the
    writer mutating it later), which is about 23 µs a copy and three quarters of a subscribed
    server's CPU (shared/MEASURED.md, trap 3). We build a fresh DataValue per write and never touch
    it again, and the server replaces rather than mutates values, so sharing it is safe. Encodes
    byte for byte as a DataValue (same dataclass fields).
    """

    __slots__ = ()

    def __deepcopy__(self, memo: dict[int, object]) -> _SharedDataValue:
        return self


class OpcuaPlantServer:
    """An asyncua server for ``device`` whose values come from ``model`` (rows of the device)."""

    def __init__(self, table: SignalTable, device: Device, model: SignalModel, *, epoch_ns: int = 0,
                 history_samples: int = 0, security: str = "none", pki_dir: Path | None = None,
                 commands: CommandPoints | None = None) -> None:
        if device.protocol is not Protocol.OPCUA:
            raise ValueError(f"device {device.name!r} is not an OPC-UA device")
        if security != "none" and pki_dir is None:
            raise ValueError("secure endpoints need a pki_dir for the server certificate")
        self.table = table
        self.device = device
        self.model = model
        self.epoch_ns = epoch_ns
        self.history_samples = history_samples
        self.security = security
        self.pki_dir = pki_dir
        self.up = False
        self.history: RingHistory | None = None
        self.server = Server()
        self.ns_index = 0
        self.node_ids: list[ua.NodeId] = []
        self._last = np.full(len(model), np.nan)
        self._first = True
        self.forced_bad: dict[int, ua.StatusCode] = {}  # position in model -> status
        self.writes = 0
        self.commands = commands
        self._command_points = commands.of_device(device.index) if commands is not None else []
        self._command_nodes: list[ua.NodeId] = []

    @property
    def application_uri(self) -> str:
        return f"urn:plantwire:sim:{self.device.name}"

    async def start(self) -> None:
        """Build a fresh server (address space, history, security) and listen."""
        s = self.server = Server()
        self.node_ids = []
        self._first = True
        await fast_init(s)  # the standard address space from a cached template (simulators/aspace.py)
        s.set_endpoint(self.device.endpoint)
        s.set_server_name(f"plantwire simulator {self.device.name}")
        await s.set_application_uri(self.application_uri)
        policies = {"none": [ua.SecurityPolicyType.NoSecurity],
                    "encrypt": [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt],
                    "both": [ua.SecurityPolicyType.NoSecurity, ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt]}
        s.set_security_policy(policies[self.security])
        if self.security != "none":
            assert self.pki_dir is not None
            cert, key = await ensure_server_certificate(self.pki_dir, self.device, self.application_uri)
            await s.load_certificate(str(cert))
            await s.load_private_key(str(key))
        self.ns_index = await s.register_namespace(self.device.namespace)
        await self._build_address_space()
        self.history = None
        if self.history_samples > 0:
            self.history = RingHistory(self.node_ids, self.history_samples)
            s.iserver.history_manager.set_storage(self.history)
            aspace = s.iserver.aspace
            for nid in self.node_ids:  # advertise it, as enable_history_data_change would
                attrs = aspace._nodes[nid].attributes
                attrs[ua.AttributeIds.Historizing].value = ua.DataValue(ua.Variant(True, ua.VariantType.Boolean))
                for level in (ua.AttributeIds.AccessLevel, ua.AttributeIds.UserAccessLevel):
                    old = attrs[level].value.Value.Value
                    attrs[level].value = ua.DataValue(ua.Variant(old | ua.AccessLevel.HistoryRead.mask,
                                                                 ua.VariantType.Byte))
        await s.start()
        self.up = True

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
        self._command_nodes = []
        if self.commands is not None:
            for i in self._command_points:
                point = self.commands.points[i]
                machine = self.table.machine_ids[point.machine]
                parent = await folder(f"{machine}.cmd")
                nid = ua.NodeId(point.node_identifier(self.table), idx)
                var = await parent.add_variable(nid, ua.QualifiedName(point.name.value, idx),  # type: ignore[attr-defined]
                                                ua.Variant(float(self.commands.values[i]), ua.VariantType.Double))
                await var.set_writable()
                self._command_nodes.append(nid)

    async def stop(self) -> None:
        if self.up:
            self.up = False
            await self.server.stop()

    def _read_commands(self, t_s: float) -> None:
        """Apply what clients wrote to the command points (clipped to their range) to the physics."""
        if self.commands is None or not self._command_nodes:
            return
        aspace = self.server.iserver.aspace
        changed = False
        for i, nid in zip(self._command_points, self._command_nodes, strict=True):
            dv = aspace.read_attribute_value(nid, ua.AttributeIds.Value)
            raw = dv.Value.Value if dv.Value is not None else None
            if not isinstance(raw, (int, float)):
                continue
            point = self.commands.points[i]
            v = float(min(max(raw, point.low), point.high))
            if v != self.commands.values[i]:
                self.commands.values[i] = v
                self.commands.writes += 1
                changed = True
        if changed and self.model.physics is not None:
            self.model.physics.set_held(self.commands.held(), t_s)

    async def tick(self, k: int, t_s: float, wall_ns: int) -> None:
        """Compute tick ``k`` and write what changed."""
        if not self.up:
            return
        self._read_commands(t_s)
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
        ts_ns = self.epoch_ns + round(t_s * 1e9)
        vals = values[idx]
        status = np.where(np.isnan(vals), np.uint32(_BAD_SENSOR.value), np.uint32(0))
        for j, i in enumerate(idx.tolist()) if self.forced_bad else ():
            forced = self.forced_bad.get(i)
            if forced is not None:
                status[j] = forced.value
        await self._write(idx, vals.tolist(), status.tolist(), _EPOCH + dt.timedelta(microseconds=ts_ns // 1000))
        if self.history is not None:
            self.history.record(ts_ns, idx, vals, status)

    async def _write(self, idx: np.ndarray, values: list[float], status: list[int], ts: dt.datetime) -> None:
        aspace = self.server.iserver.aspace
        value_attr = ua.AttributeIds.Value
        double = ua.VariantType.Double
        for j, (i, v, code) in enumerate(zip(idx.tolist(), values, status, strict=True)):
            if j % WRITE_SLICE == WRITE_SLICE - 1:
                await asyncio.sleep(0)  # let publishing and client requests in between
            if code:
                dv = _SharedDataValue(StatusCode=ua.StatusCode(code), SourceTimestamp=ts, ServerTimestamp=ts)
            else:
                dv = _SharedDataValue(ua.Variant(v, double), SourceTimestamp=ts, ServerTimestamp=ts)
            await aspace.write_attribute_value(self.node_ids[i], value_attr, dv)
        self.writes += len(values)

    def apply_bad_status(self, fault: TransportFault, on: bool) -> None:
        rows = np.array(fault.rows or self.model.rows.tolist(), dtype=np.int64)
        positions = self.model.position[rows].tolist()
        for p in positions:
            if on:
                self.forced_bad[p] = ua.StatusCode(fault.status)
            else:
                self.forced_bad.pop(p, None)
        if not on:  # rewrite the real values of the items that were bad at the next tick
            self._last[positions] = np.nan


async def ensure_server_certificate(pki_dir: Path, device: Device, application_uri: str) -> tuple[Path, Path]:
    """The server's DER certificate and PEM key under ``pki_dir``, generated (self-signed) on first start."""
    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID

    pki_dir.mkdir(parents=True, exist_ok=True)
    cert, key = pki_dir / f"{device.name}.der", pki_dir / f"{device.name}.pem"
    if not (cert.exists() and key.exists()):
        await setup_self_signed_certificate(
            key, cert, application_uri, device.host,
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            {"countryName": "DE", "organizationName": "plantwire", "commonName": f"plantwire sim {device.name}"},
        )
        os.chmod(key, 0o600)
    return cert, key


def history_enabled(spec: str, table: SignalTable, device: Device) -> bool:
    """Whether ``device`` keeps history under ``--opcua-history spec``."""
    opc = [d.name for d in table.devices if d.protocol is Protocol.OPCUA]
    if spec == "all":
        return True
    if spec == "none":
        return False
    if spec == "odd":
        return opc.index(device.name) % 2 == 0
    return device.name in {x.strip() for x in spec.split(",")}


async def _commands(world: World, device: Device, faults: list[TransportFault]) -> None:
    """Faults forwarded by the parent's control API, one JSON faults mapping per stdin line."""
    if not stat.S_ISFIFO(os.fstat(sys.stdin.fileno()).st_mode):
        return  # started by hand (a terminal, /dev/null): nobody forwards commands
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        try:
            _, loaded = faults_from_data(json.loads(line), world.table, "control command")
        except (ValueError, ConfigError) as exc:
            log.error("ignoring a control command: %s", exc)
            continue
        world.schedule.add_fixed(loaded.events)
        faults.extend(f for f in loaded.transport if f.device == device.index)


async def _fault_loop(srv: OpcuaPlantServer, faults: list[TransportFault], opts: SimOptions) -> None:
    active: list[bool] = []
    while True:
        t_s = (time.time_ns() - opts.epoch_ns) / 1e9 * opts.time_scale
        active += [False] * (len(faults) - len(active))
        for i, f in enumerate(faults):
            on = f.start_s <= t_s < f.end_s
            if on == active[i]:
                continue
            active[i] = on
            log.warning("transport fault %s on %s %s", f.kind.value, srv.device.name, "starts" if on else "ends")
            if f.kind is TransportKind.BAD_STATUS:
                srv.apply_bad_status(f, on)
            elif f.kind is TransportKind.RESTART:
                if on:
                    await srv.stop()
                else:
                    await srv.start()
        await asyncio.sleep(0.05)


async def serve(opts: SimOptions, device_name: str, ready_file: Path | None) -> None:
    world = build_world(opts)
    table = world.table
    matches = [d for d in table.devices if d.name == device_name]
    if not matches or matches[0].protocol is not Protocol.OPCUA:
        raise SystemExit(f"no OPC-UA device named {device_name!r} in {opts.plant}")
    device = matches[0]
    model = world.model(table.signals_of(device.index), opts.seed)
    history = opts.history_samples if history_enabled(opts.opcua_history, table, device) else 0
    pki = opts.pki_dir or opts.plant.resolve().parent / "sim-pki"
    srv = OpcuaPlantServer(table, device, model, epoch_ns=opts.epoch_ns, history_samples=history,
                           security=opts.opcua_security, pki_dir=pki,
                           commands=CommandPoints(table, machine_templates(world.plant)))
    faults = [f for f in (world.faults.transport if world.faults else []) if f.device == device.index]
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
            fault_task = tg.create_task(_fault_loop(srv, faults, opts), name=f"opcua-faults-{device.name}")
            command_task = tg.create_task(_commands(world, device, faults), name=f"opcua-commands-{device.name}")
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                if os.getppid() != parent:  # orphaned: the simulator that started us is gone
                    log.warning("parent process went away; stopping")
                    break
            tick_task.cancel()
            fault_task.cancel()
            command_task.cancel()
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
