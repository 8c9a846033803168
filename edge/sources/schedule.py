"""The polling schedule every source shares: ticks on wall-clock multiples of the period.

Why wall-clock multiples: all sources of a gateway (and of every gateway) then poll on the same
instants, so one frame holds one poll of each signal and the edge flushes just after the polls land
(``publish.flush_phase_ms``).
"""

from __future__ import annotations


def next_tick_ns(now_ns: int, period_ms: int) -> int:
    """The first wall-clock tick strictly after ``now_ns`` for a period of ``period_ms``."""
    period = period_ms * 1_000_000
    return (now_ns // period + 1) * period
