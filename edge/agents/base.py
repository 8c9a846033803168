"""What an agent is: the small interface every agent implements, and the two objects it is handed.

An **agent** is a piece of plant logic that runs on the edge beside detection (energy management,
leak-test intelligence, ...). It

- declares what it consumes: templates and signal names within them (``AgentContext.select``), which the
  runner turns into a lookup mask so the agent sees only its own samples;
- declares the **derived signals** it emits (``derived()``): ordinary signals with their own ids, appended
  to the gateway's signal table, carried on the normal telemetry wire and counted by the same nothing-lost
  accounting as read samples (they land in InfluxDB like any signal);
- is called once per frame (``process``) with that frame's numpy columns (its own samples only) and the
  frame's alarm events (``edge.detectors.events.EVENT_DTYPE``), and writes derived samples and events into
  an ``Emitter``;
- keeps its state in numpy arrays returned by ``state()``; the runner checkpoints them like the
  detectors' (``edge.detectors.checkpoint``: atomic .npz, version + fingerprint) and restores them in place.

Calling contract (what the runner guarantees, ``edge.agents.runner``):
- ``process`` runs after the frame was handed to the forwarder, so an agent never delays the frame; the
  derived samples it emits are published with the next frame (one batch interval later).
- ``process`` is called every batch interval, also when no sample of the agent arrived (``len(frame) == 0``),
  so time-driven logic (closing a 15-minute interval) needs no timer of its own.
- An exception from any method disables the agent for the rest of the run (an event on the events lane,
  ``agent_failures_total`` in the metrics); what it emitted during the failing call is discarded. An agent
  that overruns its time budget repeatedly is disabled the same way. Nothing an agent does can stop the
  daemon or lose other data.
- Hot paths stay columnar: no Python object per sample; per-sample work goes to numba kernels in
  ``edge/kernels/`` with numpy references in ``tests/naive.py``.
"""

from __future__ import annotations

import abc
import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from edge.detectors.checkpoint import fingerprint as _fingerprint
from edge.frames import Frame
from plantwire.plant import PlantConfig, Quality, SignalTable


