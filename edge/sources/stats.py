"""Counters every acquisition source keeps, read by the metrics endpoint and the health check.

One ``SourceStats`` per source instance (per Modbus device, per OPC-UA server), written only from
the event loop that runs the source. Plain ints and floats, no locks: a metrics thread reading a
value mid-update sees the old or the new one, which is all Prometheus needs. Counters only grow;
gauges (``connected``, ``last_*``, ``signals_bad``) are overwritten.

The first block of fields is the contract every source keeps (``samples_good``, ``samples_bad``,
``errors``, ``connected``, ``reconnects``, ``last_sample_ns``); the rest are optional detail a
source fills when it has it and leaves at zero otherwise.

**A failed sensor is a state, not an error per sample.** ``errors`` counts failed *operations*
(a read that timed out, a refused connect). A signal that the device reports as bad (an OPC-UA
BadSensorFailure notification, a Modbus register that decodes to NaN) is counted in
``samples_bad`` and ``bad_by_status`` per sample, and as a state in :class:`BadSignals`: a gauge
of how many signals are bad now and counters of transitions into and out of bad. Alerts belong on
those: ``increase(errors[10m]) > 0`` would fire for as long as one sensor stays broken.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields

import numpy as np

from plantwire.metrics import Registry
from plantwire.plant import Quality
from plantwire.status import MODBUS_EXCEPTION_NAMES, status_name

__all__ = ["POLL_DURATION_BUCKETS_S", "BadSignals", "DurationHistogram", "SourceStats", "degraded_reasons",
           "describe_signals", "export_source_metrics"]

#: Upper bounds (seconds) of the poll-duration histogram buckets; +Inf is implied.
POLL_DURATION_BUCKETS_S: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_BAD = int(Quality.BAD)


class DurationHistogram:
    """Cumulative-bucket histogram of durations, the Prometheus way (``le`` upper bounds)."""

    __slots__ = ("bounds_s", "count", "counts", "sum_s")

    def __init__(self, bounds_s: tuple[float, ...] = POLL_DURATION_BUCKETS_S) -> None:
        self.bounds_s = bounds_s
        self.counts = [0] * len(bounds_s)  # per bucket, not cumulative; +Inf is ``count``
        self.sum_s = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        for i, bound in enumerate(self.bounds_s):
            if seconds <= bound:
                self.counts[i] += 1
                break
        self.sum_s += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, cumulative count) pairs including ``+Inf``."""
        out: list[tuple[str, int]] = []
        total = 0
        for bound, c in zip(self.bounds_s, self.counts, strict=True):
            total += c
            out.append((repr(bound), total))
        out.append(("+Inf", self.count))
        return out


class BadSignals:
    """Which of a source's signals are BAD right now, and how often they went bad / recovered.

    ``update`` takes one delivery's rows and qualities (numpy, vectorised); a row delivered twice
    in one call takes its last quality's state, transitions are counted per call.
    """

    __slots__ = ("_bad", "count", "entered", "left")

    def __init__(self, n_rows: int) -> None:
        self._bad = np.zeros(n_rows, dtype=bool)
        self.entered = 0  # GOOD/UNCERTAIN -> BAD transitions
        self.left = 0  # BAD -> GOOD/UNCERTAIN transitions
        self.count = 0  # signals BAD now

    def update(self, rows: np.ndarray, quality: np.ndarray | int) -> np.ndarray | None:
        """Apply one delivery; positions in ``rows`` of the signals that went BAD with it (None if none)."""
        bad_now = self._bad
        if np.ndim(quality) == 0:
            now = np.full(len(rows), int(quality) == _BAD)  # type: ignore[arg-type]
        else:
            now = np.asarray(quality) == _BAD
        before = bad_now[rows]
        changed = before != now
        if not changed.any():
            return None
        bad_now[rows] = now
        went_bad = np.flatnonzero(now & changed)
        self.entered += len(went_bad)
        self.left += int(np.count_nonzero(changed)) - len(went_bad)
        self.count = int(np.count_nonzero(bad_now))
        return went_bad if len(went_bad) else None

    def is_bad(self, rows: np.ndarray) -> np.ndarray:
        return self._bad[rows]


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
    missed_ticks: int = 0  # ticks skipped because a poll overran its period by more than one period
    late_polls: int = 0  # ticks polled late (after the previous poll overran), stamped with their tick
    last_poll_ns: int = 0  # tick timestamp of the newest poll
    last_poll_duration_s: float = 0.0  # wall time the newest poll took
    last_good_poll_ns: int = 0  # tick of the newest poll in which every read succeeded
    failing_blocks: int = 0  # reads (Modbus blocks, OPC-UA read chunks) that failed in the newest poll
    # Error detail (each also counted in ``errors``).
    timeouts: int = 0  # requests that got no answer within timeout_s
    no_response: int = 0  # of those, while the connection was up and the device had never answered
    exceptions: int = 0  # protocol exception responses (Modbus exception codes; failed OPC-UA service calls)
    malformed: int = 0  # responses of the wrong length or type
    connect_failures: int = 0
    # Circuit breaker.
    breaker_opens: int = 0
    breaker_open: bool = False
    polls_short_circuited: int = 0  # ticks served BAD without touching the network
    started_ns: int = field(default_factory=time.time_ns)  # when the source was created (age before a good poll)
    # Labelled detail (not in ``as_dict``): exported as label sets.
    exceptions_by_code: dict[int, int] = field(default_factory=dict)  # Modbus exception code -> responses
    bad_by_status: dict[int, int] = field(default_factory=dict)  # OPC-UA StatusCode -> BAD samples
    poll_duration: DurationHistogram = field(default_factory=DurationHistogram)
    bad_signals: BadSignals = field(default_factory=lambda: BadSignals(0))

    def as_dict(self) -> dict[str, float]:
        """Every scalar field as a number (booleans as 0/1), for the metrics registry."""
        return {f.name: float(getattr(self, f.name)) for f in fields(self)
                if isinstance(getattr(self, f.name), int | float)}

    def count_bad_status(self, codes: np.ndarray) -> None:
        """Add BAD samples by StatusCode (``codes``: uint32 of the BAD samples only)."""
        if codes.size == 0:
            return
        values, counts = np.unique(codes, return_counts=True)
        by = self.bad_by_status
        for code, c in zip(values.tolist(), counts.tolist(), strict=True):
            by[code] = by.get(code, 0) + c


