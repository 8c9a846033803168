"""Every fault a source counts reaches /metrics per source, parses strictly and follows the naming rules."""

from __future__ import annotations

import numpy as np

from edge.sources.stats import SourceStats, degraded_reasons, export_source_metrics
from plantwire.metrics import Registry
from plantwire.plant import Quality
from plantwire.status import Status
from tests.test_ops_edge import check_conventions, parse_prometheus


def faulty_stats() -> SourceStats:
    st = SourceStats(started_ns=1_000_000_000_000)
    st.connected = True
    st.polls, st.missed_ticks, st.polls_short_circuited = 40, 3, 5
    st.timeouts, st.no_response, st.reconnects, st.failing_blocks = 7, 4, 2, 1
    st.exceptions_by_code = {2: 30, 11: 1}
    st.bad_by_status = {Status.BAD_OUT_OF_RANGE: 330, 0x80FE1234: 2}
    st.last_good_poll_ns = 1_010_000_000_000
    for d in (0.003, 0.02, 0.02, 0.7, 30.0):
        st.poll_duration.observe(d)
    st.bad_signals = bs = type(st.bad_signals)(10)
    rows = np.arange(10, dtype=np.uint32)
    q = np.full(10, Quality.GOOD, dtype=np.uint8)
    q[:3] = Quality.BAD
    for _ in range(5):  # the same three sensors stay failed: one transition each, not five
        bs.update(rows, q)
    return st


def test_source_faults_are_exported_per_source() -> None:
    m = Registry("plantwire_edge")
    st = faulty_stats()
    export_source_metrics(m, "plc1", st, now_ns=1_012_500_000_000)
    export_source_metrics(m, "plc2", SourceStats(), now_ns=1_012_500_000_000)
    fams = parse_prometheus(m.render())
    assert check_conventions(fams, "plantwire_edge") == []

    def one(metric: str, **labels: str) -> float:
        return fams[f"plantwire_edge_{metric}"].samples[tuple(sorted({"source": "plc1", **labels}.items()))]

    assert one("source_timeouts_total") == 7 and one("source_no_response_total") == 4
    assert one("source_missed_ticks_total") == 3 and one("source_skipped_polls_total") == 5
    assert one("source_reconnects_total") == 2 and one("source_failing_reads") == 1
    assert one("source_exception_responses_total", code="02", name="ILLEGAL DATA ADDRESS") == 30
    assert one("source_exception_responses_total", code="11", name="GATEWAY TARGET DEVICE FAILED TO RESPOND") == 1
    assert one("source_bad_samples_by_status_total", status="BadOutOfRange") == 330
    assert one("source_bad_samples_by_status_total", status="0x80FE0000") == 2
    assert one("source_signals_bad") == 3 and one("source_signals_went_bad_total") == 3
    assert one("source_signals_recovered_total") == 0
    assert one("source_last_good_poll_age_seconds") == 2.5
    hist = fams["plantwire_edge_source_poll_duration_seconds"]
    assert hist.kind == "histogram"
    key = lambda suffix, **kw: (("__name__", f"plantwire_edge_source_poll_duration_seconds{suffix}"),  # noqa: E731
                                *sorted({"source": "plc1", **kw}.items()))
    assert hist.samples[key("_bucket", le="0.005")] == 1 and hist.samples[key("_bucket", le="0.025")] == 3
    assert hist.samples[key("_bucket", le="1.0")] == 4 and hist.samples[key("_bucket", le="+Inf")] == 5
    assert hist.samples[key("_count")] == 5 and abs(hist.samples[key("_sum")] - 30.743) < 1e-9
    # A source that never polled (OPC-UA subscriptions) has no poll histogram and no poll age.
    assert (("source", "plc2"),) not in fams["plantwire_edge_source_last_good_poll_age_seconds"].samples


def test_a_connected_device_with_failing_reads_or_bad_signals_is_degraded() -> None:
    st = faulty_stats()
    assert degraded_reasons(st) == ["1 read(s) failing", "3 signal(s) BAD"]
    healthy = SourceStats()
    healthy.connected = True
    assert degraded_reasons(healthy) == []
    healthy.breaker_open, healthy.connected = True, False
    assert degraded_reasons(healthy) == ["not connected", "circuit breaker open"]
