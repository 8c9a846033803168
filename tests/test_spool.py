"""The write-ahead log on its own: records survive reopening, torn tails are cut, bounds drop the oldest
with counts, acks free records and delete segment files. Real files in tmp_path, no broker needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from edge.spool import FILE_HEADER, RECORD_HEADER, Lane, Spool, SpoolError, SpoolSettings
from plantwire import wire

EPOCH = 1_700_000_000_000_000_000


def batch(seq: int, n: int = 100, epoch: int = EPOCH) -> bytes:
    rng = np.random.default_rng(seq)
    return wire.encode_batch(
        gateway="gw-test",
        boot_epoch_ns=epoch,
        seq=seq,
        table_hash=b"12345678",
        ts_ns=np.full(n, EPOCH + seq * 1_000_000_000, dtype=np.int64),
        signal=np.arange(n, dtype=np.uint32),
        value=rng.normal(size=n),
        quality=np.zeros(n, dtype=np.uint8),
    )


def settings(**kw: object) -> SpoolSettings:
    base: dict[str, object] = {"max_bytes": 64 * 1024 * 1024, "segment_bytes": 1024 * 1024}
    base.update(kw)
    return SpoolSettings(**base)


def fill(sp: Spool, seqs: range, n: int = 100, epoch: int = EPOCH) -> dict[int, bytes]:
    out = {}
    for s in seqs:
        p = batch(s, n, epoch)
        sp.append(p, epoch=epoch, seq=s, n_samples=n)
        out[s] = p
    return out


def segments(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "wal").glob("*.wal"))


def test_records_survive_reopen_in_order_and_byte_exact(tmp_path: Path) -> None:
    with Spool(settings(), tmp_path) as sp:
        payloads = fill(sp, range(10))
        sp.append(b"event", epoch=EPOCH, seq=0, n_samples=1, lane=Lane.EVENTS)
        sp.sync()
        assert sp.stats.syncs == 1
    with Spool(settings(), tmp_path) as sp:
        recs = sp.live(Lane.TELEMETRY)
        assert [r.seq for r in recs] == list(range(10))
        assert [sp.read(r) for r in recs] == [payloads[s] for s in range(10)]
        assert sp.stats.recovered_records == 11
        assert sp.stats.recovered_samples == 1001
        assert sp.stats.torn_cuts == 0
        assert [sp.read(r) for r in sp.live(Lane.EVENTS)] == [b"event"]
        # older boot epochs come first in the replay order
        fill(sp, range(3), epoch=EPOCH - 1)
        assert [(r.epoch, r.seq) for r in sp.live()][:3] == [(EPOCH - 1, 0), (EPOCH - 1, 1), (EPOCH - 1, 2)]


def test_torn_tail_is_cut_at_last_good_record(tmp_path: Path) -> None:
    with Spool(settings(), tmp_path) as sp:
        payloads = fill(sp, range(5))
    (seg,) = segments(tmp_path)
    size = seg.stat().st_size
    cut_at = size - len(payloads[4]) // 2  # power cut in the middle of the last record's payload
    with open(seg, "r+b") as f:
        f.truncate(cut_at)
    with Spool(settings(), tmp_path) as sp:
        assert [r.seq for r in sp.live()] == [0, 1, 2, 3]
        assert sp.stats.torn_cuts == 1
        assert sp.stats.torn_bytes == cut_at - (size - len(payloads[4]) - RECORD_HEADER.size)
        assert seg.stat().st_size == size - len(payloads[4]) - RECORD_HEADER.size  # file cut physically
        assert [sp.read(r) for r in sp.live()] == [payloads[s] for s in range(4)]
        fill(sp, range(5, 7))  # appending continues in a new segment
    with Spool(settings(), tmp_path) as sp:
        assert [r.seq for r in sp.live()] == [0, 1, 2, 3, 5, 6]
        assert sp.stats.torn_cuts == 0


def test_torn_header_and_flipped_byte_are_cut(tmp_path: Path) -> None:
    with Spool(settings(), tmp_path) as sp:
        payloads = fill(sp, range(6))
    (seg,) = segments(tmp_path)
    raw = bytearray(seg.read_bytes())
    rec_len = [RECORD_HEADER.size + len(payloads[s]) for s in range(6)]
    start3 = len(FILE_HEADER) + sum(rec_len[:3])
    raw[start3 + RECORD_HEADER.size + 10] ^= 0x40  # bit rot inside record 3's payload
    seg.write_bytes(bytes(raw))
    with Spool(settings(), tmp_path) as sp:
        assert [r.seq for r in sp.live()] == [0, 1, 2]  # 3 fails its CRC; 4 and 5 behind it are lost, counted
        assert sp.stats.torn_bytes == sum(rec_len[3:])
    # a tail of only half a header
    with open(seg, "ab") as f:
        f.write(RECORD_HEADER.pack(b"PR", 1, 1, 100, 0, EPOCH, 9, 1, 0)[:20])
    with Spool(settings(), tmp_path) as sp:
        assert [r.seq for r in sp.live()] == [0, 1, 2]
        assert sp.stats.torn_bytes == 20


def test_garbage_segment_is_cut_and_counted(tmp_path: Path) -> None:
    (tmp_path / "wal").mkdir()
    (tmp_path / "wal" / f"{7:020d}.wal").write_bytes(b"not a log at all")
    with Spool(settings(), tmp_path) as sp:
        assert sp.live() == []
        assert sp.stats.torn_cuts == 1 and sp.stats.torn_bytes == 16
        fill(sp, range(2))
    assert len(segments(tmp_path)) == 1


def test_ack_frees_records_and_deletes_acked_segments(tmp_path: Path) -> None:
    one = RECORD_HEADER.size + max(len(batch(s, 300)) for s in range(10))
    s = settings(segment_bytes=len(FILE_HEADER) + 2 * one + 16, max_bytes=1024 * 1024)  # two records a segment
    with Spool(s, tmp_path) as sp:
        fill(sp, range(10), n=300)
        assert len(segments(tmp_path)) == 5
        bytes_before = sp.stats.bytes
        recs, samples = sp.ack_covered(EPOCH, 3, ((6, 7),))
        assert (recs, samples) == (6, 1800)
        assert [r.seq for r in sp.live()] == [4, 5, 8, 9]
        # segments {0,1}, {2,3}, {6,7} are gone; {4,5} and the active {8,9} stay
        assert len(segments(tmp_path)) == 2
        assert sp.stats.bytes < bytes_before - 3 * 2 * (one - 50)
        assert sp.ack_covered(EPOCH, 3) == (0, 0)  # idempotent
        assert sp.ack_covered(EPOCH + 1, 100) == (0, 0)  # another epoch frees nothing here
        assert sp.stats.acked_records == 6 and sp.stats.acked_samples == 1800
        assert sp.free(sp.live()[0]) is True
    with Spool(s, tmp_path) as sp:
        # tombstones keep 4 freed although it shares a segment with unacked 5
        assert [r.seq for r in sp.live()] == [5, 8, 9]


def test_restart_resumes_unacked(tmp_path: Path) -> None:
    with Spool(settings(), tmp_path) as sp:
        payloads = fill(sp, range(20))
        sp.ack_covered(EPOCH, 9)
    with Spool(settings(), tmp_path) as sp:
        live = sp.live()
        assert [r.seq for r in live] == list(range(10, 20))  # exactly the unacked ones (tombstones)
        assert sp.stats.recovered_records == 10 and sp.stats.recovered_samples == 1000
        assert all(sp.read(r) == payloads[r.seq] for r in live)
        sp.ack_covered(EPOCH, 19)
        assert sp.live() == []
        fill(sp, range(20, 22), epoch=EPOCH + 5)
    with Spool(settings(), tmp_path) as sp:
        assert [(r.epoch, r.seq) for r in sp.live()] == [(EPOCH + 5, 20), (EPOCH + 5, 21)]


def test_bytes_bound_drops_oldest_segments_with_counts(tmp_path: Path) -> None:
    n = 1000
    big = batch(0, n)
    s = SpoolSettings(max_bytes=256 * 1024, segment_bytes=64 * 1024)
    assert (64 * 1024) // (RECORD_HEADER.size + len(big)) >= 3  # several records a segment
    with Spool(s, tmp_path) as sp:
        total = 0
        seq = 0
        while sp.stats.dropped_records == 0:
            sp.append(big, epoch=EPOCH, seq=seq, n_samples=n)
            seq += 1
            total += 1
            assert total < 10_000
        assert sp.stats.bytes <= s.max_bytes
        live = [r.seq for r in sp.live()]
        dropped = sp.stats.dropped_records
        assert live == list(range(dropped, seq))  # the oldest went, the newest are all there
        assert sp.stats.dropped_samples == dropped * n
        assert sp.stats.dropped_bytes_bound_records == dropped
        for _ in range(50):
            sp.append(big, epoch=EPOCH, seq=seq, n_samples=n)
            seq += 1
            assert sp.stats.bytes <= s.max_bytes
        assert sp.stats.dropped_records + sp.stats.records == seq


def test_age_bound_drops_oldest_with_counts(tmp_path: Path) -> None:
    now = [EPOCH]
    s = settings(max_age_s=60.0)
    with Spool(s, tmp_path, clock_ns=lambda: now[0]) as sp:
        for seq in range(10):
            sp.append(batch(seq), epoch=EPOCH, seq=seq, n_samples=100)
            now[0] += 10 * 10**9  # one record every 10 s
        assert sp.stats_dict()["oldest_unacked_age_s"] == pytest.approx(100.0)
        assert sp.enforce_age() == (4, 400)  # appended at t=0..30 s are older than 60 s at t=100 s
        assert [r.seq for r in sp.live()] == list(range(4, 10))
        assert sp.stats.dropped_records == 4 and sp.stats.dropped_samples == 400
        assert sp.stats.dropped_age_bound_records == 4
        assert sp.enforce_age() == (0, 0)


def test_oversized_record_and_settings_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="segment_bytes"):
        SpoolSettings(max_bytes=2 * 1024 * 1024, segment_bytes=1024 * 1024)
    with Spool(settings(), tmp_path) as sp, pytest.raises(SpoolError, match="MAX_RECORD_BYTES"):
        sp.append(b"x" * (64 * 1024 * 1024 + 1), epoch=EPOCH, seq=0, n_samples=1)


def test_reread_detects_damage_after_open(tmp_path: Path) -> None:
    with Spool(settings(), tmp_path) as sp:
        fill(sp, range(2))
        (seg,) = segments(tmp_path)
        raw = bytearray(seg.read_bytes())
        raw[-5] ^= 0xFF
        seg.write_bytes(bytes(raw))
        rec = sp.live()[1]
        with pytest.raises(SpoolError, match="CRC"):
            sp.read(rec)


def test_disk_full_drops_oldest_segment_and_retries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    import edge.spool as spool_mod

    one = RECORD_HEADER.size + max(len(batch(s, 300)) for s in range(20))
    s = settings(segment_bytes=len(FILE_HEADER) + 2 * one + 16, max_bytes=1024 * 1024)
    with Spool(s, tmp_path) as sp:
        fill(sp, range(6), n=300)  # segments {0,1} {2,3} {4,5}
        real = os.writev
        calls = {"n": 0}

        def full_once(fd: int, bufs: list[bytes]) -> int:
            calls["n"] += 1
            if calls["n"] == 1:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(fd, bufs)

        monkeypatch.setattr(spool_mod.os, "writev", full_once)
        sp.append(batch(6, 300), epoch=EPOCH, seq=6, n_samples=300)
        monkeypatch.setattr(spool_mod.os, "writev", real)
        assert [r.seq for r in sp.live()] == [2, 3, 4, 5, 6]
        assert sp.stats.dropped_disk_full_records == 2 and sp.stats.dropped_samples == 600
        assert all(sp.read(r) == batch(r.seq, 300) for r in sp.live())
    with Spool(s, tmp_path) as sp:
        assert [r.seq for r in sp.live()] == [2, 3, 4, 5, 6]


def test_same_batch_twice_keeps_the_newer_copy(tmp_path: Path) -> None:
    with Spool(settings(), tmp_path) as sp:
        sp.append(b"old", epoch=EPOCH, seq=0, n_samples=1)
        sp.append(b"new", epoch=EPOCH, seq=0, n_samples=1)
        assert [sp.read(r) for r in sp.live()] == [b"new"] and sp.stats.records == 1
    with Spool(settings(), tmp_path) as sp:
        assert [sp.read(r) for r in sp.live()] == [b"new"] and sp.stats.records == 1
        assert sp.ack_covered(EPOCH, 0) == (1, 1)
        assert sp.live() == []


def test_second_writer_on_the_same_log_is_refused(tmp_path: Path) -> None:
    with Spool(settings(), tmp_path):
        with pytest.raises(SpoolError, match="in use"):
            Spool(settings(), tmp_path)
    with Spool(settings(), tmp_path) as sp:  # released on close
        assert sp.live() == []


def test_kill_9_mid_stream_loses_nothing_appended(tmp_path: Path) -> None:
    """A crash (not a power cut) keeps every appended record: the page cache has it before append returns."""
    import os
    import signal
    import subprocess
    import sys

    script = f"""
