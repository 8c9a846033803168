"""Requests to write to the plant, from agents and operators: decided, carried out, answered, audited.

One :class:`ActionService` per gateway. Requests arrive from an agent (``submit``, or ``await
request``) or from an operator over MQTT (``plantwire/cmd/v1/{site}/{gateway}/actions``, JSON as in
the contract: ``id``, ``actor``, ``ts_ns``, ``action`` = ``write``, ``target``, ``value``,
``reason``). They are handled one at a time, in arrival order, by the ``actions`` task: the
policy decides (:mod:`edge.actions.policy`), a write goes through the device's own source
connection (:mod:`edge.actions.writers`), bounded by the source's timeout, so polling carries on
and a dead device costs one refusal, not a stall.

Every request, whatever its fate, produces exactly one result: an answer on
``plantwire/v1/{site}/{gateway}/cmdresult`` when it came with an id (operators wait for it), an
``audit`` document on the events lane (write-ahead logged and acknowledged end to end like
alarms, so the cloud's InfluxDB holds every request), a log line, and a count in
``action_requests_total{outcome,reason}``. A malformed command is answered and audited as
refused ``invalid`` when it has an id, else only counted and logged; the queue is bounded and a
request beyond it is refused ``busy`` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from edge.sources.writes import DeviceDown, WriteFailed

from .policy import Decision, Outcome, Policy, Reason
from .settings import ActionsSettings, ActionTarget

__all__ = ["ActionRequest", "ActionResult", "ActionService", "RequestSource", "parse_command", "requests_from_events"]

log = logging.getLogger("plantwire.edge.actions")

WriteFn = Callable[[ActionTarget, float], Awaitable[None]]


class RequestSource(enum.StrEnum):
    MQTT = "mqtt"
    AGENT = "agent"
    CLI = "cli"
    CONSOLE = "console"


@dataclass(frozen=True, slots=True)
class ActionRequest:
    target: str
    value: float
    actor: str
    source: RequestSource
    reason: str = ""
    id: str | None = None
    ts_ns: int = 0
    action: str = "write"


@dataclass(frozen=True, slots=True)
class ActionResult:
    request: ActionRequest
    outcome: Outcome
    reason: Reason | None
    detail: str


def parse_command(payload: bytes) -> ActionRequest | tuple[str | None, str]:
    """An operator's command, or (its id if any, what is wrong with it)."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"not JSON ({exc})"
    if not isinstance(doc, dict):
        return None, "not a JSON object"
    rid = doc.get("id")
    if not isinstance(rid, str) or not rid:
        return None, "no id (a non-empty string)"
    if doc.get("action") != "write":
        return rid, f"action {doc.get('action')!r} is not supported (write)"
    target, value = doc.get("target"), doc.get("value")
    if not isinstance(target, str) or not target:
        return rid, "no target (a target name from actions.targets)"
    if isinstance(value, bool):
        value = float(value)
    if not isinstance(value, (int, float)):
        return rid, f"value {value!r} is not a number"
    actor, reason, ts_ns = doc.get("actor", ""), doc.get("reason", ""), doc.get("ts_ns", 0)
    return ActionRequest(target=target, value=float(value), actor=actor if isinstance(actor, str) else str(actor),
                         source=RequestSource.MQTT, reason=reason if isinstance(reason, str) else str(reason), id=rid,
                         ts_ns=ts_ns if isinstance(ts_ns, int) else 0)


def requests_from_events(docs: list[dict[str, Any]]) -> list[ActionRequest]:
    """Write requests agents attached to their events-lane documents (``"action": {"target", "value"}``).

    How an agent asks for an action through the agent seam without a handle on this service: the
    gateway hands what these documents carry to :meth:`ActionService.submit` as requests of source
    ``agent`` (actor ``agent:<name>``, reason the document's ``detail``); the allow-list decides as for
    any request. A malformed ``action`` is skipped (the document itself is still published).
    """
    out = []
    for doc in docs:
        act = doc.get("action")
        if not isinstance(act, dict):
            continue
        target, value = act.get("target"), act.get("value")
        if not isinstance(target, str) or isinstance(value, bool) or not isinstance(value, (int, float)):
            log.warning("actions: agent %s attached a malformed action %r; skipped", doc.get("agent"), act)
            continue
        out.append(ActionRequest(target=target, value=float(value), actor=f"agent:{doc.get('agent', '?')}",
                                 source=RequestSource.AGENT, reason=str(doc.get("detail", ""))[:500]))
    return out


