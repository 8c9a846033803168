"""The agent runner: builds the configured agents, feeds them each frame, isolates their failures.

Where it sits in the daemon (``edge/app.py``): once per batch interval the gateway drains the frame
buffer, scores it, encodes and hands it to the forwarder, and only then calls ``run(frame, events)``.
So an agent never delays a frame; what it emits is held here and ``take()`` hands it to the next flush,
which encodes it in its own batches (same sequence numbers, write-ahead log, acks and per-signal counts
as read samples). Derived samples thus reach the cloud one batch interval after the samples they
come from.

Isolation, decided here because this is where the retry-or-drop decision is made:
- an exception from an agent (while building, declaring, processing or checkpointing) disables it for the
  rest of the run: logged once with its traceback, ``agent_failures_total{agent}``, ``agent_enabled{agent}``
  0, and one ``{"type": "alarm", "kind": "agent_failed", ...}`` document on the events lane; its output
  of the failing call is discarded, the other agents and the daemon carry on;
- each call is timed; an agent over ``frame_budget_ms`` for ``overrun_frames`` frames in a row is disabled
  the same way (kind ``agent_overrun``). A call cannot be interrupted from inside the event loop: a call
  that never returns is the systemd watchdog's business (the loop stops petting it), which is why agents
  keep per-sample work in kernels whose cost is bounded by the frame's size.
- state is checkpointed to ``state_dir/agents/<name>.npz`` every ``checkpoint_interval_s`` and on close,
  restored at start when version and fingerprint match (else the agent starts cold and says why once).
- a failure episode is remembered in ``state_dir/agents/<name>.failed.json``; when a later runner (a config
  reload, a restart) builds that agent and it runs again, the episode is closed on the events lane (the same
  ``start_ns``, ``end_ns`` now) and forgotten, so an ``agent_failed`` alarm does not stand forever.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.agents.base import Agent, AgentContext, AgentStats, DerivedSignal, Emitter
from edge.agents.registry import agent_classes
from edge.agents.settings import AgentsSettings
from edge.agents.table import with_derived
from edge.detectors import checkpoint
from edge.detectors.checkpoint import CheckpointError
from edge.detectors.events import EVENT_DTYPE
from edge.frames import Frame, FrameBuffer
from plantwire.plant import PlantConfig, SignalTable

log = logging.getLogger(__name__)

AGENTS_DIR = "agents"


@dataclass
class _Slot:
    """One agent with what the runner keeps for it."""

    name: str
    agent: Agent | None
    stats: AgentStats
    mask: np.ndarray  # bool per plant signal: consumed by this agent, then one False (any other index clips to it)
    base: int  # signal-table index of its first derived signal
    emitter: Emitter
    overrun_streak: int = 0


class AgentRunner:
    """Owns the agents of one gateway. Not thread-safe (the event loop's)."""

    def __init__(self, plant_table: SignalTable, slots: list[_Slot], settings: AgentsSettings,
                 state_dir: Path | None, derived: list[DerivedSignal]) -> None:
        self.plant_table = plant_table
        self.settings = settings
        self.slots = slots
        self.state_dir = None if state_dir is None else Path(state_dir) / AGENTS_DIR
        self.table = with_derived(plant_table, derived)  # the gateway's table: plant rows, then derived rows
        self.derived = derived
        self.events: list[dict[str, Any]] = []  # events-lane documents not yet taken
        self.cold_reasons: list[str] = []
        cap = max(1, sum(s.emitter.capacity for s in slots))
        self._pending = FrameBuffer(cap)
        self._next_checkpoint_s = time.monotonic() + settings.checkpoint_interval_s
        self._no_events = np.empty(0, dtype=EVENT_DTYPE)
        for s in slots:
            self._restore(s)
            self._close_old_failure(s)

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def build(cls, plant_table: SignalTable, plant: PlantConfig, settings: AgentsSettings | None,
              state_dir: Path | None, *, classes: dict[str, type[Agent]] | None = None) -> AgentRunner:
        """Build every enabled agent; one that fails to build is disabled (event, metric), never fatal."""
        settings = settings or AgentsSettings()
        ctx = AgentContext.from_plant(plant_table, plant)
        classes = agent_classes() if classes is None else classes
        slots: list[_Slot] = []
        derived: list[DerivedSignal] = []
        failed: list[tuple[str, str]] = []
        n = len(plant_table)
        base = n
        for name, klass in classes.items():
            conf = getattr(settings, name, None)
            if conf is None or not getattr(conf, "enabled", True):
                continue
            stats = AgentStats()
            try:
                agent = klass(ctx, conf)  # type: ignore[call-arg]
                mine = agent.derived()
                consumed = np.asarray(agent.consumes(), dtype=np.int64)
                if consumed.size and (consumed.min() < 0 or consumed.max() >= n):
                    raise ValueError(f"consumes() names signal indices outside 0..{n - 1}")
            except Exception as exc:
                log.exception("agent %s: could not be built; it stays off", name)
                failed.append((name, f"build: {type(exc).__name__}: {exc}"))
                stats.enabled = False
                stats.failures = 1
                stats.disabled_reason = failed[-1][1]
                slots.append(_Slot(name, None, stats, np.zeros(n + 1, dtype=bool), base, Emitter(1, 0)))
                continue
            mask = np.zeros(n + 1, dtype=bool)  # the last: every signal index past the plant's (derived ones)
            mask[consumed] = True
            try:
                log.info("agent %s: %s", name, agent.describe())
            except Exception:  # a summary is not worth an agent
                log.warning("agent %s: describe() failed", name)
            slots.append(_Slot(name, agent, stats, mask, base,
                               Emitter(settings.max_samples_per_frame, len(mine))))
            derived.extend(mine)
            base += len(mine)
        runner = cls(plant_table, slots, settings, state_dir, derived)
        for name, why in failed:
            runner._event(name, "agent_failed", why)
        return runner

    # -- per frame ------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Derived samples emitted and not yet taken (the run mark counts them as pending)."""
        return len(self._pending)

    def take(self) -> Frame | None:
        """The derived samples emitted since the last take (None when there are none)."""
        if len(self._pending) == 0:
            return None
        return self._pending.drain()

    def take_events(self) -> list[dict[str, Any]]:
        out, self.events = self.events, []
        return out

    def run(self, frame: Frame, events: np.ndarray | None = None, now_s: float | None = None) -> None:
        """Feed one frame (plant signals; derived ones are ignored) and its alarm events to every agent."""
        ev = self._no_events if events is None else events
        budget_s = self.settings.frame_budget_ms / 1000.0
        for s in self.slots:
            if s.agent is None or not s.stats.enabled:
                continue
            if len(frame):
                # positions, then four integer takes: boolean indexing of the four columns with a scattered mask
                # cost ~300 us per agent and frame of 15,000 samples (20 ns per sample read), this ~55 us
                keep = np.flatnonzero(np.take(s.mask, frame.signal, mode="clip"))
                sub = Frame(frame.ts_ns[keep], frame.signal[keep], frame.value[keep], frame.quality[keep])
            else:
                sub = frame
            out = s.emitter
            out.reset()
            dropped_before = out.dropped
            t0 = time.perf_counter()
            try:
                s.agent.process(sub, ev, out)
            except Exception as exc:
                self._disable(s, "agent_failed", f"process: {type(exc).__name__}: {exc}", exc)
                continue
            dt = time.perf_counter() - t0
            st = s.stats
            st.frames += 1
            st.seconds += dt
            st.max_frame_s = max(st.max_frame_s, dt)
            st.samples_in += len(sub)
            st.samples_dropped += out.dropped - dropped_before
            if out.dropped > dropped_before:
                log.warning("agent %s: emitted more than %d derived samples in one frame; %d dropped (counted)",
                            s.name, out.capacity, out.dropped - dropped_before)
            if out.n:
                self._pending.append(out.ts_ns[:out.n], out.local[:out.n] + np.uint32(s.base), out.value[:out.n],
                                     out.quality[:out.n])
                st.samples_out += out.n
            for doc in out.events:
                doc.setdefault("type", "alarm")
                doc["agent"] = s.name
                self.events.append(doc)
            st.events_out += len(out.events)
            if dt > budget_s:
                st.overruns += 1
                s.overrun_streak += 1
                if s.overrun_streak >= self.settings.overrun_frames:
                    self._disable(s, "agent_overrun", f"over its {self.settings.frame_budget_ms:g} ms budget for "
                                  f"{s.overrun_streak} frames in a row (last {dt * 1000:.0f} ms)", None)
            else:
                s.overrun_streak = 0
        if now_s is not None and now_s >= self._next_checkpoint_s:
            self._next_checkpoint_s = now_s + self.settings.checkpoint_interval_s
            self.save()

    # -- failures ----------------------------------------------------------------------------
    def _disable(self, s: _Slot, kind: str, why: str, exc: BaseException | None) -> None:
        s.stats.enabled = False
        s.stats.failures += 1
        s.stats.disabled_reason = why
        s.emitter.reset()
        if exc is not None:
            log.error("agent %s disabled for the rest of this run: %s\n%s", s.name, why,
                      "".join(traceback.format_exception(exc)).rstrip())
        else:
            log.error("agent %s disabled for the rest of this run: %s", s.name, why)
        self._event(s.name, kind, why)

    def _event(self, name: str, kind: str, why: str) -> None:
        doc = {"type": "alarm", "state": "open", "kind": kind, "machine": "", "signal": f"agent.{name}",
               "start_ns": time.time_ns(), "end_ns": None, "peak": 0.0, "agent": name, "detail": why[:500]}
        marker = self._failed_path(name)
        if marker is not None and marker.exists():  # failing again as before: the same episode, not a new one
            try:
                old = json.loads(marker.read_text())
                if old.get("kind") == kind:
                    doc["start_ns"] = int(old["start_ns"])
            except (OSError, ValueError, KeyError, TypeError):
                pass
        self.events.append(doc)
        if marker is None:
            return
        try:  # remembered so that the runner that next runs this agent closes the episode
            marker.parent.mkdir(parents=True, exist_ok=True)
            tmp = marker.with_suffix(".tmp")
            tmp.write_text(json.dumps({"kind": kind, "start_ns": doc["start_ns"], "detail": doc["detail"]}))
            os.replace(tmp, marker)
        except OSError as exc:
            log.warning("agent %s: failure not remembered (%s); its %s alarm will not close by itself", name, exc, kind)

    def _failed_path(self, name: str) -> Path | None:
        return None if self.state_dir is None else self.state_dir / f"{name}.failed.json"

    def _close_old_failure(self, s: _Slot) -> None:
        """An agent that failed in an earlier runner and is built and running again: close that episode."""
        marker = self._failed_path(s.name)
        if marker is None or s.agent is None or not s.stats.enabled or not marker.exists():
            return
        try:
            old = json.loads(marker.read_text())
            kind, start_ns = str(old["kind"]), int(old["start_ns"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("agent %s: unreadable failure record %s (%s); removed", s.name, marker, exc)
            kind, start_ns = "agent_failed", 0
        if start_ns:
            self.events.append({
                "type": "alarm", "state": "closed", "kind": kind, "machine": "", "signal": f"agent.{s.name}",
                "start_ns": start_ns, "end_ns": time.time_ns(), "peak": 0.0, "agent": s.name,
                "detail": "running again (built by a new configuration or after a restart)"})
        try:
            marker.unlink()
        except OSError as exc:
            log.warning("agent %s: failure record %s not removed (%s)", s.name, marker, exc)

    # -- checkpoints -----------------------------------------------------------------------------
    def _path(self, s: _Slot) -> Path | None:
        return None if self.state_dir is None else self.state_dir / f"{s.name}.npz"

    def _restore(self, s: _Slot) -> None:
        path = self._path(s)
        if path is None or s.agent is None:
            return
        try:
            live = s.agent.state()
            if not live:
                return
            got = checkpoint.load(path, s.agent.state_version, s.agent.fingerprint(), live)
            for k, arr in got.items():
                live[k][...] = arr
        except CheckpointError as exc:
            self.cold_reasons.append(f"agent {s.name}: {exc}")
        except Exception as exc:
            self._disable(s, "agent_failed", f"restore: {type(exc).__name__}: {exc}", exc)

    def save(self) -> None:
        """Checkpoint every enabled agent's state (a failed write is counted, retried next interval)."""
        for s in self.slots:
            path = self._path(s)
            if path is None or s.agent is None or not s.stats.enabled:
                continue
            try:
                live = s.agent.state()
                if not live:
                    continue
                fp = s.agent.fingerprint()
            except Exception as exc:
                self._disable(s, "agent_failed", f"state: {type(exc).__name__}: {exc}", exc)
                continue
            try:
                checkpoint.save(path, s.agent.state_version, fp, live)
            except OSError as exc:
                s.stats.checkpoint_errors += 1
                log.warning("agent %s: checkpoint not saved (%s); retried in %g s", s.name, exc,
                            self.settings.checkpoint_interval_s)

    # -- reporting -------------------------------------------------------------------------------
    def export_metrics(self, m: Any) -> None:
        """``agent_*`` families, one series per agent (``edge.app`` calls it with its Registry)."""
        fam = {
            "enabled": m.gauge("agent_enabled", "1 while the agent runs; 0 once it failed or overran (disabled)"),
            "failures": m.counter("agent_failures_total", "Agents disabled after an exception or repeated overruns"),
            "frames": m.counter("agent_frames_total", "Frames an agent processed"),
            "samples_in": m.counter("agent_samples_in_total", "Samples handed to an agent"),
            "samples_out": m.counter("agent_samples_out_total", "Derived samples an agent emitted"),
            "samples_dropped": m.counter("agent_samples_dropped_total",
                                         "Derived samples beyond agents.max_samples_per_frame (dropped)"),
            "events_out": m.counter("agent_events_total", "Events an agent emitted"),
            "seconds": m.counter("agent_seconds_total", "Time spent in an agent's process()"),
            "overruns": m.counter("agent_overruns_total", "Frames an agent took longer than agents.frame_budget_ms"),
            "checkpoint_errors": m.counter("agent_checkpoint_errors_total", "Agent checkpoints that failed to save"),
        }
        for s in self.slots:
            st = s.stats
            for key, metric in fam.items():
                v = getattr(st, key)
                metric.set(float(v), agent=s.name)

    def summary(self) -> dict[str, Any]:
        return {s.name: {"enabled": s.stats.enabled, "reason": s.stats.disabled_reason,
                         "samples_in": s.stats.samples_in, "samples_out": s.stats.samples_out,
                         "seconds": round(s.stats.seconds, 4)} for s in self.slots}

    def close(self) -> None:
        self.save()
