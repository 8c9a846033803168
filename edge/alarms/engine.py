"""The incident engine: signal and machine alarm events in, incident transitions out (ISA-18.2 lifecycle).

One incident per machine at a time. It opens with the machine's first alarm (OPEN event), gathers every
alarm that opens while it is active (its *contributors*), and clears ``clear_delay_s`` after its last
contributor closed: a contributor that re-opens within the delay continues it, so a flapping signal
does not close and re-open it. A cleared incident an operator has not acknowledged stays listed until
acknowledged (ISA-18.2 "return to normal, unacknowledged"); one that nobody was shown needs no
acknowledgement and is retired.

What holds an incident back from the operator (it is still tracked and still documented):
- *suppressed by design* (``suppressed_by``): the machine is ``off`` (its state signal reads an off value),
  ``idle`` (powered but not producing: the detectors' IDLE state, ``edge.kernels.opstate.update_activity``),
  ``startup`` (within ``state_settle_s`` of leaving off or idle), ``maintenance`` (set by an operator), or
  ``flood`` (summarised into its area's flood incident). Kinds in ``never_suppressed`` (data quality)
  are never suppressed by state; an incident with an ``at_rest`` contributor (``edge.kernels.atrest``: a
  stopped machine's signal outside its rest band) is not suppressed by ``off``, the state it is about.
- *shelved* until a time (an operator, or automatically when it chatters), *out of service* (an operator,
  with a reason). Both belong to the machine's alarm, so they hold for the incidents that follow too.

Floods, per area: more than ``flood_count`` new incidents within ``flood_window_s`` open a flood incident;
while it lasts, new incidents below ``flood_keeps`` priority are summarised into it (its ``flood_count``);
it closes when the window holds at most ``flood_clear_count``, and what is still active is then shown.
Two exceptions, as an alarm engineer would set them (issue 16, the whole-plant analysis in bench/RESULTS.md):
an incident with a data-quality contributor (``never_suppressed``: the measurement is lost, and an operator
working through a flood needs to know which readings he can no longer trust) is never summarised, and a
summarised incident that escalates to a kept priority, or gains a data-quality contributor, leaves the summary
and is shown at once. The flood incident names its members: its ``signals`` are its members' leading signals,
active members first, most urgent (priority, then peak) first, at most ``max_signals``; its contributors are
its members (key ``i:<incident id>``), so the console and the cloud can list them.

Re-activation (one abnormal situation, one incident): a machine that alarms again within ``reactivate_window_s`` of
its incident's clear, on a signal that contributed to it (``reactivation: same_signal``; or any alarm of the machine,
``same_machine``), re-activates that incident instead of opening a new one: same id, next ``seq``, an ``update``
document with ``active: true`` and ``acked: false`` (a new activation is acknowledged again, ISA-18.2). A step's
return to normal, or a calibration offset's removal, minutes after its onset, is then the same episode to the
operator and to the cloud's KPIs (an incident is annunciated once: ``cloud/alarms/kpi.py``). It is still an
activation the operator must acknowledge: it counts for chattering and in its area's flood window (flood control
protects the operator's load, whatever the KPIs call it), and is summarised like a new incident while the area is
in flood. An incident that began more than twice the window ago no longer re-activates: a bad actor
alarming again and again stays visible as such (the cloud's "top 10 most frequent"), and no incident stands for
days on a recurring alarm. Why, with figures: bench/RESULTS.md, branch incidents.

Chattering: a machine whose incidents activate ``chatter_count`` times within ``chatter_window_s`` is marked
chattering and shelved for ``chatter_shelve_s`` (its first document says ``chatter``).

Time: every call takes ``now_ns`` (the edge's wall clock, or simulated time in ``bench/alarm_eval.py``);
transitions are stamped with it. Work per call is proportional to the events, incidents and commands
involved; ``on_state`` does one vectorised pass over the frame to find state-signal samples. Not
thread-safe: one owner (the edge's event loop).
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.alarms.commands import Action, Command
from edge.alarms.facts import MachineFacts
from edge.alarms.model import Contributor, Incident, Priority, Transition
from edge.alarms.priority import contribution_priority, parse_priority
from edge.alarms.settings import AlarmSettings, ReactivationMode, SuppressionMode
from edge.detectors.events import Phase, Scope
from edge.kernels import opstate
from edge.kernels.kinds import Kind
from plantwire.plant import SignalTable

NS = 1_000_000_000
STATE_UNKNOWN, STATE_RUNNING, STATE_OFF, STATE_IDLE = -1, 0, 1, 2
AT_REST_KIND = Kind.AT_REST.name.lower()
STATE_VERSION = 1
#: A restored incident's ``seq`` jumps by this, and an incident the engine recovers (its OPEN was never seen)
#: starts at it: documents sent after the last checkpoint (a kill before it reached the disk) may have reached
#: the cloud with seqs the checkpoint does not know, and the cloud keeps the state of the highest seq
#: (cloud/alarms/store.py). Far more than one incident's transitions between two checkpoints.
SEQ_RESTART_GAP = 1000


def _contribute(inc: Incident, key: str, name: str, kind: str, peak: float, start_ns: int) -> None:
    """An alarm (re)joins an incident: its contributor becomes active with the larger peak, its kind is listed."""
    c = inc.contributors.get(key)
    if c is None:
        inc.contributors[key] = Contributor(key, name, kind, peak, True, start_ns)
    else:
        c.active, c.kind, c.peak, c.end_ns = True, kind, max(c.peak, peak), None
    if kind not in inc.kinds:
        inc.kinds.append(kind)
    inc.peak = max(inc.peak, peak)


class Outcome:
    APPLIED = "applied"
    REFUSED = "refused"


@dataclass(slots=True)
class EngineStats:
    events: int = 0
    incidents_opened: int = 0  # every incident created, annunciated or not
    incidents_annunciated: int = 0  # of which an operator was shown (open, not suppressed/shelved/out of service)
    incidents_suppressed: int = 0  # created suppressed (state or flood)
    incidents_cleared: int = 0
    incidents_reactivated: int = 0  # cleared incidents re-activated by their machine's next alarm (not new ones)
    transitions: int = 0
    floods: int = 0
    chattering: int = 0
    unmatched_closes: int = 0  # a CLOSE for an alarm no incident holds (opened before the layer started)
    resynced_closes: int = 0  # contributors closed because the detectors no longer hold their alarm (a lost CLOSE)
    resynced_opens: int = 0  # alarms the detectors hold open that no incident held (a lost OPEN), opened then
    commands_applied: int = 0
    commands_refused: int = 0


@dataclass(slots=True)
class _Flood:
    window: deque[int]  # ts of new incidents in the area within flood_window_s
    incident: Incident | None = None
    reported_count: int = 0


class IncidentEngine:
    def __init__(self, table: SignalTable, facts: MachineFacts, settings: AlarmSettings | None = None) -> None:
        self.table = table
        self.facts = facts
        self.s = settings or AlarmSettings()
        n_m = len(facts.machine_ids)
        self._machine_index = {mid: i for i, mid in enumerate(facts.machine_ids)}
        self._signal_machine = table.machine.astype(np.int64)
        # a DEVICE alarm (a PLC or server without a good poll) concerns every machine the device serves
        self._device_machines = [np.unique(table.machine[table.device == d]).tolist()
                                 for d in range(len(table.devices))]
        self._is_state = facts.state_machine >= 0
        self._state_value = np.full(len(table), np.nan)  # last good value per state signal (on_state skips repeats)
        self._never = {Kind[k.upper()].name.lower() for k in self.s.never_suppressed}
        self._flood_keeps = parse_priority(self.s.flood_keeps)
        self.current: dict[int, Incident] = {}  # machine -> its active (or clearing) incident
        self.retained: dict[str, Incident] = {}  # cleared, unacknowledged, by id
        # machine -> (clear time, its last incident) while that incident may re-activate (reactivate_window_s);
        # _recent_order holds the same entries by clear time (monotonic), so expiry is a pop from the left
        self.recent: dict[int, tuple[int, Incident]] = {}
        self._recent_order: deque[tuple[int, int]] = deque()
        self.shelved_until: dict[int, int] = {}  # machine -> ns
        self.out_of_service: dict[int, str] = {}  # machine -> reason
        self.maintenance: dict[int, str] = {}  # machine -> reason
        self.chattering: set[int] = set()
        self._activations: dict[int, deque[int]] = {}
        self.state = np.full(n_m, STATE_UNKNOWN, dtype=np.int8)
        self.started_ns = np.zeros(n_m, dtype=np.int64)  # when the machine last left an off state
        self._settling: set[int] = set()  # machines within state_settle_s of a start
        self.floods: dict[str, _Flood] = {a: _Flood(deque()) for a in facts.areas}
        self.stats = EngineStats()
        self._ids: set[str] = set()
        self._first_seq = 0  # seq a new incident starts from (SEQ_RESTART_GAP while recovering, see recover)

    # -- inputs ------------------------------------------------------------------------------------
    def on_state(self, signal: np.ndarray, value: np.ndarray, quality: np.ndarray, now_ns: int) -> list[dict[str, Any]]:
        """Machine states from one frame's state-signal samples (vectorised; Python only for machines that changed)."""
        if self.s.suppression is SuppressionMode.OFF:
            return []
        # one gather over the frame, the only per-sample work (np.take: ~40 % cheaper than indexing, bench/RESULTS.md)
        sel = np.flatnonzero(np.take(self._is_state, signal))
        if sel.size == 0:
            return []
        sm = self.facts.state_machine[signal[sel]]
        v = value[sel]
        ok = (quality[sel] != 2) & np.isfinite(v)
        s = signal[sel]
        if ((v == self._state_value[s]) | ~ok).all():
            return []  # every good sample repeats its signal's last good value: no state changes (the usual frame)
        sel, v = sel[ok], v[ok]
        if sel.size == 0:
            return []
        s = s[ok]
        u, first_from_end = np.unique(s[::-1], return_index=True)
        self._state_value[u] = v[::-1][first_from_end]
        rows = self.facts.off_row[signal[sel]]
        off = np.any(v[:, None] == self.facts.off_values[rows], axis=1)
        ms = sm[ok]
        machines, first_from_end = np.unique(ms[::-1], return_index=True)
        last = ms.size - 1 - first_from_end  # the frame's last sample per machine decides (samples in arrival order)
        new = self.state.copy()
        # on: running, unless the detectors hold it idle (powered, not producing: only they know, on_machine_state)
        on = np.where(self.state[machines] == STATE_IDLE, STATE_IDLE, STATE_RUNNING)
        new[machines] = np.where(off[last], STATE_OFF, on)
        return self._states(new, now_ns)

    def on_machine_state(self, machine_state: np.ndarray, now_ns: int) -> list[dict[str, Any]]:
        """The detectors' operating state per machine (``StackResult.machine_state``: 1 off, 3 running, 0 and 2
        not decided) for machines without a state signal of their own: an energy meter or a hall's HVAC whose load
        says it is off is suppressed like a compressor whose running bit is 0. A machine with a state signal keeps
        what that signal says about off and on (:meth:`on_state`); idle (2: its running bit on, its cycle at rest)
        only the detectors know, for every machine: their IDLE makes it idle, their RUNNING ends an idle spell."""
        if self.s.suppression is SuppressionMode.OFF:
            return []
        # The detectors judge the plant's machines; the agents' owners (lines, areas: machine ids appended after
        # the plant's by edge.agents.table.with_derived) have no operating state, so only the common prefix counts.
        k = min(len(machine_state), len(self.state))
        own = self.facts.state_signal[:k] < 0
        ms = machine_state[:k]
        new = self.state.copy()
        head = new[:k]  # a view: the assignments below land in ``new``
        head[own & (ms == opstate.OFF)] = STATE_OFF
        head[own & (ms == opstate.RUNNING)] = STATE_RUNNING
        head[(ms == opstate.IDLE) & (head != STATE_OFF)] = STATE_IDLE
        head[~own & (ms == opstate.RUNNING) & (head == STATE_IDLE)] = STATE_RUNNING
        return self._states(new, now_ns)

    def _states(self, new: np.ndarray, now_ns: int) -> list[dict[str, Any]]:
        """Take the machines' new states: start-up settling, and suppression of their open incidents."""
        changed = np.flatnonzero(new != self.state)
        docs: list[dict[str, Any]] = []
        for m in changed.tolist():
            before = int(self.state[m])
            self.state[m] = new[m]
            if before in (STATE_OFF, STATE_IDLE) and new[m] == STATE_RUNNING:
                self.started_ns[m] = now_ns
                if self.s.state_settle_s > 0:
                    self._settling.add(m)
            elif new[m] in (STATE_OFF, STATE_IDLE):
                self._settling.discard(m)
            inc = self.current.get(m)
            if inc is not None:
                self._refresh_suppression(m, inc, now_ns, docs)
        return docs

    def on_events(self, events: np.ndarray, now_ns: int) -> list[dict[str, Any]]:
        """Alarm OPEN/CLOSE rows (``edge.detectors.events.EVENT_DTYPE``) into incidents."""
        docs: list[dict[str, Any]] = []
        for ts_start, ts_end, entity, scope, phase, kind, peak, top in events.tolist():
            self.stats.events += 1
            if scope == Scope.DEVICE:  # each served machine's incident names the device (data quality, low)
                name = self.table.devices[entity].name
                for m in self._device_machines[entity]:
                    if phase == Phase.OPEN:
                        self._open(m, f"d{entity}", name, "device", float(peak), int(ts_start), now_ns, docs)
                    else:
                        self._close(m, f"d{entity}", "device", float(peak), int(ts_end), now_ns, docs)
                continue
            if scope == Scope.SIGNAL:
                m = int(self._signal_machine[entity])
                key, name = f"s{entity}", self.table.ids[entity]
            else:
                m = int(entity)
                key = f"{'h' if kind == Kind.HEALTH else 'm'}{entity}"
                tops = [t for t in top if t >= 0]
                name = self.table.ids[tops[0]] if tops else self.facts.machine_ids[m]
            if m < 0:
                continue
            kname = Kind(kind).name.lower()
            if phase == Phase.OPEN:
                self._open(m, key, name, kname, float(peak), int(ts_start), now_ns, docs)
            else:
                self._close(m, key, kname, float(peak), int(ts_end), now_ns, docs)
        return docs

    def tick(self, now_ns: int) -> list[dict[str, Any]]:
        """Timers: clear delays, shelving expiry, start-up settling, flood windows."""
        docs: list[dict[str, Any]] = []
        for m, inc in list(self.current.items()):
            if inc.clear_due_ns is not None and now_ns >= inc.clear_due_ns:
                self._clear(m, inc, now_ns, docs)
        if self._recent_order:
            lo = now_ns - int(self.s.reactivate_window_s * NS)
            while self._recent_order and self._recent_order[0][0] < lo:
                t_clear, m = self._recent_order.popleft()
                if (r := self.recent.get(m)) is not None and r[0] == t_clear:
                    del self.recent[m]
        for m in [m for m, until in self.shelved_until.items() if now_ns >= until]:
            self._unshelve(m, now_ns, docs, actor=None, reason="shelving expired")
        if self._settling:
            done = [m for m in self._settling
                    if now_ns >= int(self.started_ns[m]) + int(self.s.state_settle_s * NS)]
            for m in done:
                self._settling.discard(m)
                if (inc := self.current.get(m)) is not None:
                    self._refresh_suppression(m, inc, now_ns, docs)
        for area, fl in self.floods.items():
            self._prune(fl, now_ns)
            if fl.incident is None:
                continue
            if len(fl.window) <= self.s.flood_clear_count:
                self._flood_close(area, fl, now_ns, docs)
            elif fl.incident.flood_count != fl.reported_count:
                fl.reported_count = fl.incident.flood_count or 0
                docs.append(self._doc(fl.incident, Transition.UPDATE, now_ns))
        return docs

    # -- operator commands -------------------------------------------------------------------------
    def apply(self, cmd: Command, now_ns: int) -> tuple[str, str, list[dict[str, Any]]]:
        """Apply a validated command: (outcome, detail, transition documents)."""
        docs: list[dict[str, Any]] = []
        try:
            detail = self._apply(cmd, now_ns, docs)
        except _Refused as exc:
            self.stats.commands_refused += 1
            return Outcome.REFUSED, str(exc), []
        self.stats.commands_applied += 1
        return Outcome.APPLIED, detail, docs

    def _apply(self, cmd: Command, now_ns: int, docs: list[dict[str, Any]]) -> str:
        inc: Incident | None = None
        if cmd.incident is not None:
            inc = self.find(cmd.incident)
            if inc is None:
                raise _Refused(f"incident {cmd.incident!r}: not known (cleared and acknowledged, or never raised)")
            if inc.machine is None and cmd.action is not Action.ACK:
                raise _Refused(f"incident {inc.id!r} is a flood summary: only ack applies to it")
            m = self._machine_index[inc.machine] if inc.machine is not None else -1
        else:
            assert cmd.machine is not None
            if cmd.machine not in self._machine_index:
                raise _Refused(f"machine {cmd.machine!r}: not a machine of this gateway")
            m = self._machine_index[cmd.machine]
        actor, reason = cmd.actor, cmd.reason
        a = cmd.action
        if a is Action.ACK:
            targets = [inc] if inc is not None else self._of_machine(m)
            targets = [t for t in targets if not t.acked]
            if not targets:
                raise _Refused(f"{cmd.target}: nothing unacknowledged")
            for t in targets:
                t.acked = True
                docs.append(self._doc(t, Transition.ACK, now_ns, actor=actor, reason=reason))
                if not t.active:
                    self._retire(t)
            return f"acknowledged {', '.join(t.id for t in targets)}"
        if a is Action.SHELVE:
            assert cmd.duration_s is not None
            if cmd.duration_s > self.s.shelve_max_s:
                raise _Refused(f"duration: {cmd.duration_s:g} s is longer than the maximum shelving "
                               f"({self.s.shelve_max_s:g} s)")
            until = now_ns + int(cmd.duration_s * NS)
            self.shelved_until[m] = until
            n = self._set_all(m, now_ns, docs, Transition.SHELVE, actor, reason, shelved_until_ns=until)
            return f"machine {self.facts.machine_ids[m]} shelved for {cmd.duration_s:g} s ({n} incidents)"
        if a is Action.UNSHELVE:
            if m not in self.shelved_until:
                raise _Refused(f"machine {self.facts.machine_ids[m]}: not shelved")
            n = self._unshelve(m, now_ns, docs, actor=actor, reason=reason)
            return f"machine {self.facts.machine_ids[m]} unshelved ({n} incidents)"
        if a is Action.OOS:
            if m in self.out_of_service:
                raise _Refused(f"machine {self.facts.machine_ids[m]}: already out of service "
                               f"({self.out_of_service[m]})")
            self.out_of_service[m] = reason
            n = self._set_all(m, now_ns, docs, Transition.OOS, actor, reason, out_of_service=True)
            return f"machine {self.facts.machine_ids[m]} out of service ({n} incidents)"
        if a is Action.RETURN:
            if m not in self.out_of_service:
                raise _Refused(f"machine {self.facts.machine_ids[m]}: not out of service")
            del self.out_of_service[m]
            n = self._set_all(m, now_ns, docs, Transition.RETURN, actor, reason, out_of_service=False)
            return f"machine {self.facts.machine_ids[m]} returned to service ({n} incidents)"
        if a is Action.MAINTENANCE:
            if m in self.maintenance:
                raise _Refused(f"machine {self.facts.machine_ids[m]}: already in maintenance")
            self.maintenance[m] = reason
        else:  # MAINTENANCE_END
            if m not in self.maintenance:
                raise _Refused(f"machine {self.facts.machine_ids[m]}: not in maintenance")
            del self.maintenance[m]
        if (cur := self.current.get(m)) is not None:
            self._refresh_suppression(m, cur, now_ns, docs, actor=actor, reason=reason)
        state = "in maintenance" if a is Action.MAINTENANCE else "out of maintenance"
        return f"machine {self.facts.machine_ids[m]} {state}"

    # -- queries -----------------------------------------------------------------------------------
    def find(self, incident_id: str) -> Incident | None:
        if incident_id in self.retained:
            return self.retained[incident_id]
        for inc in self.current.values():
            if inc.id == incident_id:
                return inc
        for fl in self.floods.values():
            if fl.incident is not None and fl.incident.id == incident_id:
                return fl.incident
        return None

    def incidents(self) -> list[Incident]:
        """Every incident the engine holds: active, clearing, flood, and cleared-unacknowledged."""
        out = list(self.current.values()) + list(self.retained.values())
        return out + [fl.incident for fl in self.floods.values() if fl.incident is not None]

    def in_flood(self, area: str) -> bool:
        fl = self.floods.get(area)
        return fl is not None and fl.incident is not None

    # -- internals ---------------------------------------------------------------------------------
    def _doc(self, inc: Incident, tr: Transition, now_ns: int, *, actor: str | None = None,
             reason: str | None = None) -> dict[str, Any]:
        self.stats.transitions += 1
        return inc.doc(tr, now_ns, max_signals=self.s.max_signals, actor=actor, reason=reason)

    def _new_id(self, prefix: str, start_ns: int) -> str:
        """Unique per gateway and stable across restarts (the checkpoint keeps the incident with its id)."""
        base = f"{prefix}@{start_ns}"
        iid, k = base, 1
        while iid in self._ids or self.find(iid) is not None or any(r[1].id == iid for r in self.recent.values()):
            k += 1
            iid = f"{base}.{k}"
        return iid

    def _priority(self, m: int, kind: str, peak: float) -> Priority:
        return contribution_priority(Kind[kind.upper()], peak, self.facts.criticality[m], self.s.major_peak)

    def _open(self, m: int, key: str, name: str, kind: str, peak: float, start_ns: int, now_ns: int,
              docs: list[dict[str, Any]]) -> None:
        inc = self.current.get(m)
        prio = self._priority(m, kind, peak)
        if inc is None:
            prev = self._reactivatable(m, key, name, now_ns)
            if prev is not None:
                self._reactivate(m, prev, key, name, kind, peak, start_ns, prio, now_ns, docs)
            else:
                self._create(m, key, name, kind, peak, start_ns, prio, now_ns, docs)
            return
        grew = key not in inc.contributors or kind not in inc.kinds
        _contribute(inc, key, name, kind, peak, start_ns)
        inc.clear_due_ns = None
        inc.end_ns = None
        raised = prio > inc.priority
        if raised:
            inc.priority = prio
        was = inc.suppressed_by
        self._refresh_suppression(m, inc, now_ns, docs)
        if (grew or raised) and was == inc.suppressed_by:
            docs.append(self._doc(inc, Transition.UPDATE, now_ns))

    def _create(self, m: int, key: str, name: str, kind: str, peak: float, start_ns: int, prio: Priority,
                now_ns: int, docs: list[dict[str, Any]]) -> None:
        mid = self.facts.machine_ids[m]
        area = self.facts.area[m]
        inc = Incident(self._new_id(mid, start_ns), mid, area, prio, start_ns, seq=self._first_seq, peak=peak,
                       kinds=[kind], contributors={key: Contributor(key, name, kind, peak, True, start_ns)})
        self._ids.add(inc.id)
        self.current[m] = inc
        self.stats.incidents_opened += 1
        inc.out_of_service = m in self.out_of_service
        inc.shelved_until_ns = self.shelved_until.get(m)
        first = Transition.CHATTER if self._activation(m, inc, now_ns) else Transition.OPEN
        inc.suppressed_by = self._state_reason(m, inc)
        if inc.suppressed_by is None and inc.shelved_until_ns is None and not inc.out_of_service:
            self._flood_count(m, inc, now_ns, docs)
        if first is Transition.OPEN and inc.suppressed_by is not None:
            first = Transition.SUPPRESS
            self.stats.incidents_suppressed += 1
        if inc.annunciated:
            inc.announced = True
            self.stats.incidents_annunciated += 1
        docs.append(self._doc(inc, first, now_ns))

    def _activation(self, m: int, inc: Incident, now_ns: int) -> bool:
        """Count an activation of the machine's incident (a new one, or a re-activation) for chattering; True if the
        machine starts chattering now (it is then shelved for ``chatter_shelve_s``)."""
        act = self._activations.setdefault(m, deque())
        act.append(now_ns)
        while act and act[0] < now_ns - int(self.s.chatter_window_s * NS):
            act.popleft()
        started = False
        if len(act) >= self.s.chatter_count and m not in self.chattering:
            self.chattering.add(m)
            self.stats.chattering += 1
            until = now_ns + int(self.s.chatter_shelve_s * NS)
            self.shelved_until[m] = max(self.shelved_until.get(m, 0), until)
            inc.shelved_until_ns = self.shelved_until[m]
            started = True
        inc.chattering = m in self.chattering
        return started

    def _reactivatable(self, m: int, key: str, name: str, now_ns: int) -> Incident | None:
        """The machine's incident that cleared within ``reactivate_window_s`` and that this alarm continues, if any."""
        r = self.recent.get(m)
        if r is None or self.s.reactivation is ReactivationMode.OFF:
            return None
        t_clear, inc = r
        window_ns = int(self.s.reactivate_window_s * NS)
        if now_ns - t_clear > window_ns or now_ns - inc.start_ns > 2 * window_ns:
            return None
        if self.s.reactivation is ReactivationMode.SAME_MACHINE or key in inc.contributors:
            return inc
        return inc if any(c.name == name for c in inc.contributors.values()) else None

    def _reactivate(self, m: int, inc: Incident, key: str, name: str, kind: str, peak: float, start_ns: int,
                    prio: Priority, now_ns: int, docs: list[dict[str, Any]]) -> None:
        """The machine's recently cleared incident becomes active again (module docstring: re-activation)."""
        del self.recent[m]
        self.retained.pop(inc.id, None)
        self._ids.add(inc.id)
        self.current[m] = inc
        self.stats.incidents_reactivated += 1
        _contribute(inc, key, name, kind, peak, start_ns)
        inc.priority = max(inc.priority, prio)
        inc.active, inc.acked, inc.end_ns, inc.clear_due_ns = True, False, None, None
        inc.out_of_service = m in self.out_of_service
        inc.shelved_until_ns = self.shelved_until.get(m)
        tr = Transition.CHATTER if self._activation(m, inc, now_ns) else Transition.UPDATE
        inc.suppressed_by = self._state_reason(m, inc)
        if inc.suppressed_by is None and inc.shelved_until_ns is None and not inc.out_of_service:
            self._flood_count(m, inc, now_ns, docs)
        if inc.annunciated and not inc.announced:
            inc.announced = True
            self.stats.incidents_annunciated += 1
        docs.append(self._doc(inc, tr, now_ns))

    def _flood_count(self, m: int, inc: Incident, now_ns: int, docs: list[dict[str, Any]]) -> None:
        """Count an annunciable activation in its area (a new incident or a re-activation: both load the operator);
        during a flood, summarise it unless its priority is kept."""
        fl = self.floods[inc.area]
        fl.window.append(now_ns)
        self._prune(fl, now_ns)
        if fl.incident is None and len(fl.window) > self.s.flood_count:
            flood = Incident(self._new_id(f"flood:{inc.area}", now_ns), None, inc.area, Priority.HIGH, now_ns,
                             flood_count=0)
            self._ids.add(flood.id)
            fl.incident, fl.reported_count = flood, 0
            self.stats.floods += 1
            flood.announced = True
            docs.append(self._doc(flood, Transition.FLOOD_OPEN, now_ns))
        if fl.incident is not None and not self._flood_exempt(inc):
            inc.suppressed_by = "flood"
            flood = fl.incident
            if f"i:{inc.id}" not in flood.contributors:  # a re-activated member is counted once
                flood.flood_count = (flood.flood_count or 0) + 1
            for k in inc.kinds:
                if k not in flood.kinds:
                    flood.kinds.append(k)
            flood.peak = max(flood.peak, inc.peak)
            # The member, named by its leading signal; the peak orders members by priority, then score.
            lead = inc.signals(1)
            flood.contributors[f"i:{inc.id}"] = Contributor(f"i:{inc.id}", lead[0] if lead else inc.machine or inc.id,
                                                            inc.kinds[0], _member_rank(inc), True, inc.start_ns)

    def _flood_exempt(self, inc: Incident) -> bool:
        """Never summarised into a flood: a kept priority, or a data-quality contributor (the module docstring)."""
        return inc.priority >= self._flood_keeps or any(k in self._never for k in inc.kinds)

    def _flood_member_left(self, inc: Incident) -> None:
        """A summarised incident cleared or was shown on its own: its flood lists it as no longer active."""
        fl = self.floods.get(inc.area)
        if fl is not None and fl.incident is not None and (c := fl.incident.contributors.get(f"i:{inc.id}")):
            c.active, c.end_ns = False, inc.end_ns

    def _prune(self, fl: _Flood, now_ns: int) -> None:
        lo = now_ns - int(self.s.flood_window_s * NS)
        while fl.window and fl.window[0] < lo:
            fl.window.popleft()

    def _flood_close(self, area: str, fl: _Flood, now_ns: int, docs: list[dict[str, Any]]) -> None:
        flood = fl.incident
        assert flood is not None
        flood.active = False
        flood.end_ns = now_ns
        docs.append(self._doc(flood, Transition.FLOOD_CLOSE, now_ns))
        fl.incident = None
        if not flood.acked:
            self.retained[flood.id] = flood
        self._trim_retained()
        for m, inc in self.current.items():  # what the flood summarised and is still active is shown now
            if inc.area == area and inc.suppressed_by == "flood":
                self._refresh_suppression(m, inc, now_ns, docs, flood_over=True)

    def _close(self, m: int, key: str, kind: str, peak: float, end_ns: int, now_ns: int,
               docs: list[dict[str, Any]], delay_s: float | None = None) -> None:
        inc = self.current.get(m)
        c = inc.contributors.get(key) if inc is not None else None
        if inc is None or c is None:
            self.stats.unmatched_closes += 1
            return
        c.active, c.end_ns, c.peak = False, end_ns, max(c.peak, peak)
        if kind not in inc.kinds:
            inc.kinds.append(kind)
        inc.peak = max(inc.peak, peak)
        if not any(x.active for x in inc.contributors.values()):
            delay = self.s.clear_delay_s if delay_s is None else delay_s
            inc.clear_due_ns = now_ns + int(delay * NS)
            inc.end_ns = max((x.end_ns or 0) for x in inc.contributors.values())
            if delay == 0:
                self._clear(m, inc, now_ns, docs)

    def _clear(self, m: int, inc: Incident, now_ns: int, docs: list[dict[str, Any]]) -> None:
        inc.active = False
        inc.clear_due_ns = None
        del self.current[m]
        if inc.suppressed_by == "flood":
            self._flood_member_left(inc)
        self.stats.incidents_cleared += 1
        docs.append(self._doc(inc, Transition.CLEAR, now_ns))
        if self.s.reactivation is not ReactivationMode.OFF and self.s.reactivate_window_s > 0:
            self.recent[m] = (now_ns, inc)
            self._recent_order.append((now_ns, m))
        if inc.announced and not inc.acked:
            self.retained[inc.id] = inc
            self._trim_retained()
        else:
            self._retire(inc)

    def _retire(self, inc: Incident) -> None:
        self.retained.pop(inc.id, None)
        self._ids.discard(inc.id)

    def _trim_retained(self) -> None:
        while len(self.retained) > self.s.max_retained:
            oldest = next(iter(self.retained))
            self._retire(self.retained[oldest])

    def _of_machine(self, m: int) -> list[Incident]:
        mid = self.facts.machine_ids[m]
        out = [inc for inc in self.retained.values() if inc.machine == mid]
        if (cur := self.current.get(m)) is not None:
            out.insert(0, cur)
        return out

    def _set_all(self, m: int, now_ns: int, docs: list[dict[str, Any]], tr: Transition, actor: str | None,
                 reason: str | None, **values: Any) -> int:
        # Only incidents the command changes get a document (an unshelve leaves unshelved ones alone).
        targets = [inc for inc in self._of_machine(m) if any(getattr(inc, k) != v for k, v in values.items())]
        for inc in targets:
            for k, v in values.items():
                setattr(inc, k, v)
            was = inc.announced
            if inc.annunciated and not was:
                inc.announced = True
            docs.append(self._doc(inc, tr, now_ns, actor=actor, reason=reason))
        return len(targets)

    def _unshelve(self, m: int, now_ns: int, docs: list[dict[str, Any]], *, actor: str | None,
                  reason: str | None) -> int:
        self.shelved_until.pop(m, None)
        self.chattering.discard(m)
        act = self._activations.get(m)
        if act is not None:
            act.clear()
        return self._set_all(m, now_ns, docs, Transition.UNSHELVE, actor, reason, shelved_until_ns=None,
                             chattering=False)

    def _state_reason(self, m: int, inc: Incident) -> str | None:
        if self.s.suppression is SuppressionMode.OFF or any(k in self._never for k in inc.kinds):
            return None
        if m in self.maintenance:
            return "maintenance"
        if self.state[m] == STATE_OFF:
            # An at-rest alarm is about the off state itself (a stopped machine whose current flows): the state
            # does not explain it (contracts: AT_REST is never suppressed by ``off``; maintenance still is).
            return None if AT_REST_KIND in inc.kinds else "off"
        if self.state[m] == STATE_IDLE:  # powered, not producing: judged like off by the detectors (opstate),
            return None if AT_REST_KIND in inc.kinds else "idle"  # at rest included (edge.kernels.atrest)
        if m in self._settling:
            return "startup"
        return None

    def _refresh_suppression(self, m: int, inc: Incident, now_ns: int, docs: list[dict[str, Any]], *,
                             actor: str | None = None, reason: str | None = None, flood_over: bool = False) -> None:
        new = self._state_reason(m, inc)
        if new is None and inc.suppressed_by == "flood" and not flood_over and not self._flood_exempt(inc):
            new = "flood"
        if new == inc.suppressed_by:
            return
        if inc.suppressed_by == "flood" and new != "flood":
            self._flood_member_left(inc)
        inc.suppressed_by = new
        if new is not None:
            docs.append(self._doc(inc, Transition.SUPPRESS, now_ns, actor=actor, reason=reason))
            return
        if inc.annunciated and not inc.announced:
            inc.announced = True
            self.stats.incidents_annunciated += 1
        docs.append(self._doc(inc, Transition.UNSUPPRESS, now_ns, actor=actor, reason=reason))

    # -- checkpoint --------------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """What the state is about: the machines, in order (areas and settings may change warm)."""
        h = hashlib.blake2b(digest_size=12)
        h.update("\x1f".join(self.facts.machine_ids).encode())
        return h.hexdigest()

    def to_json(self) -> dict[str, Any]:
        ids = self.facts.machine_ids
        return {
            "version": STATE_VERSION,
            "fingerprint": self.fingerprint(),
            "current": [inc.to_json() for inc in self.current.values()],
            "retained": [inc.to_json() for inc in self.retained.values()],
            "shelved_until": {ids[m]: v for m, v in self.shelved_until.items()},
            "out_of_service": {ids[m]: v for m, v in self.out_of_service.items()},
            "maintenance": {ids[m]: v for m, v in self.maintenance.items()},
            "chattering": [ids[m] for m in sorted(self.chattering)],
            "activations": {ids[m]: list(a) for m, a in self._activations.items() if a},
            "recent": [[ids[m], t, inc.id if inc.id in self.retained else inc.to_json()]
                       for m, (t, inc) in self.recent.items()],
            "state": self.state.tolist(),
            "started_ns": self.started_ns.tolist(),
            "settling": [ids[m] for m in sorted(self._settling)],
            "floods": {a: {"window": list(fl.window), "reported": fl.reported_count,
                           "incident": fl.incident.to_json() if fl.incident is not None else None}
                       for a, fl in self.floods.items() if fl.window or fl.incident is not None},
        }

    def restore(self, d: dict[str, Any]) -> None:
        """Continue from a checkpoint (``to_json``); raises ValueError for another layout or plant."""
        if d.get("version") != STATE_VERSION:
            raise ValueError(f"incident state layout {d.get('version')} is not {STATE_VERSION}")
        if d.get("fingerprint") != self.fingerprint():
            raise ValueError("incident state was saved for another set of machines")
        idx = self._machine_index
        n_m = len(self.facts.machine_ids)
        for row in d["current"]:
            inc = Incident.from_json(row)
            if inc.machine in idx:
                inc.area = self.facts.area[idx[inc.machine]]
                self.current[idx[inc.machine]] = inc
        for row in d["retained"]:
            inc = Incident.from_json(row)
            self.retained[inc.id] = inc
        self.shelved_until = {idx[k]: int(v) for k, v in d["shelved_until"].items() if k in idx}
        self.out_of_service = {idx[k]: str(v) for k, v in d["out_of_service"].items() if k in idx}
        self.maintenance = {idx[k]: str(v) for k, v in d["maintenance"].items() if k in idx}
        self.chattering = {idx[k] for k in d["chattering"] if k in idx}
        self._activations = {idx[k]: deque(int(x) for x in v) for k, v in d["activations"].items() if k in idx}
        if len(d["state"]) == n_m:
            self.state[:] = d["state"]
            self.started_ns[:] = d["started_ns"]
        self._settling = {idx[k] for k in d["settling"] if k in idx}
        for a, fd in d["floods"].items():
            fl = self.floods.setdefault(a, _Flood(deque()))
            fl.window = deque(int(x) for x in fd["window"])
            fl.reported_count = int(fd["reported"])
            fl.incident = Incident.from_json(fd["incident"]) if fd["incident"] is not None else None
        self._ids = {inc.id for inc in self.incidents()}
        for inc in self.incidents():
            inc.seq += SEQ_RESTART_GAP
        # "recent" (re-activation) came with layout 1 unchanged: a checkpoint without it restores without it.
        for mid, t_clear, row in sorted(d.get("recent", []), key=lambda x: x[1]):
            if mid not in idx:
                continue
            if isinstance(row, str):  # held in retained (seq already jumped)
                if row not in self.retained:
                    continue
                inc = self.retained[row]
            else:
                inc = Incident.from_json(row)
                inc.seq += SEQ_RESTART_GAP
            self.recent[idx[mid]] = (int(t_clear), inc)
            self._recent_order.append((int(t_clear), idx[mid]))

    def restate(self, now_ns: int) -> list[dict[str, Any]]:
        """After a restore: one ``update`` per incident held, so the cloud holds the edge's state whatever reached it
        after the checkpoint (the jump in ``seq`` makes these win over anything sent before the kill)."""
        return [self._doc(inc, Transition.UPDATE, now_ns) for inc in self.incidents()]

    def recover(self, open_alarms: np.ndarray, now_ns: int) -> list[dict[str, Any]]:
        """Alarms the detectors hold open (``EdgeAnalytics.open_alarms``: OPEN rows) that no incident holds are
        opened now, as if their OPEN had just arrived (the incident starts when the alarm opened).

        How an OPEN is lost: the detectors keep at most ``analytics.max_events`` events per frame and drop the
        rest (hundreds of alarms opening at once: a PLC's return, a plant-wide upset); a step of the alarm layer
        failed; or the edge was killed after the detectors' checkpoint recorded the alarm and before the alarm
        layer's did (the detectors then never send that OPEN again). The edge calls this with ``resync`` every
        10 s and once after a restart. A recovered incident's seq starts at ``SEQ_RESTART_GAP``: the cloud may
        hold an earlier life of it (the same id) from before a kill. One set look-up per open alarm."""
        if open_alarms.shape[0] == 0:
            return []
        held: set[tuple[int, str]] = set()
        for m, inc in self.current.items():
            held.update((m, c.key) for c in inc.contributors.values() if c.active)
        missing = np.zeros(open_alarms.shape[0], dtype=bool)
        ent, scope, kind = open_alarms["entity"], open_alarms["scope"], open_alarms["kind"]
        for i in range(open_alarms.shape[0]):
            e, sc = int(ent[i]), int(scope[i])
            if sc == Scope.DEVICE:
                missing[i] = any((m, f"d{e}") not in held for m in self._device_machines[e])
            elif sc == Scope.SIGNAL:
                m = int(self._signal_machine[e])
                missing[i] = m >= 0 and (m, f"s{e}") not in held
            else:
                missing[i] = (e, f"{'h' if kind[i] == Kind.HEALTH else 'm'}{e}") not in held
        if not missing.any():
            return []
        self.stats.resynced_opens += int(missing.sum())
        self._first_seq = SEQ_RESTART_GAP
        try:
            return self.on_events(open_alarms[missing], now_ns)
        finally:
            self._first_seq = 0

    def reconcile(self, is_open: Any, now_ns: int) -> list[dict[str, Any]]:
        """After a restore: contributors whose detector alarm is no longer open (the detectors restarted cold,
        or from an older checkpoint) are closed now, so no incident waits for a CLOSE that will never come.
        The incident then clears after ``restart_grace_s`` (not the shorter clear delay): a fault that is still
        there re-opens its alarm within it and continues the incident instead of raising a new one.
        ``is_open(key) -> bool`` reads the detectors' alarm state (keys as in ``Contributor.key``)."""
        docs: list[dict[str, Any]] = []
        grace = max(self.s.clear_delay_s, self.s.restart_grace_s)
        for m, inc in list(self.current.items()):
            stale = [c for c in inc.contributors.values() if c.active and not is_open(c.key)]
            for c in stale:
                self._close(m, c.key, c.kind, c.peak, now_ns, now_ns, docs, delay_s=grace)
        return docs

    def resync(self, is_open: Any, now_ns: int) -> list[dict[str, Any]]:
        """While running: close contributors whose detector alarm is no longer open although no CLOSE arrived.

        A CLOSE can be lost before it reaches the engine: the detectors keep at most ``analytics.max_events``
        events per frame and drop the rest (a frame where hundreds of alarms close at once, e.g. a PLC coming
        back), or a step of the alarm layer failed. Without this, such an incident would stay active, on the
        edge and in the cloud, for ever. The edge calls it every 10 s (``service.RESYNC_INTERVAL_NS``; one look-up
        per active contributor). The contributor closes now and the incident clears after the usual ``clear_delay_s``.
        An OPEN lost the same way is recovered by :meth:`recover`, which the edge calls right after this."""
        docs: list[dict[str, Any]] = []
        for m, inc in list(self.current.items()):
            stale = [c for c in inc.contributors.values() if c.active and not is_open(c.key)]
            for c in stale:
                self.stats.resynced_closes += 1
                self._close(m, c.key, c.kind, c.peak, now_ns, now_ns, docs)
        return docs


def _member_rank(inc: Incident) -> float:
    """Orders a flood's members in its ``signals``: priority first, then the member's peak score (0..1)."""
    return round(float(inc.priority) + min(max(inc.peak, 0.0), 0.999), 4)


class _Refused(Exception):
    pass
