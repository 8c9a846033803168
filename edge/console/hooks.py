"""Where the console meets parts other rooms own: the alarm layer, the model store, the agents.

The console shows and acts through these small interfaces only, so each room plugs in without the
console knowing its insides:

- :class:`AlarmBoard` -- open alarms as incident documents (``contracts.md``: ``id``, ``start_ns``,
  ``machine``, ``priority``, ``active``, ``acked``, ``shelved_until_ns``, ``kinds``, ``signals``, ``peak``,
  ...) and :meth:`AlarmBoard.act` for ``ack`` / ``shelve`` / ``unshelve``. Until ``edge/alarms/``'s
  incidents are connected (``ConsoleHooks.alarms``), :class:`DetectorAlarmBoard` serves the detector's
  own alarm episodes in the same shape, with acknowledge and shelve kept in the console.
- ``ConsoleHooks.models`` -- ``{"<kind>/<template>": {"active", "shadow", "previous"}}`` as the health
  document's ``models`` key (``edge/modelstore/``).
- ``ConsoleHooks.agents`` -- one dict per agent (``name``, ``state``, anything else worth a column)
  (``edge/agents/``).

Every hook is called on the daemon's event loop (the console hands the call over and waits, bounded),
so a hook needs no locks of its own.
"""

from __future__ import annotations

import enum
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["ActionResult", "AlarmBoard", "ConsoleHooks", "DetectorAlarmBoard", "IncidentBoard", "Outcome",
           "agents_hook", "models_hook"]

#: Alarm actions the console offers (ISA-18.2 words).
ALARM_ACTIONS = ("ack", "shelve", "unshelve")
#: Closed episodes kept for the alarms page.
RECENT_CLOSED = 50
#: Open episodes kept at most (a flood beyond it is counted, not kept).
MAX_OPEN = 2000


class Outcome(enum.StrEnum):
    """An action's outcome, as in the command-result and audit documents."""

    APPLIED = "applied"
    REFUSED = "refused"
    DRY_RUN = "dry_run"
    FAILED = "failed"


@dataclass(frozen=True)
class ActionResult:
    outcome: Outcome
    detail: str = ""
    audited: bool = False  # the board wrote the audit document itself (the console then does not)


class AlarmBoard(Protocol):
    def open_alarms(self) -> list[dict[str, Any]]:
        """Open (or standing) alarms, most urgent first, as incident documents."""
        ...

    def recent_closed(self) -> list[dict[str, Any]]:
        """Recently cleared alarms, newest first (may be empty)."""
        ...

    def act(self, action: str, target: str, actor: str, reason: str, shelve_s: float | None,
            request_id: str) -> ActionResult:
        """Apply ``action`` (ack | shelve | unshelve) to alarm ``target``; never raises for a bad request."""
        ...


@dataclass
class ConsoleHooks:
    """What other rooms plug in (the lead connects them at merge); None: the console says "not on this
    gateway" for that part."""

    alarms: AlarmBoard | None = None
    models: Callable[[], dict[str, dict[str, Any]]] | None = None
    agents: Callable[[], list[dict[str, Any]]] | None = None


@dataclass
class _Episode:
    doc: dict[str, Any]
    key: tuple[str, str]
    extra: dict[str, Any] = field(default_factory=dict)


class DetectorAlarmBoard:
    """The detector's alarm episodes (the ``alarm`` documents of the events lane) as incidents.

    Fed with the documents the daemon publishes (:meth:`feed`); an ``open`` adds an episode, a
    ``closed`` moves it to the recent list. Acknowledge and shelve are kept here (they do not change
    what the detector publishes); the incident layer replaces this board when it is connected.
    """

    def __init__(self, gateway_id: str) -> None:
        self.gateway_id = gateway_id
        self._open: dict[tuple[str, str], _Episode] = {}
        self._closed: deque[dict[str, Any]] = deque(maxlen=RECENT_CLOSED)
        self._seq = 0
        self.overflow = 0

    def feed(self, docs: list[dict[str, Any]]) -> None:
        for d in docs:
            if d.get("type") != "alarm":
                continue
            key = (str(d.get("signal") or d.get("machine")), str(d.get("kind")))
            if d.get("state") == "open":
                if key not in self._open and len(self._open) >= MAX_OPEN:
                    self.overflow += 1
                    continue
                self._seq += 1
                signals = d.get("contributors") or ([d["signal"]] if d.get("signal") else [])
                self._open[key] = _Episode({
                    "id": f"{self.gateway_id}-det-{d.get('start_ns', 0)}-{self._seq}",
                    "source": "detector", "start_ns": d.get("start_ns"), "end_ns": None,
                    "machine": d.get("machine"), "priority": "high" if d.get("kind") == "machine" else "low",
                    "active": True, "acked": False, "shelved_until_ns": None,
                    "kinds": [d.get("kind")], "signals": signals[:10], "peak": d.get("peak"),
                }, key)
            else:
                ep = self._open.pop(key, None)
                if ep is not None:
                    ep.doc.update(active=False, end_ns=d.get("end_ns"))
                    self._closed.appendleft(ep.doc)

    def open_alarms(self) -> list[dict[str, Any]]:
        now = time.time_ns()
        out = []
        for ep in self._open.values():
            doc = dict(ep.doc)
            if doc["shelved_until_ns"] is not None and doc["shelved_until_ns"] <= now:
                ep.doc["shelved_until_ns"] = doc["shelved_until_ns"] = None
            out.append(doc)
        rank = {"critical": 0, "high": 1, "low": 2}
        out.sort(key=lambda d: (d["acked"], rank.get(d["priority"], 3), -(d["start_ns"] or 0)))
        return out

    def recent_closed(self) -> list[dict[str, Any]]:
        return list(self._closed)

    def act(self, action: str, target: str, actor: str, reason: str, shelve_s: float | None,
            request_id: str = "") -> ActionResult:
        ep = next((e for e in self._open.values() if e.doc["id"] == target), None)
        if ep is None:
            return ActionResult(Outcome.REFUSED, f"no open alarm {target!r}")
        doc = ep.doc
        if action == "ack":
            if doc["acked"]:
                return ActionResult(Outcome.REFUSED, "already acknowledged")
            doc["acked"] = True
            return ActionResult(Outcome.APPLIED, "acknowledged")
        if action == "shelve":
            if shelve_s is None or not 0 < shelve_s <= 24 * 3600:
                return ActionResult(Outcome.REFUSED, "shelve needs a duration of 1 s to 24 h")
            doc["shelved_until_ns"] = time.time_ns() + int(shelve_s * 1e9)
            return ActionResult(Outcome.APPLIED, f"shelved for {shelve_s:g} s")
        if action == "unshelve":
            if doc["shelved_until_ns"] is None:
                return ActionResult(Outcome.REFUSED, "not shelved")
            doc["shelved_until_ns"] = None
            return ActionResult(Outcome.APPLIED, "unshelved")
        return ActionResult(Outcome.REFUSED, f"unknown action {action!r}")