#: SourceStats counter field -> (metric name, help). Each is exported per source.
_COUNTERS: dict[str, tuple[str, str]] = {
    "polls": ("source_polls_total", "Poll ticks served per source (polling sources), including ticks served BAD"),
    "missed_ticks": ("source_missed_ticks_total", "Poll ticks skipped because a poll overran its period by more "
                     "than one period"),
    "late_polls": ("source_late_polls_total", "Poll ticks polled late, at once after a poll that overran (stamped "
                   "with their tick time)"),
    "polls_short_circuited": ("source_skipped_polls_total",
                              "Poll ticks served BAD without touching the network (circuit breaker open)"),
    "timeouts": ("source_timeouts_total", "Requests that got no answer within timeout_s"),
    "no_response": ("source_no_response_total",
                    "Timeouts of a device that never answered on an open connection (wrong unit id?)"),
    "malformed": ("source_malformed_total", "Responses of the wrong length or type"),
    "connect_failures": ("source_connect_failures_total", "Failed connection attempts"),
    "reconnects": ("source_reconnects_total", "Successful connects after the first"),
    "breaker_opens": ("source_breaker_opens_total", "Times the circuit breaker opened"),
}
#: SourceStats gauge field -> (metric name, help).
_GAUGES: dict[str, tuple[str, str]] = {
    "breaker_open": ("source_breaker_open", "1 while the circuit breaker serves BAD samples without polling"),
    "failing_blocks": ("source_failing_reads", "Reads (Modbus blocks, OPC-UA read chunks) failing in the last poll"),
}


def export_source_metrics(m: Registry, source: str, st: SourceStats, now_ns: int) -> None:
    """Publish one source's fault counters, states and poll-duration histogram under ``source=``."""
    for attr, (name, help_) in _COUNTERS.items():
        m.counter(name, help_).set(float(getattr(st, attr)), source=source)
    for attr, (name, help_) in _GAUGES.items():
        m.gauge(name, help_).set(float(getattr(st, attr)), source=source)
    exc = m.counter("source_exception_responses_total", "Protocol exception responses per source and code "
                    "(Modbus: 02 ILLEGAL DATA ADDRESS = check the register map)")
    for code, n in list(st.exceptions_by_code.items()):
        exc.set(float(n), source=source, code=f"{code:02d}", name=MODBUS_EXCEPTION_NAMES.get(code, "UNKNOWN"))
    bad = m.counter("source_bad_samples_by_status_total", "BAD samples per source and OPC-UA status code "
                    "(the server's code, or the nearest code to a Modbus failure)")
    for code, n in list(st.bad_by_status.items()):
        bad.set(float(n), source=source, status=status_name(code))
    sig = st.bad_signals
    m.gauge("source_signals_bad", "Signals whose newest sample is BAD (a failed sensor is one state, "
            "not one error per sample)").set(float(sig.count), source=source)
    m.counter("source_signals_went_bad_total", "Transitions of a signal into BAD").set(float(sig.entered),
                                                                                       source=source)
    m.counter("source_signals_recovered_total", "Transitions of a signal out of BAD").set(float(sig.left),
                                                                                          source=source)
    if st.polls:
        since = st.last_good_poll_ns or st.started_ns
        m.gauge("source_last_good_poll_age_seconds", "Seconds since the last poll in which every read succeeded "
                "(since start if none)").set(max(0.0, (now_ns - since) / 1e9), source=source)
        h = st.poll_duration
        hist = m.histogram("source_poll_duration_seconds", "Wall time of one poll of a device")
        for le, count in h.cumulative():
            hist.set(float(count), suffix="_bucket", le=le, source=source)
        hist.set(h.sum_s, suffix="_sum", source=source)
        hist.set(float(h.count), suffix="_count", source=source)
    if st.last_sample_ns or st.samples_bad:
        since = st.last_sample_ns or st.started_ns
        m.gauge("source_last_sample_age_seconds", "Seconds since the newest GOOD sample (since start if none)").set(
            max(0.0, (now_ns - since) / 1e9), source=source)


def describe_signals(ids: list[str], rows: np.ndarray, codes: np.ndarray | None, where: list[str] | None = None,
                     limit: int = 5) -> str:
    """``"m1.t (ns=2;s=m1.t) BadSensorFailure, ... and 26 more"`` for a log line (first ``limit`` only)."""
    parts = []
    for i, r in enumerate(rows[:limit].tolist()):
        text = ids[r]
        if where is not None:
            text += f" ({where[i]})"
        if codes is not None:
            text += f" {status_name(int(codes[i]))}"
        parts.append(text)
    more = len(rows) - limit
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")


def degraded_reasons(st: SourceStats) -> list[str]:
    """Why a source is not fully healthy, for ``/health`` (empty when it is)."""
    reasons: list[str] = []
    if not st.connected:
        reasons.append("not connected")
    if st.breaker_open:
        reasons.append("circuit breaker open")
    if st.failing_blocks:
        reasons.append(f"{st.failing_blocks} read(s) failing")
    if st.bad_signals.count:
        reasons.append(f"{st.bad_signals.count} signal(s) BAD")
    return reasons
