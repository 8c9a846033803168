"""``plantwire sim PLANT.yaml``: serve a plant's signals over Modbus TCP and OPC-UA, with ground truth.

Wiring, and why:
- Modbus slaves run in this process: one numpy value vector for every Modbus signal, encoded per
  tick into per-device register images (``simulators.encoding``) that the servers slice on each
  read. 12,000 signals at 10 Hz cost a few percent of a core this way.
- Each OPC-UA server runs in its own child process (``simulators.opcua_server``), given the same
  options and epoch so it computes the same values and anomalies; children stay in our process
  group (a signal to the group stops everything) and stop by themselves if we disappear: the kernel
  sends them SIGTERM when we die, even by SIGKILL (``plantwire.lifeline.die_with_parent``), and
  they watch our pid as well.
- ``--ready-file`` is written (atomically) only once every Modbus slave and every OPC-UA server
  listens, so an orchestrator can start a gateway against it without retry loops.
- ``--labels`` receives one JSON line per injected anomaly as it starts (``simulators.faults``).
- SIGTERM / SIGINT / SIGHUP, or the death of whoever started us, stop everything cleanly
  (children are stopped by PID) and exit 0; a child that
  dies on its own stops the simulator with exit 1, as a half-served plant would only mislead.
- Config errors are reported with their path and exit 2, without opening any port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from plantwire.configfile import ConfigError
from plantwire.lifeline import STOP_SIGNALS, die_with_parent, watch_parent
from plantwire.plant import Protocol, SignalTable

from .commands import CommandPoints
from .control import ControlServer, parse_body
from .encoding import DeviceImage, RegisterEncoder
from .faults import LabelWriter
from .modbus_server import ModbusSlave, UnitMode
from .physics import machine_templates
from .runtime import SimOptions, TickLoop, add_common_arguments, build_world, options_from_args
from .schedule import TransportFault, TransportKind, faults_from_data

__all__ = ["Simulator", "main"]

log = logging.getLogger("plantwire.sim")

LABEL_PERIOD_S = 0.5
TRANSPORT_PERIOD_S = 0.05


class Simulator:
    """Everything ``plantwire sim`` runs, usable in-process by tests (``async with Simulator(...)``)."""

    def __init__(self, opts: SimOptions, *, labels: Path | None = None, child_log_dir: Path | None = None,
                 control_port: int | None = None) -> None:
        self.opts = opts
        self.control = ControlServer(self._control, port=control_port) if control_port is not None else None
        self.world = build_world(opts)
        self.table: SignalTable = self.world.table
        self.schedule = self.world.schedule
        t = self.table
        is_modbus = np.array([d.protocol is Protocol.MODBUS for d in t.devices], dtype=bool)
        self.modbus_rows = np.flatnonzero(is_modbus[t.device]) if len(t) else np.zeros(0, np.int64)
        self.model = self.world.model(self.modbus_rows, opts.seed)
        self.encoder = RegisterEncoder(t, self.modbus_rows)
        self.transport: list[TransportFault] = list(self.world.faults.transport) if self.world.faults else []
        self.labels = LabelWriter(labels, t, self.schedule, opts.epoch_ns, clean_at=self.model.clean_at,
                                  physics=self.world.physics, transport=self.transport,
                                  rul_period_s=max(60.0, 10.0 * opts.time_scale))
        # Command points (hold, stack light) the machines declare; a write reaches the physics at once.
        self.commands = CommandPoints(t, machine_templates(self.world.plant))
        self._modbus_names = {d.name for d in t.devices if d.protocol is Protocol.MODBUS}
        self.slaves: list[ModbusSlave] = []
        self.slave_of: dict[int, ModbusSlave] = {}
        by_address: dict[tuple[str, int], dict[int, DeviceImage]] = defaultdict(dict)
        names: dict[tuple[str, int], list[str]] = defaultdict(list)
        for d in t.devices:
            if d.protocol is not Protocol.MODBUS:
                continue
            units = by_address[(d.host, d.port)]
            if d.unit_id in units:
                raise ConfigError(str(opts.plant), [f"device {d.name!r}: {d.host}:{d.port} unit {d.unit_id} is "
                                                    "already served by another device"])
            units[d.unit_id] = self.encoder.images.get(d.index) or _empty_image(d.index)
            names[(d.host, d.port)].append(d.name)
        for (host, port), units in by_address.items():
            self.slaves.append(ModbusSlave(host, port, units, name="+".join(names[(host, port)]),
                                           commands=self.commands, on_command=self._on_command))
        for d in t.devices:
            if d.protocol is Protocol.MODBUS:
                self.slave_of[d.index] = next(s for s in self.slaves if (s.host, s.port) == (d.host, d.port))
        self._transport_active: list[bool] = []
        self.opcua_devices = [d for d in t.devices if d.protocol is Protocol.OPCUA]
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.child_log_dir = child_log_dir
        self.modbus_loop = TickLoop(opts.modbus_rate_hz, opts.epoch_ns, opts.time_scale, self._modbus_tick)
        self._tmp = tempfile.TemporaryDirectory(prefix="plantwire-sim-")

    # -- ticks ----------------------------------------------------------------------------------
    def _modbus_tick(self, k: int, t_s: float, wall_ns: int) -> None:
        self.encoder.encode(self.model.step(k, t_s))

    def _on_command(self) -> None:
        """A command write was accepted: a hold takes effect at the current simulated time."""
        self.world.physics.set_held(self.commands.held(), self.sim_now())

    def sim_now(self) -> float:
        """Simulated seconds since the epoch, now."""
        return (time.time_ns() - self.opts.epoch_ns) / 1e9 * self.opts.time_scale

    async def _label_loop(self) -> None:
        while True:
            t_s = self.sim_now()
            if t_s >= 0:
                self.labels.advance(t_s)
            await asyncio.sleep(LABEL_PERIOD_S)

    def add_faults(self, data: dict[str, object], *, absolute: bool = False) -> dict[str, int]:
        """Apply a faults mapping on command (control API); ``at_s`` counts from now unless ``absolute``.

        Raises ConfigError (every problem with its path) before anything is applied.
        """
        if data.get("wear"):
            raise ConfigError("request body", ["wear: only the faults file given at start may schedule wear"])
        # a little ahead of now, so that the label writer (which has passed now) still sees them start
        offset = 0.0 if absolute else self.sim_now() + LABEL_PERIOD_S * 2 * self.opts.time_scale
        doc, loaded = faults_from_data(data, self.table, "request body", offset)
        self.schedule.add_fixed(loaded.events)
        for f in loaded.transport:
            self.transport.append(f)
            self.labels.add_transport(f)
        line = (json.dumps(doc.model_dump(mode="json")) + "\n").encode()
        for name, proc in self.children.items():
            if proc.stdin is not None and proc.poll() is None:
                try:
                    proc.stdin.write(line)
                    proc.stdin.flush()
                except OSError:
                    log.warning("could not forward faults to OPC-UA server %s", name)
        return {"events": len(loaded.events), "transport": len(loaded.transport)}

    async def _control(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> tuple[int, object]:
        if path == "/status" and method == "GET":
            return 200, self.status()
        if path == "/faults":
            if method != "POST":
                return 405, {"error": "POST a faults mapping"}
            try:
                added = self.add_faults(parse_body(body), absolute=query.get("absolute", ["0"])[0] in ("1", "true"))
            except ConfigError as exc:
                return 400, {"errors": exc.errors}
            return 200, {"added": added, "sim_time_s": self.sim_now()}
        return 404, {"error": f"no {method} {path}; try GET /status or POST /faults"}

    def status(self) -> dict[str, object]:
        ml = self.modbus_loop
        return {
            "epoch_ns": self.opts.epoch_ns, "sim_time_s": self.sim_now(), "time_scale": self.opts.time_scale,
            "signals": len(self.table), "modbus": {"ticks": ml.ticks, "missed": ml.missed,
                                                   "requests": sum(s.store.stats.requests for s in self.slaves)},
            "opcua_servers": {n: ("running" if p.poll() is None else f"exited {p.returncode}")
                              for n, p in self.children.items()},
            "labels_written": self.labels.written,
            "transport_faults": [f.label(self.table, self.opts.epoch_ns) for f in self.transport],
            # this process's points (Modbus); an OPC-UA server's are read from its own address space
            "commands": [c for c in self.commands.status() if c["device"] in self._modbus_names],
            "command_writes": self.commands.writes,
        }

    async def _transport_loop(self) -> None:
        """Switch Modbus misbehaviour on and off as scheduled faults start and end."""
        while True:
            t_s = self.sim_now()
            while len(self._transport_active) < len(self.transport):
                self._transport_active.append(False)
            for i, f in enumerate(self.transport):
                if f.device not in self.slave_of:
                    continue
                on = f.start_s <= t_s < f.end_s
                if on != self._transport_active[i]:
                    self._transport_active[i] = on
                    await self._apply(f, on)
            await asyncio.sleep(TRANSPORT_PERIOD_S)

    async def _apply(self, f: TransportFault, on: bool) -> None:
        slave = self.slave_of[f.device]
        dev = self.table.devices[f.device]
        log.info("transport fault %s on %s %s", f.kind.value, dev.name, "starts" if on else "ends")
        if f.kind is TransportKind.DISCONNECT:
            await (slave.stop() if on else slave.start())
            return
        state = slave.store.state[dev.unit_id]
        if not on:
            state.mode = UnitMode.NORMAL
            return
        state.mode = {TransportKind.EXCEPTION: UnitMode.EXCEPTION, TransportKind.TIMEOUT: UnitMode.TIMEOUT,
                      TransportKind.SLOW: UnitMode.SLOW}[f.kind]
        state.exception_code = f.exception_code
        state.delay_s = f.delay_s / self.opts.time_scale if f.kind is TransportKind.SLOW else 0.0

    # -- start / stop ---------------------------------------------------------------------------
    async def start(self, timeout_s: float = 120.0) -> None:
        """Start every server; returns once all listen (raises if one cannot)."""
        ready_dir = Path(self._tmp.name)
        for d in self.opcua_devices:
            ready = ready_dir / f"{d.index}.ready"
            out: object = None  # inherit our stdout: the children's reports land in the simulator's log
            if self.child_log_dir is not None:
                self.child_log_dir.mkdir(parents=True, exist_ok=True)
                out = open(self.child_log_dir / f"opcua-{d.name}.log", "ab")
            self.children[d.name] = subprocess.Popen(
                [sys.executable, "-m", "simulators.opcua_server", *self.opts.argv(), "--device", d.name,
                 "--ready-file", str(ready)], stdin=subprocess.PIPE, preexec_fn=die_with_parent(),
                stdout=out, stderr=subprocess.STDOUT if out is not None else None,  # type: ignore[arg-type]
            )
            if out is not None:
                out.close()  # type: ignore[attr-defined]
        k0 = self.modbus_loop.tick_at(time.time_ns())
        self._modbus_tick(k0, self.modbus_loop.sim_time(k0), 0)  # images hold plausible values before the first read
        for slave in self.slaves:
            await slave.start()
        if self.control is not None:
            await self.control.start()
        deadline = time.monotonic() + timeout_s
        for d in self.opcua_devices:
            ready = ready_dir / f"{d.index}.ready"
            while not ready.exists():
                proc = self.children[d.name]
                if proc.poll() is not None:
                    raise RuntimeError(f"OPC-UA server {d.name} ({d.endpoint}) exited with {proc.returncode}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"OPC-UA server {d.name} ({d.endpoint}) did not start in {timeout_s:.0f} s")
                await asyncio.sleep(0.05)

    async def run(self, stop: asyncio.Event) -> int:
        """Tick until ``stop`` is set (0) or a child dies (1)."""
        code = 0
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(self.modbus_loop.run(), name="modbus-ticks"),
                     tg.create_task(self._label_loop(), name="labels"),
                     tg.create_task(self._transport_loop(), name="transport-faults")]
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
                dead = {n: p.returncode for n, p in self.children.items() if p.poll() is not None}
                if dead:
                    log.error("OPC-UA server process(es) exited: %s; stopping the simulator", dead)
                    code = 1
                    break
            for t in tasks:
                t.cancel()
        return code

    async def stop(self) -> None:
        if self.control is not None:
            await self.control.stop()
        for slave in self.slaves:
            with contextlib.suppress(Exception):
                await slave.stop()
        for proc in self.children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10.0
        for proc in self.children.values():
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        self.labels.close()
        self._tmp.cleanup()

    async def __aenter__(self) -> Simulator:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def describe(self) -> str:
        """What is served where (printed at start, issue 3 item 7)."""
        t = self.table
        counts = np.bincount(t.device, minlength=len(t.devices))
        lines = [f"plantwire sim: site {t.site}, {len(t)} signals, {len(t.machine_ids)} machines, "
                 f"seed {self.opts.seed}, time scale {self.opts.time_scale:g}"]
        nmod = sum(1 for d in t.devices if d.protocol is Protocol.MODBUS)
        lines.append(f"  Modbus TCP: {nmod} devices, {self.modbus_rows.size} signals "
                     f"at {self.opts.modbus_rate_hz:g} Hz")
        for d in t.devices:
            if d.protocol is Protocol.MODBUS:
                lines.append(f"    {d.name:<24} {d.host}:{d.port} unit {d.unit_id:<3} {counts[d.index]:>6} signals")
        lines.append(f"  OPC-UA: {len(self.opcua_devices)} servers "
                     f"at {self.opts.opcua_rate_hz:g} Hz (one process each)")
        for d in self.opcua_devices:
            lines.append(f"    {d.name:<24} {d.endpoint} ns={d.namespace} {counts[d.index]:>6} signals")
        fixed = len(self.schedule.fixed)
        lines.append(f"  anomalies: {self.opts.anomaly_rate_per_h:g} per signal per hour (random), {fixed} scheduled"
                     + (f" from {self.opts.faults}" if self.opts.faults else ""))
        wear = self.world.physics.wear
        lines.append(f"  wear to failure: {len(wear.machine)} machines ({int(wear.fixed.sum())} scheduled)")
        for i in range(len(wear.machine)):
            lines.append(f"    {t.machine_ids[int(wear.machine[i])]:<32} fails at t={wear.failure_s[i]:.0f} s "
                         f"(RUL {(wear.failure_s[i] - wear.start_s[i]) / 86400:.1f} d)")
        if self.commands.points:
            lines.append(f"  writable command points: {len(self.commands.points)}")
            lines.extend(self.commands.describe())
        lines.append(f"  transport faults: {len(self.transport)} scheduled")
        for f in self.transport:
            lines.append(f"    {f.kind.value:<11} {t.devices[f.device].name:<24} t={f.start_s:g}..{f.end_s:g} s")
        lines.append(f"  labels: {self.labels.path if self.labels.path else '(not written; use --labels PATH)'}")
        if self.control is not None:
            lines.append(f"  control API: http://127.0.0.1:{self.control.port}/status, POST /faults")
        return "\n".join(lines)


def _empty_image(device: int) -> DeviceImage:
    z = np.zeros(2, dtype=np.uint8)
    return DeviceImage(device, z, z.copy(), np.zeros(1, np.uint8), np.zeros(1, np.uint8))


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def _amain(opts: SimOptions, labels: Path | None, ready_file: Path | None, control_port: int | None) -> int:
    sim = Simulator(opts, labels=labels, control_port=control_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:  # SIGHUP too: a closed terminal must not orphan the OPC-UA servers
        loop.add_signal_handler(sig, stop.set)
    # A harness that started us without a parent-death signal and died: stop as on SIGTERM.
    watch_parent(lambda: loop.call_soon_threadsafe(stop.set))
    t0 = time.monotonic()
    print(f"plantwire sim: starting {len(sim.slaves)} Modbus slaves and {len(sim.opcua_devices)} OPC-UA servers "
          f"for {len(sim.table)} signals", flush=True)
    try:
        await sim.start()
        print(sim.describe(), flush=True)
        log.info("all servers listen after %.1f s", time.monotonic() - t0)
        if ready_file is not None:
            _write_atomically(ready_file, f"{os.getpid()}\n")
        print(f"plantwire sim: ready after {time.monotonic() - t0:.1f} s", flush=True)
        code = await sim.run(stop)
    finally:
        await sim.stop()
    ml = sim.modbus_loop
    print(f"plantwire sim: stopped; modbus ticks {ml.ticks} (missed {ml.missed}, busy {ml.busy_ns / 1e9:.2f} s), "
          f"labels written {sim.labels.written}", flush=True)
    return code


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="plantwire sim", description="serve a plant over Modbus TCP and OPC-UA")
    add_common_arguments(parser)
    parser.add_argument("--ready-file", type=Path, default=None, help="written once every server listens")
    parser.add_argument("--labels", type=Path, default=None, help="JSONL ground truth of injected anomalies")
    parser.add_argument("--control-port", type=int, default=None,
                        help="serve the control API (GET /status, POST /faults) on this loopback port (0: any)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    opts = options_from_args(args)
    try:
        return asyncio.run(_amain(opts, args.labels, args.ready_file, args.control_port))
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    except (RuntimeError, TimeoutError, OSError) as exc:  # a server that cannot start: say which, exit 1
        print(f"plantwire sim: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
