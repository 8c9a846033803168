"""The run mark survives kill -9 and tells the next run what the crash took; side work fails counted."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edge.runmark import NEXT_SEQ, PENDING, UNSENT, RunMark, read_previous
from edge.sidework import SideWork

EPOCH = 1_700_000_000_000_000_000


def test_a_killed_run_leaves_its_mark_for_the_next(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import os, signal, numpy as np
        from edge.runmark import RunMark, NEXT_SEQ, PENDING, UNSENT
        m = RunMark({str(tmp_path)!r}, 4, b"hash0001", {EPOCH})
        m.read_per_signal += np.array([3, 0, 5, 1])
        np.maximum.at(m.last_ts_ns, np.array([0, 2, 2]), np.array([10, 20, 30]))
        m.head[NEXT_SEQ] = 7
        m.head[PENDING] = 40
        m.head[UNSENT] = 200
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", code], check=False)
    assert done.returncode == -signal.SIGKILL
    prev = read_previous(tmp_path)
    assert prev is not None and prev.crashed and prev.boot_epoch_ns == EPOCH and prev.next_seq == 7
    assert prev.buffer_samples == 40 and prev.unlogged_samples == 200 and prev.lost_samples == 240
    assert prev.read_per_signal.tolist() == [3, 0, 5, 1]
    m = RunMark(tmp_path, 4, b"hash0001", EPOCH + 1)
    assert m.previous is not None and m.previous.last_ts_ns is not None
    assert m.previous.last_ts_ns.tolist() == [10, 0, 30, 0]
    assert m.read_per_signal.tolist() == [0, 0, 0, 0] and int(m.head[NEXT_SEQ]) == 0
    assert m.last_ts_ns.tolist() == [10, 0, 30, 0], "carried forward for signals this run may never read"
    m.close(stopped=True)
    again = RunMark(tmp_path, 4, b"hash0002", EPOCH + 2)  # another signal table: timestamps do not apply
    assert again.previous is not None and not again.previous.crashed and again.previous.lost_samples == 0
    assert again.previous.last_ts_ns is None


def test_the_mark_is_reused_on_a_full_disk_and_in_memory_when_it_cannot_be_made(tmp_path: Path) -> None:
    from diskfull import fill, small_disk

    with small_disk(tmp_path / "disk", 256 * 1024) as disk:
        (disk / "a").mkdir()
        RunMark(disk / "a", 1000, b"h", EPOCH).close(stopped=True)
        fill(disk)
        reused = RunMark(disk / "a", 1000, b"h", EPOCH + 1)
        assert reused.persistent and reused.previous is not None
        (disk / "b").mkdir()
        fresh = RunMark(disk / "b", 1000, b"h", EPOCH)
        assert not fresh.persistent
        fresh.head[UNSENT] = 1  # still usable
        reused.close(stopped=True)
        del reused, fresh  # the mapping keeps the tmpfs busy until its arrays are gone


def test_side_work_failures_are_counted_logged_once_per_interval_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    sw = SideWork(log_interval_s=60.0, clock=lambda: now[0])
    calls = []

    def fails() -> None:
        calls.append(1)
        raise OSError(28, "No space left on device")

    with caplog.at_level(logging.ERROR, logger="plantwire.edge"):
        for _ in range(5):
            assert sw.run("checkpoint", fails) is None
            now[0] += 1.0
        now[0] += 60.0
        sw.run("checkpoint", fails)
    assert len(calls) == 6 and sw.errors() == {"checkpoint": 6} and sw.failing() == ["checkpoint"]
    lines = [r.getMessage() for r in caplog.records if "checkpoint failed" in r.getMessage()]
    assert len(lines) == 2 and "5 times" in lines[1]
    assert sw.run("checkpoint", lambda: 42) == 42 and sw.failing() == []
    with pytest.raises(ZeroDivisionError):  # a bug is not side work failing
        sw.run("stats", lambda: 1 / 0)


def test_mark_arrays_are_views_of_the_file(tmp_path: Path) -> None:
    m = RunMark(tmp_path, 3, b"x", EPOCH)
    m.read_per_signal += np.array([1, 2, 3])
    m.head[PENDING] = 9
    prev = read_previous(tmp_path)
    assert prev is not None and prev.read_per_signal.tolist() == [1, 2, 3] and prev.buffer_samples == 9
    assert os.path.getsize(tmp_path / "run.mark") == 8 * (16 + 4 * 64 + 6 * 8 + 9)
    m.close(stopped=False)


def test_an_in_memory_mark_moves_to_its_file_when_space_returns(tmp_path: Path) -> None:
    from diskfull import fill, small_disk

    with small_disk(tmp_path / "disk", 256 * 1024) as disk:
        filler = fill(disk)
        m = RunMark(disk, 1000, b"h", EPOCH)
        assert not m.persistent and not m.try_persist()
        m.read_per_signal[7] = 5
        m.head[NEXT_SEQ] = 3
        filler.unlink()
        assert m.try_persist() and m.persistent
        m.read_per_signal[8] = 1
        prev = read_previous(disk)
        assert prev is not None and prev.next_seq == 3 and prev.read_per_signal[7:9].tolist() == [5, 1]
        m.close(stopped=True)
        del m, prev  # the mapping keeps the tmpfs busy until its arrays are gone


def test_dropped_ranges_merge_and_keep_the_newest(tmp_path: Path) -> None:
    from edge.runmark import MAX_DROPS

    m = RunMark(tmp_path, 2, b"x", EPOCH)
    for seq in (3, 4, 5, 9):
        assert m.add_drop(EPOCH, seq, 1)
    m.add_drop(EPOCH, 10, 2)  # another cause: a range of its own
    assert m.drop_list().tolist() == [[EPOCH, 3, 5, 1], [EPOCH, 9, 9, 1], [EPOCH, 10, 10, 2]]
    for seq in range(20, 20 + 2 * MAX_DROPS, 2):
        m.add_drop(EPOCH, seq, 1)
    last = 18 + 2 * MAX_DROPS
    assert len(m.drop_list()) == MAX_DROPS and m.drop_list()[-1].tolist() == [EPOCH, last, last, 1]
    assert m.drop_list()[0].tolist()[1] > 10, "the oldest ranges gave way"
    prev = read_previous(tmp_path)
    assert prev is not None and prev.drops.tolist() == m.drop_list().tolist()


def test_a_crash_loop_keeps_every_runs_accounting_and_drops(tmp_path: Path) -> None:
    """Runs that crash one after the other (the broker down, nothing reported) are all remembered."""
    from edge.runmark import MAX_RUNS

    a = RunMark(tmp_path, 2, b"x", EPOCH)
    a.head[NEXT_SEQ] = 5
    a.head[UNSENT] = 300
    a.add_drop(EPOCH, 1, 2)
    b = RunMark(tmp_path, 2, b"x", EPOCH + 1)  # a never closed: it crashed
    b.head[NEXT_SEQ] = 7
    c = RunMark(tmp_path, 2, b"x", EPOCH + 2)
    runs = c.earlier_runs()
    assert [(r["boot_epoch_ns"], r["next_seq"], r["crashed"]) for r in runs] == [(EPOCH + 1, 7, True), (EPOCH, 5, True)]
    assert runs[1]["unlogged_samples"] == 300 and runs[1]["dropped_samples"] == 300
    assert c.drop_list().tolist() == [[EPOCH, 1, 1, 2]], "drop ranges are carried from run to run"
    for i in range(3, 3 + MAX_RUNS):
        c = RunMark(tmp_path, 2, b"x", EPOCH + i)
    assert len(c.earlier_runs()) == MAX_RUNS and c.earlier_runs()[0]["boot_epoch_ns"] == EPOCH + 2 + MAX_RUNS - 1