import sys
from pathlib import Path
from edge.spool import Spool, SpoolSettings
sp = Spool(SpoolSettings(max_bytes=64 * 1024 * 1024, segment_bytes=64 * 1024), Path({str(tmp_path)!r}))
payload = bytes(range(256)) * 40
seq = 0
while True:
    sp.append(payload, epoch=1, seq=seq, n_samples=10)
    sys.stdout.write(f"{{seq}}\\n")
    sys.stdout.flush()
    seq += 1
"""
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=root)
    assert proc.stdout is not None
    last = -1
    for line in proc.stdout:
        last = int(line)
        if last >= 300:  # several segments in
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    with Spool(settings(), tmp_path) as sp:
        seqs = [r.seq for r in sp.live()]
        assert seqs[: last + 1] == list(range(last + 1))  # every acknowledged append is there, in order
        assert seqs == list(range(len(seqs)))
        # SIGKILL can land inside the writev of the one append that had not returned yet: Linux then
        # leaves a page-granular prefix of that record, which open must cut. Only that record, at
        # the very tail of the newest segment, may be torn; nothing acknowledged is.
        assert sp.stats.torn_cuts <= 1
        assert sp.stats.torn_bytes < RECORD_HEADER.size + len(bytes(range(256)) * 40)
        assert all(sp.read(r) == bytes(range(256)) * 40 for r in sp.live())


# -- a full disk (issue 13) ------------------------------------------------------------------------------


def test_default_segments_are_a_sixteenth_of_the_bound_so_dropping_the_oldest_works_at_small_quotas() -> None:
    assert SpoolSettings().segment_bytes == 16 * 1024**2
    assert SpoolSettings(max_bytes=8 * 1024**2).segment_bytes == 512 * 1024
    assert SpoolSettings(max_bytes=65536).segment_bytes == 4096


def test_the_log_keeps_its_space_when_another_writer_fills_the_disk(tmp_path: Path) -> None:
    """Segments are preallocated and a reserve stands by: with the disk taken by someone else the log
    goes on appending; when its space is used up the oldest data goes, counted, never the newest."""
    from diskfull import fill, small_disk

    seg = 64 * 1024
    with small_disk(tmp_path / "disk", 1024 * 1024) as disk:
        dropped: list[int] = []
        sp = Spool(settings(max_bytes=16 * seg, segment_bytes=seg, reserve_segments=1), disk,
                   on_drop=lambda p, cause: dropped.append(wire.decode_batch(p).seq))
        try:
            assert sp.stats.reserve_bytes == seg
            fill(disk)
            appended = 0
            for s in range(400):  # ~400 x 1.7 kB: several segments' worth, far more than the disk had free
                p = batch(s, 200)
                sp.append(p, epoch=EPOCH, seq=s, n_samples=200)  # never raises: the log has its own space
                appended += 200
            st = sp.stats
            assert st.reserve_releases == 1, "the reserve made room for the first new segment"
            assert st.dropped_disk_full_records > 0, "then the oldest segments went"
            assert st.samples + st.dropped_samples == appended, "every sample is live or counted as dropped"
            assert st.dropped_samples == st.dropped_disk_full_samples
            assert dropped == list(range(st.dropped_records)), "every dropped batch reported, oldest first"
            newest = sp.live(Lane.TELEMETRY)[-1]
            assert newest.seq == 399 and sp.read(newest) == batch(399, 200)
        finally:
            sp.close()
        # Reopened on the still-full disk: everything live is read back.
        with Spool(settings(max_bytes=16 * seg, segment_bytes=seg, reserve_segments=1), disk) as again:
            assert again.stats.recovered_samples == st.samples


def test_a_log_opened_on_a_full_disk_runs_without_space_and_recovers_when_space_returns(tmp_path: Path) -> None:
    from diskfull import fill, small_disk

    seg = 64 * 1024
    with small_disk(tmp_path / "disk", 512 * 1024) as disk:
        (disk / "wal").mkdir()
        filler = fill(disk)
        with Spool(settings(max_bytes=16 * seg, segment_bytes=seg), disk) as sp:
            assert sp.stats.no_segment == 1 and sp.stats.reserve_bytes == 0
            with pytest.raises(SpoolError):
                sp.append(batch(0), epoch=EPOCH, seq=0, n_samples=100)
            sp.maintain()
            assert sp.stats.no_segment == 1, "still no space"
            filler.unlink()
            sp.maintain()
            assert sp.stats.no_segment == 0 and sp.stats.reserve_bytes == 3 * seg, "3 segments by default"
            sp.append(batch(1), epoch=EPOCH, seq=1, n_samples=100)
            assert [r.seq for r in sp.live()] == [1]


def test_the_reserve_is_spent_one_segment_at_a_time_and_grown_back(tmp_path: Path) -> None:
    from diskfull import fill, small_disk

    seg = 64 * 1024
    with small_disk(tmp_path / "disk", 1024 * 1024) as disk:
        with Spool(settings(max_bytes=16 * seg, segment_bytes=seg, reserve_segments=3), disk) as sp:
            assert (disk / "wal" / "RESERVE").stat().st_size == 3 * seg
            filler = fill(disk)
            per_seg = (seg - len(FILE_HEADER)) // (max(len(batch(s, 200)) for s in range(300)) + RECORD_HEADER.size)
            s = 0
            while sp.stats.dropped_records == 0:
                assert s < 300, "the full disk never forced a drop"
                sp.append(batch(s, 200), epoch=EPOCH, seq=s, n_samples=200)
                s += 1
            # The first drop comes only once the active segment and all 3 of the reserve are full.
            assert sp.stats.reserve_releases == 3 and sp.stats.reserve_bytes == 0
            assert s > 4 * per_seg and sp.stats.records >= 3 * per_seg
            filler.unlink()
            sp.maintain()
            assert sp.stats.reserve_bytes == 3 * seg and (disk / "wal" / "RESERVE").stat().st_size == 3 * seg
