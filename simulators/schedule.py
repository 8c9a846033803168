"""The ``--faults`` file: scheduled signal anomalies, wear to failure and transport faults.

One YAML file, validated once at start-up with every error named by its path (house rule 4).
Times are simulated seconds since the simulator's epoch (``at_s``), so a schedule means the same
thing at any ``--time-scale``::

    events:                 # signal anomalies (kinds: simulators.faults.EventKind)
      - {signal: line1.press01.oil_temp, kind: spike, at_s: 30, duration_s: 3, magnitude: 25}
      - {machine: line2.leak_test01, kind: micro_leak, at_s: 60, duration_s: 600, magnitude: 50}
    wear:                   # replaces any seeded wear of that machine
      - {machine: line1.compressor01, start_s: 0, failure_s: 86400, repair_s: 3600}
    transport:              # misbehaving devices (kinds: TransportKind)
      - {device: dev-plc1, kind: exception, at_s: 20, duration_s: 10, exception_code: 4}
      - {device: dev-plc2, kind: timeout, at_s: 20, duration_s: 10}
      - {device: dev-plc-cdab1, kind: slow, at_s: 20, duration_s: 10, delay_s: 0.5}
      - {device: dev-plc-cdab2, kind: disconnect, at_s: 40, duration_s: 5}
      - {device: dev-opc1, kind: bad_status, at_s: 20, duration_s: 10, signals: [hall.hvac01.co2],
         status: BadSensorFailure}
      - {device: dev-opc2, kind: restart, at_s: 30, duration_s: 3}

``magnitude`` is in the signal's engineering unit (micro_leak: Pa/s of extra pressure decay); a
``machine`` event of a signal kind applies to every signal of the machine.

Transport kinds: Modbus ``exception`` (every read answers ``exception_code``), ``timeout`` (requests
are swallowed), ``slow`` (answers after ``delay_s``), ``disconnect`` (the slave stops listening and
drops its connections, then comes back: a dead or rebooting PLC); OPC-UA ``bad_status`` (chosen
items, or all of the server's, carry ``status``), ``restart`` (the server process's server stops,
dropping every session and subscription, and starts again after ``duration_s``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
from asyncua import ua
from pydantic import BaseModel, ConfigDict, Field, model_validator

from plantwire.configfile import ConfigError, read_yaml, validate
from plantwire.plant import Protocol, SignalTable

from .faults import KIND_ORDER, EventKind, Events
from .physics import WearPlan

__all__ = ["FaultsFile", "LoadedFaults", "TransportFault", "TransportKind", "faults_from_data", "load_faults"]


class TransportKind(enum.StrEnum):
    EXCEPTION = "exception"
    TIMEOUT = "timeout"
    SLOW = "slow"
    DISCONNECT = "disconnect"
    BAD_STATUS = "bad_status"
    RESTART = "restart"


MODBUS_KINDS = {TransportKind.EXCEPTION, TransportKind.TIMEOUT, TransportKind.SLOW, TransportKind.DISCONNECT}
OPCUA_KINDS = {TransportKind.BAD_STATUS, TransportKind.RESTART}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventSpec(_Strict):
    signal: str | None = None
    machine: str | None = None
    kind: EventKind
    at_s: float = Field(ge=0)
    duration_s: float = Field(gt=0)
    magnitude: float = 0.0

    @model_validator(mode="after")
    def _one_target(self) -> EventSpec:
        if (self.signal is None) == (self.machine is None):
            raise ValueError("give exactly one of signal or machine")
        if self.kind is EventKind.MICRO_LEAK and self.machine is None:
            raise ValueError("micro_leak applies to a machine (a leak-test station)")
        return self


class WearSpec(_Strict):
    machine: str
    start_s: float = Field(default=0.0, ge=0)
    failure_s: float
    repair_s: float = Field(default=3600.0, gt=0)

    @model_validator(mode="after")
    def _order(self) -> WearSpec:
        if self.failure_s <= self.start_s:
            raise ValueError("failure_s must be after start_s")
        return self


class TransportSpec(_Strict):
    device: str
    kind: TransportKind
    at_s: float = Field(ge=0)
    duration_s: float = Field(gt=0)
    exception_code: int = Field(default=4, ge=1, le=255)
    delay_s: float = Field(default=2.0, gt=0)
    signals: list[str] | None = None
    status: str = "BadSensorFailure"


class FaultsFile(_Strict):
    events: Annotated[list[EventSpec], Field(default_factory=list)]
    wear: Annotated[list[WearSpec], Field(default_factory=list)]
    transport: Annotated[list[TransportSpec], Field(default_factory=list)]


@dataclass(frozen=True, slots=True)
class TransportFault:
    device: int  # index into SignalTable.devices
    kind: TransportKind
    start_s: float
    end_s: float
    exception_code: int = 4
    delay_s: float = 2.0
    rows: tuple[int, ...] = ()  # bad_status: SignalTable rows (empty: every signal of the device)
    status: int = 0  # bad_status: OPC-UA status code value

    def label(self, table: SignalTable, epoch_ns: int) -> dict[str, object]:
        d = table.devices[self.device]
        rec: dict[str, object] = {
            "kind": f"transport.{self.kind.value}", "device": d.name, "protocol": d.protocol.value,
            "start_ns": epoch_ns + round(self.start_s * 1e9), "end_ns": epoch_ns + round(self.end_s * 1e9),
            "source": "schedule",
        }
        if self.kind is TransportKind.EXCEPTION:
            rec["exception_code"] = self.exception_code
        if self.kind is TransportKind.SLOW:
            rec["delay_s"] = self.delay_s
        if self.kind is TransportKind.BAD_STATUS:
            rec["status"] = ua.StatusCode(self.status).name
            rec["signals"] = [table.ids[r] for r in self.rows] or "all"
        return rec


@dataclass(frozen=True, slots=True)
class LoadedFaults:
    events: Events
    wear: WearPlan
    transport: list[TransportFault]


def _check(doc: FaultsFile, table: SignalTable) -> list[str]:
    errors: list[str] = []
    ids = {s: i for i, s in enumerate(table.ids)}
    machines = set(table.machine_ids)
    devices = {d.name: d for d in table.devices}
    for i, e in enumerate(doc.events):
        if e.signal is not None and e.signal not in ids:
            errors.append(f"events[{i}].signal: unknown signal {e.signal!r}")
        if e.machine is not None and e.machine not in machines:
            errors.append(f"events[{i}].machine: unknown machine {e.machine!r}")
        elif e.kind is EventKind.MICRO_LEAK and f"{e.machine}.decay_rate" not in ids:
            errors.append(f"events[{i}].machine: {e.machine!r} is not a leak-test station (no decay_rate)")
    for i, w in enumerate(doc.wear):
        if w.machine not in machines:
            errors.append(f"wear[{i}].machine: unknown machine {w.machine!r}")
    for i, t in enumerate(doc.transport):
        d = devices.get(t.device)
        if d is None:
            errors.append(f"transport[{i}].device: unknown device {t.device!r}")
            continue
        allowed = MODBUS_KINDS if d.protocol is Protocol.MODBUS else OPCUA_KINDS
        if t.kind not in allowed:
            errors.append(f"transport[{i}].kind: {t.kind.value!r} does not apply to {d.protocol.value} device "
                          f"{d.name!r} (use one of {sorted(k.value for k in allowed)})")
        for j, s in enumerate(t.signals or []):
            if s not in ids:
                errors.append(f"transport[{i}].signals[{j}]: unknown signal {s!r}")
            elif table.devices[int(table.device[ids[s]])].name != d.name:
                errors.append(f"transport[{i}].signals[{j}]: {s!r} is not served by {d.name!r}")
        if t.kind is TransportKind.BAD_STATUS:
            code = getattr(ua.StatusCodes, t.status, None)
            if code is None or not ua.StatusCode(code).is_bad():
                errors.append(f"transport[{i}].status: {t.status!r} is not a Bad OPC-UA status code name")
    return errors


def load_faults(path: Path, table: SignalTable) -> LoadedFaults:
    """Read and check a faults file against the plant; raises ConfigError listing every problem."""
    doc = validate(FaultsFile, read_yaml(path), str(path))
    errors = _check(doc, table)
    if errors:
        raise ConfigError(str(path), errors)
    return compile_faults(doc, table)


def faults_from_data(data: dict[str, object], table: SignalTable, source: str,
                     offset_s: float = 0.0) -> tuple[FaultsFile, LoadedFaults]:
    """Validate a faults mapping (control API, forwarded commands); times shifted by ``offset_s``."""
    doc = validate(FaultsFile, data, source)
    errors = _check(doc, table)
    if errors:
        raise ConfigError(source, errors)
    if offset_s:
        doc = doc.model_copy(update={
            "events": [e.model_copy(update={"at_s": e.at_s + offset_s}) for e in doc.events],
            "transport": [t.model_copy(update={"at_s": t.at_s + offset_s}) for t in doc.transport],
            "wear": [w.model_copy(update={"start_s": w.start_s + offset_s, "failure_s": w.failure_s + offset_s})
                     for w in doc.wear],
        })
    return doc, compile_faults(doc, table)


def compile_faults(doc: FaultsFile, table: SignalTable) -> LoadedFaults:
    ids = {s: i for i, s in enumerate(table.ids)}
    machine_index = {m: i for i, m in enumerate(table.machine_ids)}
    sig: list[int] = []
    kind: list[int] = []
    start: list[float] = []
    end: list[float] = []
    mag: list[float] = []
    for e in doc.events:
        if e.kind is EventKind.MICRO_LEAK:
            rows = [ids[f"{e.machine}.decay_rate"]]
        elif e.signal is not None:
            rows = [ids[e.signal]]
        else:
            rows = np.flatnonzero(table.machine == machine_index[e.machine]).tolist()
        for r in rows:
            sig.append(r)
            kind.append(KIND_ORDER.index(e.kind))
            start.append(e.at_s)
            end.append(e.at_s + e.duration_s)
            mag.append(e.magnitude)
    events = Events.concat([Events(np.array(sig, np.int64), np.array(kind, np.uint8), np.array(start, float),
                                   np.array(end, float), np.array(mag, float), np.ones(len(sig), np.uint8))])
    wear = WearPlan(np.array([machine_index[w.machine] for w in doc.wear], np.int64),
                    np.array([w.start_s for w in doc.wear], float), np.array([w.failure_s for w in doc.wear], float),
                    np.array([w.repair_s for w in doc.wear], float), np.ones(len(doc.wear), bool))
    dev_index = {d.name: d.index for d in table.devices}
    transport = [
        TransportFault(dev_index[t.device], t.kind, t.at_s, t.at_s + t.duration_s, t.exception_code, t.delay_s,
                       tuple(ids[s] for s in (t.signals or [])),
                       int(getattr(ua.StatusCodes, t.status)) if t.kind is TransportKind.BAD_STATUS else 0)
        for t in doc.transport
    ]
    return LoadedFaults(events, wear, transport)

