"""The polling schedule every source shares: ticks on wall-clock multiples of the period.

Why wall-clock multiples: all sources of a gateway (and of every gateway) then poll on the same
instants, so one frame holds one poll of each signal and the edge flushes just after the polls land
(``publish.flush_phase_ms``).
"""

from __future__ import annotations

import asyncio


def next_tick_ns(now_ns: int, period_ms: int) -> int:
    """The first wall-clock tick strictly after ``now_ns`` for a period of ``period_ms``."""
    period = period_ms * 1_000_000
    return (now_ns // period + 1) * period


def raise_if_cancelled() -> None:
    """Re-raise a cancellation that a library swallowed (its request is still pending on the task).

    Why: a source stops by being cancelled. If the CancelledError is lost on the way -- a client
    library that catches it, or one that turns it into a TimeoutError at the moment its own deadline
    expires -- a polling loop would poll on and the daemon's stop would hang. ``Task.cancelling()``
    still counts the request, so the loop checks it once per poll.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
