"""The alarm layer inside the edge daemon: frames and events in, incident documents and command answers out.

Owns the incident engine, its checkpoint and the operator command path; ``edge/app.py`` calls ``frame``
after the detectors, ``tick`` once per flush, and ``close`` at shutdown. Where documents go:
- every incident transition and every audit record: the events lane (``emit``: write-ahead log, acked end to
  end), in messages of their own (an ingestor that does not know these types dead-letters them alone);
- every incident transition also on ``plantwire/v1/{site}/{gateway}/incidents`` (QoS 1, not retained) as JSON
  for other systems (docs/alarms.md), best effort beside the acknowledged lane;
- command results on ``plantwire/v1/{site}/{gateway}/cmdresult``.

Commands arrive on ``plantwire/cmd/v1/{site}/{gateway}/alarms`` in paho's thread; the handler only hands the
payload to the event loop (``call_soon_threadsafe``), where it is validated, applied, answered and audited.
A bad command is refused with its reason (counted per reason class), never raised. A command id seen again
(QoS 1 redelivery) is answered with its first outcome and not applied twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge.alarms import store
from edge.alarms.commands import Command, CommandError, parse_command
from edge.alarms.engine import IncidentEngine, Outcome
from edge.alarms.facts import MachineFacts
from edge.alarms.settings import AlarmSettings
from edge.sidework import SideWork
from plantwire import wire
from plantwire.metrics import Registry
from plantwire.plant import PlantConfig, SignalTable

log = logging.getLogger("plantwire.edge.alarms")

SERVICE = "alarms"
REMEMBERED_COMMANDS = 1024
CHECKPOINT_WORK = "incident checkpoint"
TRANSITION_LOG_WORK = "incident transition log"
TRANSITION_LOG = "incident_transitions.log"
SAVE_INTERVAL_NS = 60 * 1_000_000_000  # without transitions, the checkpoint is refreshed this often
# after a failed save (a full state disk) it is retried this often, so health clears soon after space returns
SAVE_RETRY_INTERVAL_NS = 5 * 1_000_000_000
#: How often active contributors are checked against the detectors' alarm state (a lost CLOSE clears this much
#: later at most): one look-up per active contributor, ~1-2 ms with hundreds of incidents open (a storm).
RESYNC_INTERVAL_NS = 10 * 1_000_000_000


def command_topic(site: str, gateway: str) -> str:
    return f"plantwire/cmd/v1/{site}/{gateway}/{SERVICE}"


class AlarmService:
    def __init__(self, table: SignalTable, plant: PlantConfig, settings: AlarmSettings, *, site: str, gateway: str,
                 state_dir: Path | None, emit: Callable[[list[dict[str, Any]]], None],
                 publish: Callable[[str, bytes], None], sidework: SideWork) -> None:
        self.engine = IncidentEngine(table, MachineFacts.from_plant(plant, table), settings)
        self.site, self.gateway = site, gateway
        self.state_dir = state_dir
        self._emit, self._publish, self._sidework = emit, publish, sidework
        self.incidents_topic = wire.topic(site, gateway, "incidents")
        self.result_topic = wire.topic(site, gateway, "cmdresult")
        self.command_topic = command_topic(site, gateway)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._seen: OrderedDict[str, tuple[str, str, str]] = OrderedDict()
        self.refused: dict[str, int] = {}  # per reason class (the field at fault)
        self.commands_received = 0
        self.commands_lost = 0  # arrived while no event loop could take them (stopping)
        self.docs_emitted = 0
        self.resent = 0
        self.cold_reason: str | None = None
        self.seconds = 0.0  # CPU of the alarm layer (wall time in the event loop)
        self._is_open: Callable[[str], bool] | None = None  # the detectors' alarm state (set by reconcile)
        self._open_alarms: Callable[[], np.ndarray] | None = None  # the detectors' open alarms (set by reconcile)
        self._next_resync_ns = 0
        self._next_save_ns = 0
        self._restore()

    # -- start-up ------------------------------------------------------------------------------------
    def _restore(self) -> None:
        if self.state_dir is None:
            return
        try:
            state, outbox = store.load(self.state_dir)
            self.engine.restore(state)
        except (store.StoreError, ValueError, KeyError, TypeError) as exc:
            self.cold_reason = str(exc)
            log.info("alarms start without incidents: %s", exc)
            return
        if outbox:  # the last flush before a kill may not have reached the write-ahead log: send again
            self.resent += len(outbox)
            self._send(outbox)
        # Documents sent after the checkpoint (a kill before it reached the disk) may have reached the cloud: the
        # incidents' seqs jumped on restore, and their state now goes out again, so the cloud holds the edge's.
        self._out(self.engine.restate(time.time_ns()))
        log.info("alarms: %d incidents continued from the checkpoint", len(self.engine.incidents()))

    def reconcile(self, is_open: Callable[[str], bool], open_alarms: Callable[[], np.ndarray] | None = None) -> None:
        """Close restored contributors the detectors no longer hold open (see ``IncidentEngine.reconcile``) and open
        incidents for alarms they hold open that no incident holds (``IncidentEngine.recover``: the detectors'
        checkpoint was newer than ours); from then on, a tick every ``RESYNC_INTERVAL_NS`` does both for a CLOSE or
        an OPEN lost while running (``IncidentEngine.resync``, ``recover``). ``open_alarms``:
        ``EdgeAnalytics.open_alarms``."""
        self._is_open = is_open
        self._open_alarms = open_alarms
        now = time.time_ns()
        self._out(self.engine.reconcile(is_open, now))
        if open_alarms is not None:
            self._out(self.engine.recover(open_alarms(), now))

    def attach(self, loop: asyncio.AbstractEventLoop, subscribe: Callable[[str, Callable[[str, bytes], None]], None]
               ) -> None:
        """Start taking commands (call from the event loop)."""
        self._loop = loop
        subscribe(self.command_topic, self._on_message)

    # -- per flush ----------------------------------------------------------------------------------
    def frame(self, signal: np.ndarray, value: np.ndarray, quality: np.ndarray, events: np.ndarray,
              now_ns: int, machine_state: np.ndarray | None = None) -> None:
        t0 = time.perf_counter()
        docs = self.engine.on_state(signal, value, quality, now_ns)
        if machine_state is not None:  # the detectors' state for machines without a state signal
            docs += self.engine.on_machine_state(machine_state, now_ns)
        if events.shape[0]:
            docs += self.engine.on_events(events, now_ns)
        self._out(docs)
        self.seconds += time.perf_counter() - t0

    def events(self, events: np.ndarray, now_ns: int) -> None:
        """Events raised outside a frame (health ticks)."""
        self._out(self.engine.on_events(events, now_ns))

    def tick(self, now_ns: int) -> None:
        t0 = time.perf_counter()
        if self._is_open is not None and now_ns >= self._next_resync_ns:  # before the timers: a contributor
            self._next_resync_ns = now_ns + RESYNC_INTERVAL_NS  # closed now starts its clear delay at once
            self._out(self.engine.resync(self._is_open, now_ns))
            if self._open_alarms is not None:
                self._out(self.engine.recover(self._open_alarms(), now_ns))
        self._out(self.engine.tick(now_ns))
        if now_ns >= self._next_save_ns:  # machine states change without a transition: keep them too
            self.save([])
        self.seconds += time.perf_counter() - t0

    def close(self) -> None:
        self.save([])

    def save(self, outbox: list[dict[str, Any]]) -> None:
        self._next_save_ns = time.time_ns() + SAVE_INTERVAL_NS
        if self.state_dir is not None:
            state = self.engine.to_json()
            self._sidework.run(CHECKPOINT_WORK, lambda: store.save(self.state_dir, state, outbox))  # type: ignore[arg-type]
            if self._sidework.is_failing(CHECKPOINT_WORK):
                self._next_save_ns = time.time_ns() + SAVE_RETRY_INTERVAL_NS

    def _out(self, docs: list[dict[str, Any]]) -> None:
        if not docs:
            return
        self.save(docs)  # before the lane: a kill in between re-sends them (store.py)
        self._send(docs)

    def _send(self, docs: list[dict[str, Any]]) -> None:
        if self.engine.s.transition_log_bytes and self.state_dir is not None:
            self._sidework.run(TRANSITION_LOG_WORK, lambda: self._log_transitions(docs))
        self._emit(docs)
        self.docs_emitted += len(docs)
        for d in docs:
            if d.get("type") == "incident":
                self._publish(self.incidents_topic, json.dumps({**d, "site": self.site, "gateway": self.gateway},
                                                               separators=(",", ":")).encode())

    def _log_transitions(self, docs: list[dict[str, Any]]) -> None:
        """Append (id, seq, ts_ns, transition) of each incident document (``alarms.transition_log_bytes``). After the
        checkpoint and before the lane: a kill in between re-sends them from the checkpoint's outbox, and logs them
        again (the same lines), so every line names a document that reaches the events lane."""
        assert self.state_dir is not None
        lines = "".join(json.dumps({"id": d["id"], "seq": d["seq"], "ts_ns": d["ts_ns"], "transition": d["transition"]},
                                   separators=(",", ":")) + "\n" for d in docs if d.get("type") == "incident")
        if not lines:
            return
        path = Path(self.state_dir) / TRANSITION_LOG
        try:
            if path.stat().st_size > self.engine.s.transition_log_bytes:
                path.replace(path.with_name(TRANSITION_LOG + ".1"))
        except FileNotFoundError:
            pass
        with open(path, "a") as f:
            f.write(lines)

    # -- commands ---------------------------------------------------------------------------------------
    def _on_message(self, topic: str, payload: bytes) -> None:
        """paho's thread: hand over to the event loop, nothing else."""
        self.commands_received += 1
        loop = self._loop
        try:
            if loop is None or loop.is_closed():
                raise RuntimeError("no event loop")
            loop.call_soon_threadsafe(self.command, payload, "mqtt")
        except RuntimeError:
            self.commands_lost += 1
            log.warning("alarms: a command arrived while stopping; not applied (the operator sees no answer)")

    def command(self, payload: bytes, source: str = "mqtt") -> dict[str, Any]:
        """Validate, apply, answer and audit one command; returns the result document."""
        now = time.time_ns()
        try:
            cmd = parse_command(payload, source=source)
        except CommandError as exc:
            field = str(exc).split(":", 1)[0]
            self.refused[field] = self.refused.get(field, 0) + 1
            self.engine.stats.commands_refused += 1
            log.warning("alarms: command refused: %s", exc)
            return self._answer(exc.request_id, exc.action or "", Outcome.REFUSED, str(exc), now,
                                actor=exc.actor or "unknown", target="", reason="", source=source)
        seen = self._seen.get(cmd.id)
        if seen is not None:  # a redelivery: the same answer, applied once
            return self._result(cmd.id, seen[0], seen[1], seen[2])
        outcome, detail, docs = self.engine.apply(cmd, now)
        if outcome == Outcome.REFUSED:
            self.refused["state"] = self.refused.get("state", 0) + 1
        self._out(docs)
        self._seen[cmd.id] = (str(cmd.action), outcome, detail)
        while len(self._seen) > REMEMBERED_COMMANDS:
            self._seen.popitem(last=False)
        return self._answer(cmd.id, str(cmd.action), outcome, detail, now, actor=cmd.actor, target=cmd.target,
                            reason=cmd.reason, source=cmd.source)

    def _answer(self, request_id: str | None, action: str, outcome: str, detail: str, now: int, *, actor: str,
                target: str, reason: str, source: str) -> dict[str, Any]:
        audit = {"type": "audit", "ts_ns": now, "request_id": request_id, "actor": actor, "source": source,
                 "service": SERVICE, "action": action, "target": target, "reason": reason, "outcome": outcome,
                 "detail": detail}
        self._out([audit])
        return self._result(request_id, action, outcome, detail)

    def _result(self, request_id: str | None, action: str, outcome: str, detail: str) -> dict[str, Any]:
        doc = {"id": request_id, "service": SERVICE, "action": action, "outcome": outcome, "detail": detail}
        self._publish(self.result_topic, json.dumps(doc, separators=(",", ":")).encode())
        return doc

    # -- observability ------------------------------------------------------------------------------
    def export_metrics(self, m: Registry) -> None:
        st = self.engine.stats
        m.counter("incidents_opened_total", "Incidents created (annunciated or not)").set(st.incidents_opened)
        m.counter("incidents_annunciated_total", "Incidents shown to an operator when they opened").set(
            st.incidents_annunciated)
        m.counter("incidents_suppressed_total", "Incidents created suppressed (machine state, or a flood)").set(
            st.incidents_suppressed)
        m.counter("incidents_reactivated_total", "Cleared incidents re-activated by their machine's next alarm within "
                  "alarms.reactivate_window_s (not new incidents)").set(st.incidents_reactivated)
        m.counter("incident_transitions_total", "Incident documents written").set(st.transitions)
        m.counter("incident_floods_total", "Flood incidents opened").set(st.floods)
        m.counter("incident_chattering_total", "Machines marked chattering (auto-shelved)").set(st.chattering)
        m.counter("incident_unmatched_closes_total", "Alarm closes no incident held").set(st.unmatched_closes)
        m.counter("incident_resynced_closes_total", "Contributors closed because their alarm's CLOSE was lost "
                  "(events over analytics.max_events, or a failed step); the detectors no longer held it").set(
            st.resynced_closes)
        m.counter("incident_resynced_opens_total", "Alarms the detectors held open that no incident held (their OPEN "
                  "was lost: events over analytics.max_events, a failed step, a kill between the two checkpoints); "
                  "opened then").set(st.resynced_opens)
        m.counter("alarm_commands_received_total", "Alarm commands received").set(self.commands_received)
        m.counter("alarm_commands_applied_total", "Alarm commands applied").set(st.commands_applied)
        refused = m.counter("alarm_commands_refused_total", "Alarm commands refused, by the field at fault")
        for reason, n in self.refused.items():
            refused.set(n, reason=reason)
        m.gauge("incidents_active", "Incidents active now").set(sum(1 for i in self.engine.incidents() if i.active))
        m.gauge("incidents_unacked", "Incidents not acknowledged").set(
            sum(1 for i in self.engine.incidents() if not i.acked and i.announced))
        m.counter("alarm_layer_seconds_total", "Time spent in the alarm layer").set(self.seconds)

    def counts(self) -> dict[str, int]:
        """Incidents held now: active, annunciated (active and shown), unacknowledged, shelved, suppressed."""
        held = self.engine.incidents()
        return {
            "active": sum(1 for i in held if i.active),
            "annunciated": sum(1 for i in held if i.annunciated),
            "unacked": sum(1 for i in held if i.announced and not i.acked),
            "shelved": sum(1 for i in held if i.shelved_until_ns is not None),
            "suppressed": sum(1 for i in held if i.active and i.suppressed_by is not None),
            "floods": sum(1 for i in held if i.machine is None and i.active),
        }

    def snapshot(self) -> list[dict[str, Any]]:
        """The incidents held now as incident documents (their latest state, without a new ``seq``), newest
        first: the local console's alarm board (``edge.console.hooks.IncidentBoard``)."""
        out = []
        for inc in sorted(self.engine.incidents(), key=lambda i: -i.start_ns):
            d = {"type": "incident", "id": inc.id, "seq": inc.seq, "start_ns": inc.start_ns, "end_ns": inc.end_ns,
                 "machine": inc.machine, "area": inc.area, "priority": inc.priority.label, "active": inc.active,
                 "acked": inc.acked, "shelved_until_ns": inc.shelved_until_ns, "out_of_service": inc.out_of_service,
                 "suppressed_by": inc.suppressed_by, "chattering": inc.chattering, "flood_count": inc.flood_count,
                 "kinds": list(inc.kinds), "signals": inc.signals(self.engine.s.max_signals),
                 "peak": round(float(inc.peak), 4)}
            out.append(d)
        return out


__all__ = ["AlarmService", "Command", "command_topic"]
