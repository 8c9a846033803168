"""Unit tests of the ingestor's parts: gap ledger, dead-letter store, signal-table store, histogram."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.deadletter import DeadLetterStore
from cloud.ledger import GapLedger
from cloud.signal_tables import SignalTableStore
from plantwire import wire
from plantwire.histogram import Histogram
from plantwire.metrics import Registry

# -- gap ledger -------------------------------------------------------------------------------------


def naive_ranges(seqs: set[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s in sorted(seqs):
        if out and out[-1][1] == s - 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


@given(st.lists(st.integers(0, 200), max_size=300))
@settings(max_examples=200, deadline=None)
def test_ledger_ranges_match_a_set(seqs: list[int]) -> None:
    led = GapLedger(Path("/nonexistent"))
    dups = led.add("g", 1, seqs)
    assert led.ranges("g", 1) == naive_ranges(set(seqs))
    assert dups == len(seqs) - len(set(seqs))
    want_gaps = []
    prev = -1
    for lo, hi in naive_ranges(set(seqs)):
        if lo > prev + 1:
            want_gaps.append((prev + 1, lo - 1))
        prev = hi
    assert [(g.lo, g.hi) for g in led.gaps()] == want_gaps


def test_ledger_ack_watermark_and_ranges() -> None:
    led = GapLedger(Path("/nonexistent"))
    assert led.ack("g", 1).watermark == -1
    led.add("g", 1, [1, 2, 5])
    a = led.ack("g", 1)
    assert (a.watermark, a.ranges) == (-1, ((1, 2), (5, 5)))
    led.add("g", 1, [0, 3])
    a = led.ack("g", 1)
    assert (a.watermark, a.ranges) == (3, ((5, 5),))
    assert a.covers(2) and not a.covers(4) and a.covers(5)


def test_gap_age_counts_from_when_it_opened_and_survives_partial_fill(tmp_path: Path) -> None:
    led = GapLedger(tmp_path)
    led.add("g", 1, [0], now=100.0)
    led.add("g", 1, [10], now=200.0)  # gap 1..9 opens at 200
    led.add("g", 1, [1, 2, 9], now=300.0)  # narrows, still open since 200
    led.add("g", 1, [20], now=400.0)  # gap 11..19 opens at 400
    gaps = {(g.lo, g.hi): g.since for g in led.gaps()}
    assert gaps == {(3, 8): 200.0, (11, 19): 400.0}
    led.add("g", 1, [5], now=500.0)  # splits the old gap: both halves keep its age
    assert {(g.lo, g.hi): g.since for g in led.gaps()} == {(3, 4): 200.0, (6, 8): 200.0, (11, 19): 400.0}
    led.save()
    again = GapLedger(tmp_path)
    assert again.load() == 1
    assert {(g.lo, g.hi): g.since for g in again.gaps()} == {(3, 4): 200.0, (6, 8): 200.0, (11, 19): 400.0}
    again.add("g", 1, range(0, 21), now=600.0)
    assert again.gaps() == []


def test_ledger_persists_across_restarts_and_rejects_corruption(tmp_path: Path) -> None:
    led = GapLedger(tmp_path)
    seqs = list(range(1000))
    random.Random(3).shuffle(seqs)
    led.add("g", 7, seqs[:600], site="s")
    led.add("h", 8, [0, 1])
    led.save()
    again = GapLedger(tmp_path)
    assert again.load() == 2
    assert again.ranges("g", 7) == naive_ranges(set(seqs[:600]))
    assert again.site_of("g", 7) == "s"
    (tmp_path / "ledger.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"ledger\.json"):
        GapLedger(tmp_path).load()


def test_ledger_bounds_epochs_and_ranges() -> None:
    led = GapLedger(Path("/nonexistent"), max_epochs_per_gateway=3, max_ranges=4)
    for boot in range(5):
        led.add("g", boot, [0])
    assert sorted(b for _, b, _ in led.epochs()) == [2, 3, 4] and led.forgotten_epochs == 2
    led.add("g", 4, [2, 4, 6, 8, 10])
    assert led.ranges("g", 4) == [(0, 0), (6, 6), (8, 8), (10, 10)] and led.forgotten_ranges == 2
    assert led.ack("g", 4).watermark == 0  # nothing missing is ever claimed durable


# -- dead letters -----------------------------------------------------------------------------------


def test_dead_letters_are_bounded_and_keep_the_newest(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path, max_bytes=20_000, fsync=False)
    for i in range(200):
        assert store.add(topic="t", reason=f"r{i}", payload=bytes(50))
    files = list(tmp_path.glob("deadletter*.jsonl"))
    assert sum(f.stat().st_size for f in files) <= 20_000
    entries = store.read()
    assert entries[-1]["reason"] == "r199"
    assert store.stats.entries == 200
    assert store.stats.evicted_entries + len(entries) == 200
    assert DeadLetterStore.decode_payload(entries[-1]) == bytes(50)


def test_dead_letter_of_a_huge_payload_is_truncated(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path, max_bytes=1 << 20, fsync=False)
    store.add(topic="t", reason="big", payload=bytes(10 << 20))
    (e,) = store.read()
    assert e["truncated"] is True and e["payload_bytes"] == 10 << 20


def test_dead_letter_write_failure_is_counted_not_raised(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path, fsync=False)
    store.path.mkdir()  # a directory where the file should be: every open fails
    assert store.add(topic="t", reason="x", payload=b"p") is False
    assert store.stats.write_errors == 1


# -- signal tables ----------------------------------------------------------------------------------


def _table(gw: str, h: bytes, n: int = 3) -> bytes:
    return wire.encode_signal_table(
        gateway=gw,
        table_hash=h,
        site="s",
        ids=[f"x{i}" for i in range(n)],
        machines=["m"] * n,
        units=[""] * n,
        kinds=["analog"] * n,
    )


def test_signal_tables_persist_bound_and_skip_corrupt_files(tmp_path: Path) -> None:
    store = SignalTableStore(tmp_path, "samples", max_tables=2)
    t, new = store.add(_table("g", b"A" * 8))
    assert new and len(t) == 3 and t.prefixes.prefix(0) == b"samples,gateway=g,machine=m,signal=x0,site=s "
    assert store.add(_table("g", b"A" * 8))[1] is False
    store.add(_table("g", b"B" * 8))
    store.add(_table("h", b"C" * 8))  # evicts the least recently used (g, A), on disk too
    assert store.get("g", b"A" * 8) is None
    (store.dir / "junk.pwst").write_bytes(b"garbage")
    again = SignalTableStore(tmp_path, "samples", max_tables=2)
    assert again.load() == 2 and again.load_errors == 1
    assert again.get("h", b"C" * 8) is not None and again.get("g", b"B" * 8) is not None
    with pytest.raises(wire.WireError):
        store.add(b"PW\x01\x02junk")


# -- histogram --------------------------------------------------------------------------------------


def test_histogram_matches_a_naive_count() -> None:
    reg = Registry("t")
    h = Histogram(reg, "lat_seconds", "latency", (0.1, 1.0, 10.0))
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.exponential(1.0, 10_000), [0.1, 1.0, 10.0, -1.0, 1e9, np.nan]])
    h.observe(v[:5000])
    h.observe(v[5000:])
    finite = v[~np.isnan(v)]
    text = reg.render()
    for le, bound in (("0.1", 0.1), ("1.0", 1.0), ("10.0", 10.0), ("+Inf", np.inf)):
        assert f't_lat_seconds_bucket{{le="{le}"}} {int((finite <= bound).sum())}' in text
    assert f"t_lat_seconds_count {finite.size}" in text
    assert reg.histogram("lat_seconds", "").get(suffix="_sum") == pytest.approx(float(finite.sum()))
    assert "# TYPE t_lat_seconds histogram" in text
    assert h.quantile(0.5) == 1.0


def test_pipeline_scrape_reads_histogram_buckets() -> None:
    """bench/e2e.py reads quantiles from the scraped ``_bucket{le=...}`` lines: keep them parseable."""
    reg = Registry("plantwire_ingest")
    h = Histogram(reg, "sample_latency_seconds", "x", (0.5, 1.0))
    h.observe(np.array([0.2, 0.7, 0.7, 3.0]))
    lines = [ln for ln in reg.render().splitlines() if ln.startswith("plantwire_ingest_sample_latency_seconds_bucket")]
    assert [ln.split(" ")[1] for ln in lines] == ["1", "3", "4"]
    assert json.loads('"' + lines[0].split('le="')[1].split('"')[0] + '"') == "0.5"


def test_histograms_sharing_a_family_keep_their_own_buckets() -> None:
    """The ingestor's per-stage timings: one family ``group_stage_seconds``, one series set per stage."""
    reg = Registry("plantwire_ingest")
    write = Histogram(reg, "group_stage_seconds", "x", (0.5, 1.0), stage="write")
    build = Histogram(reg, "group_stage_seconds", "x", (0.5, 1.0), stage="build")
    write.observe(np.array([0.7, 3.0]))
    build.observe(np.array([0.1]))
    text = reg.render()
    assert text.count("# TYPE plantwire_ingest_group_stage_seconds histogram") == 1
    assert 'plantwire_ingest_group_stage_seconds_bucket{le="1.0",stage="write"} 1' in text
    assert 'plantwire_ingest_group_stage_seconds_bucket{le="+Inf",stage="write"} 2' in text
    assert 'plantwire_ingest_group_stage_seconds_bucket{le="0.5",stage="build"} 1' in text
    assert 'plantwire_ingest_group_stage_seconds_count{stage="build"} 1' in text
    assert write.count == 2 and build.count == 1


@given(
    st.lists(st.integers(0, 120), max_size=80),
    st.integers(-1, 60),
    st.lists(st.tuples(st.integers(0, 150), st.integers(0, 30)), max_size=6),
)
@settings(max_examples=200, deadline=None)
def test_merging_a_peer_ack_is_the_union(own: list[int], watermark: int, spans: list[tuple[int, int]]) -> None:
    from plantwire.wire import Ack

    led = GapLedger(Path("/nonexistent"))
    led.add("g", 1, own)
    ranges = tuple(sorted((lo, lo + w) for lo, w in spans))
    led.merge_ack(Ack("g", 1, watermark, ranges))
    want = set(own) | set(range(watermark + 1))
    for lo, hi in ranges:
        want |= set(range(lo, hi + 1))
    assert led.ranges("g", 1) == naive_ranges(want)