class AgentSettings(BaseModel):
    """Base of every agent's settings block (``agents.<name>`` in the edge config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class DerivedSignal:
    """One signal an agent emits. ``owner`` is the machine id it is stored under (the InfluxDB ``machine``
    tag): a machine of the plant, or a line or area id the agent names (it becomes a machine id of the
    gateway's signal table). ``name`` is the id's tail: the signal id is ``f"{owner}.{name}"``."""

    owner: str
    name: str
    unit: str = ""

    @property
    def id(self) -> str:
        return f"{self.owner}.{self.name}"


@dataclass(frozen=True)
class AgentContext:
    """What an agent is built from: the plant's signal table (derived signals not included) and each
    machine's template name (``templates[m]`` for ``table.machine_ids[m]``)."""

    table: SignalTable
    templates: tuple[str, ...]

    @classmethod
    def from_plant(cls, table: SignalTable, plant: PlantConfig) -> AgentContext:
        names = tuple(mg.template for mg in plant.machines for _ in range(mg.count))
        if len(names) != len(table.machine_ids):
            raise ValueError(f"plant has {len(names)} machines, signal table {len(table.machine_ids)}")
        return cls(table, names)

    def machines_of(self, templates: Iterable[str]) -> np.ndarray:
        """Indices of the machines whose template matches one of ``templates`` (glob patterns)."""
        pats = list(templates)
        return np.array([m for m, t in enumerate(self.templates) if any(fnmatch.fnmatchcase(t, p) for p in pats)],
                        dtype=np.int64)

    def select(self, machines: np.ndarray, names: Iterable[str]) -> np.ndarray:
        """``out[i, j]`` = signal index of ``names[j]`` on machine ``machines[i]``, -1 where it has none."""
        names = list(names)
        col = {n: j for j, n in enumerate(names)}
        out = np.full((machines.shape[0], len(names)), -1, dtype=np.int64)
        row_of = np.full(len(self.table.machine_ids), -1, dtype=np.int64)
        row_of[machines] = np.arange(machines.shape[0])
        for idx, (sid, m) in enumerate(zip(self.table.ids, self.table.machine.tolist(), strict=True)):
            r = row_of[m]
            if r < 0:
                continue
            j = col.get(sid[len(self.table.machine_ids[m]) + 1:])
            if j is not None:
                out[r, j] = idx
        return out


class Emitter:
    """Preallocated columns one agent writes a frame's derived samples into, plus its events.

    ``local`` indices number the agent's own ``derived()`` list (0..k-1); the runner maps them to the
    gateway's signal table. Samples beyond ``capacity`` in one frame are dropped and counted (an agent
    emitting that much per frame is a bug to fix, not data to buffer without bound).
    """

    def __init__(self, capacity: int, n_derived: int) -> None:
        self.capacity = capacity
        self.n_derived = n_derived
        self.ts_ns = np.empty(capacity, dtype=np.int64)
        self.local = np.empty(capacity, dtype=np.uint32)
        self.value = np.empty(capacity, dtype=np.float64)
        self.quality = np.empty(capacity, dtype=np.uint8)
        self.n = 0
        self.dropped = 0
        self.events: list[dict[str, Any]] = []

    def reset(self) -> None:
        self.n = 0
        self.events = []

    def samples(self, ts_ns: np.ndarray | int, local: np.ndarray, value: np.ndarray,
                quality: np.ndarray | int = int(Quality.GOOD)) -> None:
        """Emit a chunk of derived samples (``ts_ns`` and ``quality`` may be scalars for the whole chunk)."""
        m = int(local.shape[0])
        if m == 0:
            return
        if int(local.max()) >= self.n_derived:
            raise IndexError(f"derived signal {int(local.max())} not declared (agent declares {self.n_derived})")
        take = min(m, self.capacity - self.n)
        self.dropped += m - take
        a, b = self.n, self.n + take
        self.ts_ns[a:b] = ts_ns if np.ndim(ts_ns) == 0 else ts_ns[:take]
        self.local[a:b] = local[:take]
        self.value[a:b] = value[:take]
        self.quality[a:b] = quality if np.ndim(quality) == 0 else quality[:take]
        self.n = b

    def event(self, doc: dict[str, Any]) -> None:
        """Emit one events-lane document (``plantwire.wire.encode_events``: ``{"type": "alarm", ...}``).

        Rare by construction (an episode opens or closes), so a dict is fine here; ``"agent"`` is filled in.
        """
        self.events.append(doc)


class Agent(abc.ABC):
    """Base class of every agent. Subclasses set ``name`` (its key under ``agents:`` in the edge config)
    and ``state_version`` (bump when the layout of ``state()`` changes: old checkpoints are then refused)."""

    name: ClassVar[str]
    state_version: ClassVar[int] = 1

    @abc.abstractmethod
    def consumes(self) -> np.ndarray:
        """Signal indices (plant table) this agent wants to see; fixed for the agent's life."""

    def derived(self) -> list[DerivedSignal]:
        """The derived signals this agent emits, in the order its ``Emitter.samples`` numbers them."""
        return []

    @abc.abstractmethod
    def process(self, frame: Frame, events: np.ndarray, out: Emitter) -> None:
        """Consume one frame (only the consumed signals, in arrival order) and the frame's alarm events."""

    def state(self) -> dict[str, np.ndarray]:
        """The live state arrays (mutated in place by ``process``); restored in place after a restart."""
        return {}

    def fingerprint(self) -> str:
        """What the state is about; a checkpoint saved under another fingerprint is not restored."""
        return _fingerprint(self.name, self.consumes().astype(np.int64),
                            "\x1e".join(d.id for d in self.derived()))

    def describe(self) -> dict[str, Any]:
        """A short summary for logs and the health document (override to add figures)."""
        return {"consumes": int(self.consumes().shape[0]), "derived": len(self.derived())}


@dataclass
class AgentStats:
    """Per-agent counters exported as metrics (plain numbers, no registry dependency)."""

    enabled: bool = True
    frames: int = 0
    samples_in: int = 0
    samples_out: int = 0
    samples_dropped: int = 0
    events_out: int = 0
    seconds: float = 0.0
    max_frame_s: float = 0.0
    overruns: int = 0
    failures: int = 0
    disabled_reason: str = ""
    checkpoint_errors: int = 0
    extra: dict[str, float] = field(default_factory=dict)