class IncidentService(Protocol):
    """What :class:`IncidentBoard` needs of the alarm layer (``edge/alarms/service.py: AlarmService``)."""

    def snapshot(self) -> list[dict[str, Any]]: ...

    def command(self, payload: bytes, source: str = "mqtt") -> dict[str, Any]: ...


class IncidentBoard:
    """The alarm layer's incidents on the console: its ``snapshot()`` is the list, and an action is one of
    its commands (the payload of ``plantwire/cmd/v1/.../alarms``, contracts.md) with ``source`` console,
    so validation, the command result and the audit document are the alarm layer's own, exactly as for a
    command from the cloud. Connect with ``gateway.console_hooks.alarms = IncidentBoard(gateway.alarms)``.
    """

    def __init__(self, service: IncidentService) -> None:
        self.service = service

    def open_alarms(self) -> list[dict[str, Any]]:
        rank = {"critical": 0, "high": 1, "low": 2}
        docs = [d for d in self.service.snapshot() if d.get("active") or not d.get("acked")]
        docs.sort(key=lambda d: (bool(d.get("acked")), rank.get(str(d.get("priority")), 3)))
        return docs

    def recent_closed(self) -> list[dict[str, Any]]:
        return [d for d in self.service.snapshot() if not d.get("active") and d.get("acked")][:RECENT_CLOSED]

    def act(self, action: str, target: str, actor: str, reason: str, shelve_s: float | None,
            request_id: str) -> ActionResult:
        cmd: dict[str, Any] = {"id": request_id, "actor": actor, "ts_ns": time.time_ns(), "action": action,
                               "incident": target, "reason": reason}
        if action == "shelve" and shelve_s is not None:
            cmd["duration_s"] = shelve_s
        res = self.service.command(json.dumps(cmd).encode(), "console")
        try:
            outcome = Outcome(res.get("outcome"))
        except ValueError:
            outcome = Outcome.FAILED
        return ActionResult(outcome, str(res.get("detail", "")), audited=True)


def models_hook(health_doc: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, dict[str, Any]]]:
    """The ``models`` slot from a model store's health keys (``edge/modelstore``: ``ModelManager.health_doc``,
    whose ``"models"`` is ``{"<kind>/<template>": {"active", "shadow", "previous"}}``, contracts.md).
    Connect with ``gateway.console_hooks.models = models_hook(gateway.models.health_doc)``."""

    def models() -> dict[str, dict[str, Any]]:
        return dict(health_doc().get("models") or {})

    return models


def agents_hook(summary: Callable[[], dict[str, dict[str, Any]]]) -> Callable[[], list[dict[str, Any]]]:
    """The ``agents`` slot from an agent runner's summary (``edge/agents``: ``AgentRunner.summary``,
    ``{name: {"enabled", "reason", "samples_in", "samples_out", ...}}``).
    Connect with ``gateway.console_hooks.agents = agents_hook(gateway.agents.summary)``."""

    def agents() -> list[dict[str, Any]]:
        out = []
        for name, d in sorted(summary().items()):
            enabled = bool(d.get("enabled", True))
            detail = (f"{d.get('samples_in', 0):,} samples in, {d.get('samples_out', 0):,} out" if enabled
                      else str(d.get("reason") or "disabled"))
            out.append({"name": name, "state": "running" if enabled else "disabled", "detail": detail})
        return out

    return agents
