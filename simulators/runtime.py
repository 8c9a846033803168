"""What every simulator process shares: its options, its clock, and how it builds the plant's schedule.

The parent (``simulators.app``) serves Modbus itself and starts one child process per OPC-UA
server (``python -m simulators.opcua_server``); all of them receive the same :class:`SimOptions`
on their command line, including the epoch, so they agree on tick times and on the anomalies
without talking to each other.

Clock: tick ``k`` of a part running at ``rate_hz`` is due at wall time ``epoch_ns + k / rate_hz``
and shows the plant at simulated time ``t_s = k / rate_hz * time_scale`` (seconds since the epoch
on the simulated clock; timestamps the simulator publishes are ``epoch_ns + t_s * 1e9``). A tick
that is late is not made up: the loop jumps to the current tick and counts the ones it skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plantwire.configfile import load_plant
from plantwire.plant import PlantConfig, SignalTable, expand

from .faults import EventSchedule
from .physics import Physics, WearPlan, machine_templates
from .schedule import LoadedFaults, load_faults
from .signals import SignalModel

__all__ = ["SimOptions", "TickLoop", "World", "add_common_arguments", "build_world", "options_from_args"]


@dataclass(frozen=True, slots=True)
class SimOptions:
    plant: Path
    seed: int = 0
    modbus_rate_hz: float = 1.0
    opcua_rate_hz: float = 1.0
    anomaly_rate_per_h: float = 0.02
    time_scale: float = 1.0
    epoch_ns: int = 0
    faults: Path | None = None
    wear_fraction: float = 0.1
    opcua_history: str = "odd"
    history_samples: int = 600
    opcua_security: str = "both"
    pki_dir: Path | None = None

    def argv(self) -> list[str]:
        """The command-line form, for child processes."""
        out = [str(self.plant), "--seed", str(self.seed), "--modbus-rate", repr(self.modbus_rate_hz),
               "--opcua-rate", repr(self.opcua_rate_hz), "--anomaly-rate", repr(self.anomaly_rate_per_h),
               "--time-scale", repr(self.time_scale), "--epoch-ns", str(self.epoch_ns),
               "--wear-fraction", repr(self.wear_fraction), "--opcua-history", self.opcua_history,
               "--history-samples", str(self.history_samples), "--opcua-security", self.opcua_security]
        if self.pki_dir is not None:
            out += ["--pki-dir", str(self.pki_dir)]
        if self.faults is not None:
            out += ["--faults", str(self.faults)]
        return out


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("plant", type=Path, help="plant YAML file")
    parser.add_argument("--seed", type=int, default=0, help="values and anomalies are a function of it")
    parser.add_argument("--modbus-rate", type=_positive, default=1.0, metavar="HZ", help="register update rate")
    parser.add_argument("--opcua-rate", type=_positive, default=1.0, metavar="HZ", help="OPC-UA value-change rate")
    parser.add_argument("--anomaly-rate", type=float, default=0.02, metavar="PER_H",
                        help="random anomalies per signal per simulated hour (0: none)")
    parser.add_argument("--time-scale", type=_positive, default=1.0,
                        help="simulated seconds per wall second (e.g. 3600 runs an hour a second)")
    parser.add_argument("--epoch-ns", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--faults", type=Path, default=None, help="YAML schedule of faults (see simulators.schedule)")
    parser.add_argument("--wear-fraction", type=float, default=0.1,
                        help="share of wearing machines (compressors, presses...) that wear to failure (seeded)")
    parser.add_argument("--opcua-history", default="odd",
                        help="OPC-UA servers that keep history for back-fill: odd (1st, 3rd, ...), all, none, "
                             "or comma-separated device names")
    parser.add_argument("--history-samples", type=int, default=600, help="values kept per historized variable")
    parser.add_argument("--opcua-security", choices=["none", "encrypt", "both"], default="both",
                        help="endpoints: None, Basic256Sha256 SignAndEncrypt, or both")
    parser.add_argument("--pki-dir", type=Path, default=None,
                        help="server certificates (generated on first start; default: <plant dir>/sim-pki)")


def options_from_args(args: argparse.Namespace) -> SimOptions:
    epoch_ns = args.epoch_ns or (time.time_ns() // 1_000_000_000 + 1) * 1_000_000_000
    return SimOptions(plant=args.plant, seed=args.seed, modbus_rate_hz=args.modbus_rate,
                      opcua_rate_hz=args.opcua_rate, anomaly_rate_per_h=args.anomaly_rate,
                      time_scale=args.time_scale, epoch_ns=epoch_ns, faults=args.faults,
                      wear_fraction=args.wear_fraction, opcua_history=args.opcua_history,
                      history_samples=args.history_samples, opcua_security=args.opcua_security,
                      pki_dir=args.pki_dir)


@dataclass(frozen=True, slots=True)
class World:
    """Everything derived from the options that every process must agree on."""

    plant: PlantConfig
    table: SignalTable
    schedule: EventSchedule
    physics: Physics
    faults: LoadedFaults | None

    def model(self, rows: np.ndarray, seed: int) -> SignalModel:
        return SignalModel(self.table, rows, seed, self.schedule, self.physics)


def build_world(opts: SimOptions, plant: PlantConfig | None = None) -> World:
    """Load the plant and the faults file (ConfigError names every problem) and build the shared schedule."""
    plant = plant if plant is not None else load_plant(opts.plant)
    table = expand(plant)
    faults = load_faults(opts.faults, table) if opts.faults is not None else None
    templates = machine_templates(plant)
    wear = WearPlan.draw(templates, opts.seed, opts.wear_fraction)
    if faults is not None:
        wear = wear.merged(faults.wear)
    physics = Physics(table, templates, opts.seed, opts.epoch_ns, wear)
    schedule = EventSchedule(table, opts.seed, opts.anomaly_rate_per_h, faults.events if faults else None)
    return World(plant, table, schedule, physics, faults)


class TickLoop:
    """Calls (and awaits, if a coroutine) ``on_tick(k, t_s, wall_ns)`` every tick of ``rate_hz``; never drifts."""

    def __init__(self, rate_hz: float, epoch_ns: int, time_scale: float,
                 on_tick: Callable[[int, float, int], Awaitable[None] | None]) -> None:
        self.period_ns = round(1e9 / rate_hz)
        self.epoch_ns = epoch_ns
        self.time_scale = time_scale
        self.on_tick = on_tick
        self.ticks = 0
        self.missed = 0
        self.busy_ns = 0

    def tick_at(self, wall_ns: int) -> int:
        return max(0, (wall_ns - self.epoch_ns) // self.period_ns)

    def sim_time(self, k: int) -> float:
        return k * self.period_ns / 1e9 * self.time_scale

    async def run(self) -> None:
        k = self.tick_at(time.time_ns())
        while True:
            due = self.epoch_ns + k * self.period_ns
            delay = (due - time.time_ns()) / 1e9
            # always yield, even when late: an overrunning tick must not starve the servers' I/O
            await asyncio.sleep(max(delay, 0.0))
            t0 = time.perf_counter_ns()
            result = self.on_tick(k, self.sim_time(k), due)
            if inspect.isawaitable(result):
                await result
            self.ticks += 1
            self.busy_ns += time.perf_counter_ns() - t0
            nxt = max(k + 1, self.tick_at(time.time_ns()))
            self.missed += nxt - (k + 1)
            k = nxt
