"""A crashed edge run's tail: the next run reports how far the epoch was numbered, and the gap ledger
shows what never arrived as a gap with reason "edge crash" (issue 13)."""

from __future__ import annotations

from pathlib import Path

from cloud.ledger import GapLedger

GW, BOOT = "gw", 1_700_000_000_000_000_000


def test_a_closed_epoch_shows_its_missing_tail_with_the_reason_and_replays_fill_it(tmp_path: Path) -> None:
    led = GapLedger(tmp_path)
    led.add(GW, BOOT, [0, 1, 2, 4], now=100.0)
    assert [(g.lo, g.hi, g.reason) for g in led.gaps()] == [(3, 3, "missing")]
    assert led.close_epoch(GW, BOOT, 9, "edge crash", now=200.0)
    assert not led.close_epoch(GW, BOOT, 9, "edge crash", now=300.0), "idempotent: the edge repeats it"
    assert [(g.lo, g.hi, g.reason, g.since) for g in led.gaps()] == [
        (3, 3, "missing", 100.0), (5, 9, "edge crash", 200.0)]
    led.add(GW, BOOT, [5, 6], now=250.0)  # the edge's log replays part of the tail
    assert [(g.lo, g.hi, g.reason) for g in led.gaps()] == [(3, 3, "missing"), (7, 9, "edge crash")]
    assert led.ack(GW, BOOT).watermark == 2, "closing frees nothing on the edge"
    led.save()
    again = GapLedger(tmp_path)
    again.load()
    assert [(g.lo, g.hi, g.reason) for g in again.gaps()] == [(3, 3, "missing"), (7, 9, "edge crash")]
    again.add(GW, BOOT, [3, 7, 8, 9], now=300.0)
    assert again.gaps() == []


def test_an_epoch_that_never_arrived_at_all_is_one_crash_gap(tmp_path: Path) -> None:
    led = GapLedger(tmp_path)
    led.close_epoch(GW, BOOT, 4, "edge crash", now=1.0)
    assert [(g.lo, g.hi, g.reason, g.batches) for g in led.gaps()] == [(0, 4, "edge crash", 5)]


def test_numbers_the_edge_dropped_are_gaps_named_by_the_cause(tmp_path: Path) -> None:
    led = GapLedger(tmp_path)
    led.add(GW, BOOT, [0, 1, 5, 9], now=1.0)
    assert led.mark_dropped(GW, BOOT, 2, 3, "edge dropped: disk full")
    assert led.mark_dropped(GW, BOOT, 4, 4, "edge dropped: disk full"), "extends the range"
    assert not led.mark_dropped(GW, BOOT, 2, 4, "edge dropped: disk full"), "idempotent"
    led.mark_dropped(GW, BOOT, 6, 6, "edge dropped: log over max_bytes")
    assert [(g.lo, g.hi, g.reason) for g in led.gaps()] == [
        (2, 4, "edge dropped: disk full"), (6, 8, "missing")], "6..8 is only partly explained"
    led.save()
    again = GapLedger(tmp_path)
    again.load()
    assert [g.reason for g in again.gaps()] == ["edge dropped: disk full", "missing"]
