"""Counters every acquisition source keeps, read by the metrics endpoint and the health check.

One ``SourceStats`` per source instance (per Modbus device, per OPC-UA server), written only from
the event loop that runs the source. Plain ints and floats, no locks: a metrics thread reading a
value mid-update sees the old or the new one, which is all Prometheus needs. Counters only grow;
gauges (``connected``, ``last_*``) are overwritten.

The first block of fields is the contract every source keeps (``samples_good``, ``samples_bad``,
``errors``, ``connected``, ``reconnects``, ``last_sample_ns``); the rest are optional detail a
source fills when it has it and leaves at zero otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["SourceStats"]


@dataclass(slots=True)
class SourceStats:
    # Common to all sources.
    samples_good: int = 0  # samples delivered with quality GOOD (or UNCERTAIN)
    samples_bad: int = 0  # samples delivered with quality BAD (value NaN): nothing goes missing silently
    errors: int = 0  # failed operations of any kind (timeouts, exception responses, malformed, connect)
    connected: bool = False
    reconnects: int = 0  # successful connects after the first
    last_sample_ns: int = 0  # timestamp of the newest GOOD sample, 0 before the first
    # Polling sources (Modbus; OPC-UA polling groups).
    polls: int = 0  # ticks served, including those served BAD while the breaker was open
    missed_ticks: int = 0  # ticks skipped because a poll overran its period
    last_poll_ns: int = 0  # tick timestamp of the newest poll
    last_poll_duration_s: float = 0.0  # wall time the newest poll took
    # Error detail (each also counted in ``errors``).
    timeouts: int = 0
    exceptions: int = 0  # protocol exception responses (Modbus exception codes, bad OPC-UA status)
    malformed: int = 0  # responses of the wrong length or type
    connect_failures: int = 0
    # Circuit breaker.
    breaker_opens: int = 0
    breaker_open: bool = False
    polls_short_circuited: int = 0  # ticks served BAD without touching the network

    def as_dict(self) -> dict[str, float]:
        """Every field as a number (booleans as 0/1), for the metrics registry."""
        return {k: float(v) for k, v in asdict(self).items()}
