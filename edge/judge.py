"""The judge thread: where the CPU-heavy half of each flush runs, off the event loop the sources poll in.

Why: a flush (scoring the frame with the numba detectors, the model store's shadows, the alarm layer, the
agents, encoding the batches, the detectors' checkpoints) took 70-180 ms per second at Modbus 10 Hz. Run on
the event loop, it held every poll in flight, and a poll that ended after its next tick lost that tick
(1,454 in 120 s on the demo plant, bench/RESULTS.md). On this thread the loop keeps polling: the numba
kernels release the GIL (``nogil``), and the Python parts of a job hand the GIL back every switch interval
(5 ms), so a poll waits milliseconds, not a whole flush.

Threading model of the edge daemon (edge/app.py), one rule per kind of state:

- **Judgement state** -- the detectors' state arrays and their checkpoints (edge/detectors), the model
  store's running and shadow models (edge/modelstore), the alarm layer (edge/alarms), the agents' state
  (edge/agents) and the sequence numbers of the batches being encoded -- is touched by one thread at a
  time, under :attr:`Judge.lock`. The judge thread holds it for each job; the event loop takes it for the
  few things it does to that state itself (an operator's alarm command, a model swap or model command,
  reading the alarm layer's counts for metrics and status), which then wait for at most the job running.
- **One job at a time, in order.** The flush loop drains the frame buffer, submits the frame and awaits the
  job before it drains again, so frames are judged and sequence numbers handed out in the order the samples
  were read; a job is never cancelled once submitted (a stop waits for it and hands its batches on).
- **The event loop alone** hands a job's telemetry batches to the write-ahead log and MQTT, counts them in
  the run mark, submits agents' action requests and feeds the console's detector board: the job leaves that
  in its output (:class:`FlushJob`, :class:`Outbox`). The read samples are encoded first, before they are
  scored, and the judge thread asks the loop (``call_soon_threadsafe``) to hand those batches off at once;
  the scoring, alarm layer, agents and per-interval work (checkpoints) follow while they travel. Handed off
  only at the job's end, every sample waited for all of that too: 0.04-0.1 s of a 10 Hz flush of the demo
  plant, more when a checkpoint save was due (bench/flush_handoff.py; what is left is the encoding itself).
  The read batches still leave together, so the ingestor writes them as one group (paced one by one they
  would split it, costing the requests of shorter intervals). The loop hands off in sequence order whatever
  the number of early calls (:attr:`FlushJob.handed_batches`), and the job's final hand-off takes the rest.
  A kill -9 before the hand-off loses the job's samples as it loses the frame buffer's: counted in the run
  mark's pending samples, back-filled where OPC-UA keeps history. Events-lane documents (alarms, incidents,
  audits) are the exception: they go into the log from the judge thread at once (the forwarder's entry
  points take a lock), because the alarm layer drops them from its own checkpoint's outbox at its next save.
- The console tap and the Sparkplug feed have their own locks and are fed from the job directly.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import numpy as np

from edge.frames import Frame

__all__ = ["Batch", "FlushJob", "Judge", "Outbox"]

P = ParamSpec("P")
T = TypeVar("T")


class Judge:
    """A single worker thread plus the lock that guards judgement state (module docstring)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()  # re-entrant: a job's model tick may promote, which takes it again
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="judge")

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` on the judge thread under the lock; jobs run one after another in submission order."""
        return self._pool.submit(self._locked_call, fn, args)

    def locked(self, fn: Callable[P, T]) -> Callable[P, T]:
        """``fn`` wrapped to run under the lock, for the event loop's own calls into judgement state."""

        @functools.wraps(fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> T:
            with self.lock:
                return fn(*args, **kwargs)

        return call

    def close(self) -> None:
        """Wait for the job running (if any) and stop the thread."""
        self._pool.shutdown(wait=True)

    def _locked_call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        with self.lock:
            return fn(*args)


@dataclass(slots=True)
class Batch:
    """One encoded telemetry batch waiting for the event loop to log and publish it."""

    payload: bytes
    seq: int
    n: int
    kind: str  # "read" | "derived": the publish-age histogram it is observed in
    ts_ns: np.ndarray  # its samples' timestamps (a view into the encoded part)


@dataclass(slots=True)
class FlushJob:
    """One flush: the frame drained on the event loop, and what the judge thread made of it."""

    frame: Frame
    first_seq: int  # the next telemetry sequence number when the job was made
    drained_ns: int  # wall clock of the drain: samples read before it are in this job or an earlier one
    tick: bool  # also run the per-interval work (checkpoints, health, model and alarm timers)
    next_seq: int = 0
    batches: list[Batch] = field(default_factory=list)
    parts: list[Frame] = field(default_factory=list)  # the encoded parts, for the per-signal counts
    agent_docs: list[dict[str, Any]] = field(default_factory=list)  # agents' events (action requests)
    future: Future[None] | None = None
    handed_off: bool = False  # the final hand-off ran: nothing of this job is left for the loop
    # Set for a job judged off the loop: the judge thread asks it to hand off encoded batches early.
    loop: asyncio.AbstractEventLoop | None = None
    handed_batches: int = 0  # how many of ``batches`` the loop has handed to the log (loop only)
    handed_parts: int = 0  # how many of ``parts`` the loop has counted (loop only)

    def __post_init__(self) -> None:
        self.next_seq = self.first_seq


class Outbox:
    """What the judge thread leaves for the event loop besides a job's batches, in order (the console's
    detector-alarm documents: the console reads its board on the loop). ``deque`` append and popleft are
    atomic across threads."""

    def __init__(self) -> None:
        self._items: deque[tuple[str, Any]] = deque()

    def put(self, kind: str, item: Any) -> None:
        self._items.append((kind, item))

    def drain(self) -> list[tuple[str, Any]]:
        out = []
        while self._items:
            out.append(self._items.popleft())
        return out

    def __len__(self) -> int:
        return len(self._items)
