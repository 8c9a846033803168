"""The allow-list decision for a write request: pure, no I/O, no clock of its own.

Checks run in the order an operator reads a refusal: is the target listed, is it enabled, is the
value one it accepts, is it within its rate limit. What passes is either a dry run (the target's
mode, else the section's) or a write for the service to carry out. The rate limit counts every
request that passed the other checks, written or dry-run, in a sliding window of ``per_s``
seconds: a dry run then shows exactly what a live run would have done.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass

from .settings import ActionMode, ActionsSettings, ActionTarget

__all__ = ["Decision", "Outcome", "Policy", "Reason"]


class Outcome(enum.StrEnum):
    APPLIED = "applied"
    REFUSED = "refused"
    DRY_RUN = "dry_run"
    FAILED = "failed"


class Reason(enum.StrEnum):
    """Why a request was refused or failed; the first word of its ``detail``."""

    INVALID = "invalid"  # malformed request (no target, value not a number, unknown action)
    NOT_LISTED = "not_listed"
    DISABLED = "disabled"
    OUT_OF_RANGE = "out_of_range"
    RATE_LIMITED = "rate_limited"
    BUSY = "busy"  # the request queue is full
    DEVICE_DOWN = "device_down"
    WRITE_ERROR = "write_error"  # the device refused or did not answer (outcome failed)


@dataclass(frozen=True, slots=True)
class Decision:
    """``outcome`` None: write it (the service then reports applied or failed)."""

    outcome: Outcome | None
    reason: Reason | None
    detail: str
    target: ActionTarget | None = None


class Policy:
    """Decides requests against the configured targets; keeps each target's recent request times."""

    def __init__(self, settings: ActionsSettings) -> None:
        self.settings = settings
        self.targets = {t.name: t for t in settings.targets}
        self._recent: dict[str, deque[float]] = {t.name: deque(maxlen=t.rate_limit.writes) for t in settings.targets}

    def decide(self, target: str, value: float, now_s: float) -> Decision:
        t = self.targets.get(target)
        if t is None:
            return Decision(Outcome.REFUSED, Reason.NOT_LISTED, f"not_listed: no target {target!r} in actions.targets")
        if not t.enabled:
            return Decision(Outcome.REFUSED, Reason.DISABLED, f"disabled: target {target!r} is not enabled", t)
        if not math.isfinite(value):
            return Decision(Outcome.REFUSED, Reason.OUT_OF_RANGE, f"out_of_range: {value} is not a finite number", t)
        if t.allowed is not None and value not in t.allowed:
            return Decision(Outcome.REFUSED, Reason.OUT_OF_RANGE, f"out_of_range: {value:g} is not one of "
                            f"{[float(a) for a in t.allowed]}", t)
        if (t.min is not None and value < t.min) or (t.max is not None and value > t.max):
            return Decision(Outcome.REFUSED, Reason.OUT_OF_RANGE, f"out_of_range: {value:g} is outside "
                            f"{t.min:g}..{t.max:g}", t)
        recent = self._recent[t.name]
        rl = t.rate_limit
        if len(recent) == rl.writes and now_s - recent[0] < rl.per_s:
            wait_s = rl.per_s - (now_s - recent[0])
            return Decision(Outcome.REFUSED, Reason.RATE_LIMITED, f"rate_limited: at most {rl.writes} per "
                            f"{rl.per_s:g} s; next in {wait_s:.1f} s", t)
        recent.append(now_s)
        if (t.mode or self.settings.mode) is ActionMode.DRY_RUN:
            return Decision(Outcome.DRY_RUN, None, f"dry_run: would write {value:g} to {t.where}", t)
        return Decision(None, None, f"write {value:g} to {t.where}", t)
