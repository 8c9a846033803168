"""Side work that must never stop acquisition: checkpoints, stats and port files, anything on disk.

A full state disk (ENOSPC), a read-only remount or a permissions slip makes such a write fail. The
daemon's job is reading and forwarding samples; a checkpoint that cannot be saved costs a warm restart
at worst. So :meth:`SideWork.run` calls the work, and an ``OSError`` is counted per kind
(``side_errors_total{work=...}``), logged at most once per ``log_interval_s`` per kind (a full disk
lasts hours: one line a minute, with how many failed since the last line), and the caller retries at
its next occasion. ``failing()`` names the kinds whose last attempt failed, for the health topic.
Anything other than OSError is a bug and propagates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

__all__ = ["SideWork"]

log = logging.getLogger("plantwire.edge")

T = TypeVar("T")


@dataclass(slots=True)
class _Kind:
    errors: int = 0
    since_log: int = 0
    last_log_s: float = -1e18
    failing: bool = False
    last_error: str = ""


@dataclass
class SideWork:
    """Counts and rate-limits the failures of side work, per kind ("checkpoint", "stats", ...)."""

    log_interval_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    kinds: dict[str, _Kind] = field(default_factory=dict)

    def run(self, kind: str, fn: Callable[[], T]) -> T | None:
        """``fn()``; on OSError count it, log (rate-limited) and return None so the caller carries on."""
        k = self.kinds.setdefault(kind, _Kind())
        try:
            out = fn()
        except OSError as exc:
            k.errors += 1
            k.since_log += 1
            k.failing = True
            k.last_error = str(exc)
            now = self.clock()
            if now - k.last_log_s >= self.log_interval_s:
                log.error(
                    "%s failed (%d times since the last report; acquisition carries on, retried later): %s",
                    kind, k.since_log, exc,
                )
                k.last_log_s = now
                k.since_log = 0
            return None
        if k.failing:
            log.warning("%s works again after %d failures", kind, k.errors)
            k.failing = False
        return out

    def errors(self) -> dict[str, int]:
        return {name: k.errors for name, k in self.kinds.items()}

    def failing(self) -> list[str]:
        return sorted(name for name, k in self.kinds.items() if k.failing)

    def is_failing(self, kind: str) -> bool:
        """Whether ``kind``'s last attempt failed (a caller retries sooner while it does)."""
        k = self.kinds.get(kind)
        return k is not None and k.failing