class ActionService:
    """Decides and carries out write requests; see the module docstring."""

    def __init__(self, settings: ActionsSettings, *, write: WriteFn, audit: Callable[[dict[str, Any]], None],
                 answer: Callable[[dict[str, Any]], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.policy = Policy(settings)
        self._write = write
        self._audit = audit
        self._answer = answer
        self._clock = clock
        self._queue: asyncio.Queue[ActionRequest] = asyncio.Queue(maxsize=settings.queue)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()
        self.counts: dict[tuple[str, str], int] = {}
        self.invalid_commands = 0  # malformed commands without an id (not answerable)
        self.results: list[ActionResult] = []  # the latest results (bounded), for tests and the console
        self._keep = 100

    # -- entry points ---------------------------------------------------------------------------
    async def request(self, req: ActionRequest) -> ActionResult:
        """Decide and carry out one request now (serialised with the queue's)."""
        async with self._lock:
            return await self._handle(req)

    def submit(self, req: ActionRequest) -> bool:
        """Queue a request from an agent (never blocks); False when the queue is full (refused busy)."""
        try:
            self._queue.put_nowait(req)
        except asyncio.QueueFull:
            self._finish(req, Decision(Outcome.REFUSED, Reason.BUSY,
                                       f"busy: {self.settings.queue} requests are already waiting"))
            return False
        return True

    def on_command(self, topic: str, payload: bytes) -> None:
        """MQTT handler (paho's thread): hand the payload to the event loop."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._command, payload)

    async def run(self) -> None:
        """Handle queued requests until cancelled (the gateway's ``actions`` task)."""
        self._loop = asyncio.get_running_loop()
        try:
            while True:
                req = await self._queue.get()
                async with self._lock:
                    await self._handle(req)
        finally:
            self._loop = None

    # -- internals ------------------------------------------------------------------------------
    def _command(self, payload: bytes) -> None:
        parsed = parse_command(payload)
        if isinstance(parsed, ActionRequest):
            self.submit(parsed)
            return
        rid, problem = parsed
        if rid is None:
            self.invalid_commands += 1
            log.warning("actions: command ignored, %s", problem)
            return
        req = ActionRequest(target="", value=float("nan"), actor="", source=RequestSource.MQTT, id=rid)
        self._finish(req, Decision(Outcome.REFUSED, Reason.INVALID, f"invalid: {problem}"))

    async def _handle(self, req: ActionRequest) -> ActionResult:
        decision = self.policy.decide(req.target, req.value, self._clock())
        if decision.outcome is not None:
            return self._finish(req, decision)
        assert decision.target is not None
        try:
            await self._write(decision.target, req.value)
        except DeviceDown as exc:
            return self._finish(req, Decision(Outcome.REFUSED, Reason.DEVICE_DOWN, f"device_down: {exc}"))
        except WriteFailed as exc:
            return self._finish(req, Decision(Outcome.FAILED, Reason.WRITE_ERROR, f"write_error: {exc}"))
        except Exception as exc:  # a bug in a writer must not end the actions task
            log.exception("actions: writing %s failed unexpectedly", req.target)
            return self._finish(req, Decision(Outcome.FAILED, Reason.WRITE_ERROR, f"write_error: {exc!r}"))
        return self._finish(req, Decision(Outcome.APPLIED, None, f"applied: wrote {req.value:g} to "
                                          f"{decision.target.where}"))

    def _finish(self, req: ActionRequest, d: Decision) -> ActionResult:
        assert d.outcome is not None
        result = ActionResult(req, d.outcome, d.reason, d.detail)
        key = (d.outcome.value, d.reason.value if d.reason else "")
        self.counts[key] = self.counts.get(key, 0) + 1
        self.results.append(result)
        del self.results[: -self._keep]
        level = logging.INFO if d.outcome in (Outcome.APPLIED, Outcome.DRY_RUN) else logging.WARNING
        log.log(level, "actions: %s %s=%s by %s (%s, request %s): %s", d.outcome.value, req.target or "?",
                req.value, req.actor or "?", req.source.value, req.id, d.detail)
        now_ns = time.time_ns()
        doc = {"type": "audit", "ts_ns": now_ns, "request_id": req.id, "actor": req.actor,
               "source": req.source.value, "service": "actions", "action": req.action, "target": req.target,
               "reason": req.reason, "outcome": d.outcome.value, "detail": d.detail}
        with _logged("audit"):
            self._audit(doc)
        if req.id is not None and self._answer is not None:
            with _logged("cmdresult"):
                self._answer({"id": req.id, "service": "actions", "action": req.action, "outcome": d.outcome.value,
                              "detail": d.detail})
        return result

    def export_metrics(self, m: Any) -> None:
        fam = m.counter("action_requests_total", "Write requests by outcome and refusal reason (edge.actions)")
        for (outcome, reason), n in self.counts.items():
            fam.set(n, outcome=outcome, reason=reason)
        m.counter("action_commands_invalid_total", "Malformed action commands without an id (not answered)").set(
            self.invalid_commands)
        m.gauge("action_queue", "Write requests waiting").set(self._queue.qsize())


@contextlib.contextmanager
def _logged(what: str) -> Any:
    try:
        yield
    except Exception:
        log.exception("actions: emitting the %s failed", what)
