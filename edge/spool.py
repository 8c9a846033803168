"""The edge write-ahead log: every encoded batch is on disk before it is published, and leaves only when acked.

Layout: ``state_dir/wal/<id:020d>.wal`` segment files, appended to one at a time, each starting with
an 8-byte file header (``b"PWWAL\\x00\\x01\\x00"``) and then records::

    magic     2s  b"PR"
    version   B   1
    lane      B   Lane (1 telemetry, 2 events)
    length    I   payload bytes
    crc       I   zlib.crc32 over the other 36 header bytes and the payload
    epoch     q   boot_epoch_ns of the batch
    seq       Q   per-gateway sequence number
    n         I   samples in the batch
    wall_ns   q   wall-clock time of the append (the age bound is measured from it)
    payload   length bytes (wire.encode_batch output, published as is)

Behaviour an operator relies on, and why:

- **Group commit.** ``append`` writes with one ``os.writev`` (the page cache has it at once, a crash
  of the process loses nothing); ``sync()`` makes it survive power loss and is called every
  ``fsync_interval_ms`` by the forwarder, off the event loop. A power cut loses at most that window.
- **Torn tails are cut, counted and logged.** On open every segment is scanned; at the first record
  whose header, length or CRC does not check out the file is truncated there (a power cut mid-write
  leaves exactly that). Records behind a corrupt one in the same segment are lost with it: their
  bytes are counted in ``torn_bytes``. Appending always starts a fresh segment after a restart.
- **Freed only when acked.** ``ack_covered`` frees the records an :class:`plantwire.wire.Ack` covers
  (the cloud holds them in InfluxDB), ``free`` frees one record (events: on PUBACK). A segment file is
  deleted once none of its records is live. Each freeing appends a small tombstone record (lane 0,
  payload: ``(lane B, epoch q, lo Q, hi Q)`` ranges) so a restart does not bring freed records back.
  A tombstone lives in a later segment than the records it frees; if that segment is deleted first,
  or the tombstone was lost to a power cut, a restart re-sends those records once, which is harmless
  because the cloud's writes are idempotent (series + timestamp).
- **Its own space on a shared disk.** Every segment is preallocated to ``segment_bytes`` when it is
  created (``fallocate`` with KEEP_SIZE: the file's length still says where the records end), so
  appends into it never meet ENOSPC, whoever else fills the disk. ``wal/RESERVE``, ``reserve_segments``
  segments' worth of preallocated space, is kept beside the segments: when a new segment cannot be
  created because the disk is full, the reserve shrinks by one segment and the segment takes its place
  (``reserve_releases``); ``maintain()`` grows it back once space returns. So however full the disk, the
  log holds at least ``reserve_segments + 1`` segments of the newest data (default: a quarter of
  ``max_bytes``).
- **Disk full** (no segment can be created even so): the oldest segment is dropped, counted in
  ``dropped_disk_full_records`` as well as ``dropped_*``, and the creation retried; when only the
  full active segment is left it is dropped too (newest data wins, as with the bounds). Segments are
  small (by default ``max_bytes / 16``, at most 16 MiB), so a drop costs a sixteenth of the log, not all
  of it. Only when the log owns no space at all (started on a full disk) does ``append`` raise
  SpoolError; the forwarder then holds the batch in memory (counted as at risk) and retries.
- **Starts on a full disk.** If the first segment cannot be created the Spool opens anyway, with one
  clear log line, ``stats.no_segment = 1`` and appends failing until ``maintain()`` can create one.
- **Bounds drop the oldest, counted.** Over ``max_bytes`` the oldest whole segment goes (the active one
  never does); older than ``max_age_s`` a record goes. Every drop adds to ``dropped_records`` and
  ``dropped_samples`` and logs one line per decision, never per record.
- **One writer.** ``wal/LOCK`` is held with ``flock`` while a Spool is open: a second gateway (or a
  reload that forgot to close the first Spool) on the same state directory fails with SpoolError.
- **Thread-safe.** The event loop appends and reads, paho's thread frees on acks, a worker thread
  fsyncs; one lock guards the index, held only for in-memory work and short ``os`` calls (never while
  calling into paho). The index holds one small object per batch (not per sample).
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import enum
import errno
import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "FILE_HEADER", "RECORD_HEADER", "DropCause", "Lane", "Record", "Spool", "SpoolError", "SpoolSettings", "SpoolStats",
]

log = logging.getLogger(__name__)

FILE_HEADER = b"PWWAL\x00\x01\x00"
RECORD_MAGIC = b"PR"
RECORD_VERSION = 1
#: magic, version, lane, length, crc, epoch, seq, n, wall_ns
RECORD_HEADER = struct.Struct("<2sBBIIqQIq")
#: A header claiming a longer payload is treated as corrupt (wire.MAX_SAMPLES x 21 bytes fits easily).
MAX_RECORD_BYTES = 64 * 1024 * 1024
_SUFFIX = ".wal"
#: Lane value of a tombstone record: payload = n x (lane B, epoch q, lo Q, hi Q) ranges of freed records.
_TOMBSTONE = 0
_RANGE = struct.Struct("<BqQQ")
_RESERVE = "RESERVE"
#: Default segment size: a sixteenth of ``max_bytes`` (so dropping the oldest costs little), at most this.
MAX_DEFAULT_SEGMENT_BYTES = 16 * 1024**2
_FALLOC_FL_KEEP_SIZE = 1


class _Fallocate:
    """``fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, n)`` through libc: reserves blocks without changing the
    file's length, so O_APPEND writes and the recovery scan see only records. Filesystems without it
    (EOPNOTSUPP) fall back to plain appends (the log then competes for space like any writer)."""

    def __init__(self) -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fn = libc.fallocate
            fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
            fn.restype = ctypes.c_int
            self._fn: Callable[..., int] | None = fn
        except (OSError, AttributeError):
            self._fn = None

    def __call__(self, fd: int, nbytes: int) -> bool:
        """True if reserved, False if the filesystem cannot; raises OSError (ENOSPC, ...) otherwise."""
        if self._fn is None:
            return False
        if self._fn(fd, _FALLOC_FL_KEEP_SIZE, 0, nbytes) == 0:
            return True
        err = ctypes.get_errno()
        if err in (errno.EOPNOTSUPP, errno.ENOSYS):
            return False
        raise OSError(err, os.strerror(err))


class SpoolError(RuntimeError):
    """The log cannot be used (state directory not writable, a record larger than the limit)."""


class DropCause(enum.StrEnum):
    """Why records left the log unacknowledged (the cloud's gap ledger shows it as the gap's reason)."""

    BYTES_BOUND = "edge dropped: log over max_bytes"
    AGE_BOUND = "edge dropped: older than max_age_s"
    DISK_FULL = "edge dropped: disk full"
    MEMORY_QUEUE = "edge dropped: memory queue full"
    SHUTDOWN = "edge dropped: unlogged at shutdown"


class Lane(enum.IntEnum):
    TELEMETRY = 1
    EVENTS = 2


class SpoolSettings(BaseModel):
    """Write-ahead log and forwarding settings (embedded in EdgeConfig as ``spool``).

    Defaults are sized for the demo plant (15,000 signals at 1 Hz, ~2 bytes per sample in the log
    with wire v2 (3.3 with v1), ~30-50 kB/s, see bench/RESULTS.md): 4 GiB holds a day or more of
    broker or cloud outage without a drop, safe on a small edge box; size ``max_bytes`` for the
    longest outage you must ride out. The age bound equals the broker session expiry. The replay cap
    is 6x the demo's live rate: bench/recovery.py measured that 10x (150 k/s) outruns InfluxDB 1.6 on
    a 2-core box, so live batches queue behind replayed ones in the broker (live lag p95 9.8 s), while
    90 k/s drained a 10-minute outage at 5.9x live with live lag p95 1.8 s and nothing lost. Set it to
    about 6x your plant's live rate (pacing on the cloud's ack lag would adapt by itself; not done).
    200 ms of group commit costs the event loop nothing
    (the fsync runs in a thread) and bounds what a power cut can take to the last 200 ms of batches.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_bytes: int = Field(default=4 * 1024**3, ge=64 * 1024, description="disk space the log may use")
    max_age_s: float = Field(default=7 * 86400.0, gt=0, description="records older than this are dropped")
    segment_bytes: int = Field(
        default=0, ge=0,
        description="size at which a segment is closed (preallocated); 0: max_bytes / 16, at most 16 MiB",
    )
    fsync_interval_ms: int = Field(default=200, ge=1, le=60_000, description="group-commit interval")
    resend_timeout_s: float = Field(default=60.0, gt=0, description="re-send if not acked after this")
    replay_rate_samples_per_s: int = Field(default=90_000, ge=1, description="rate cap of the back-log replay")
    reserve_segments: int = Field(
        default=3, ge=0, description="segments' worth of disk kept preallocated for the log on a full disk",
    )
    memory_queue_bytes: int = Field(
        default=64 * 1024**2, ge=0,
        description="batches that cannot be logged (no disk space at all) wait in memory up to this, then the "
        "oldest are dropped, counted",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_segment(cls, data: object) -> object:
        if isinstance(data, dict) and not data.get("segment_bytes"):
            max_bytes = int(data.get("max_bytes", 4 * 1024**3))
            data = {**data, "segment_bytes": max(4096, min(MAX_DEFAULT_SEGMENT_BYTES, max_bytes // 16) // 4096 * 4096)}
        return data

    @model_validator(mode="after")
    def _segment_fits(self) -> Self:
        if self.segment_bytes < 4096:
            raise ValueError(f"segment_bytes ({self.segment_bytes}) must be at least 4096")
        if self.segment_bytes * 4 > self.max_bytes:
            raise ValueError(
                f"segment_bytes ({self.segment_bytes}) must be at most a quarter of max_bytes ({self.max_bytes}), "
                "since the bytes bound drops whole segments"
            )
        return self


@dataclass(slots=True)
class Record:
    """Where one live batch is and what the forwarder did with it (one object per batch, not per sample)."""

    lane: Lane
    epoch: int
    seq: int
    n: int
    wall_ns: int
    segment: int
    offset: int  # of the payload in the segment file
    length: int
    sent_s: float = 0.0  # monotonic time of the last publish; 0.0 = not yet sent by this process
    sends: int = 0

    @property
    def key(self) -> tuple[int, int, int]:
        return (int(self.lane), self.epoch, self.seq)


@dataclass(slots=True)
class SpoolStats:
    bytes: int = 0  # segment files on disk
    segments: int = 0
    records: int = 0  # live (unacked) records
    samples: int = 0  # live samples
    appended_records: int = 0
    appended_samples: int = 0
    appended_bytes: int = 0
    acked_records: int = 0
    acked_samples: int = 0
    dropped_records: int = 0  # forced out by the bounds (bytes or age), oldest first
    dropped_samples: int = 0
    dropped_bytes_bound_records: int = 0
    dropped_age_bound_records: int = 0
    recovered_records: int = 0  # live records found on open
    recovered_samples: int = 0
    torn_cuts: int = 0  # segments cut at a torn or corrupt record on open
    torn_bytes: int = 0
    dropped_disk_full_records: int = 0
    dropped_disk_full_samples: int = 0
    # Of the dropped: records published at least once before the drop (a broker that comes back may still
    # deliver them from the MQTT client's in-flight queue, so "dropped" is then an upper bound by these).
    dropped_sent_records: int = 0
    dropped_sent_samples: int = 0
    reserve_bytes: int = 0  # gauge: preallocated space held back for the next segment on a full disk
    reserve_releases: int = 0  # times the reserve was given up to create a segment on a full disk
    no_segment: int = 0  # gauge: 1 while the log has no segment to append to (full disk; appends fail)
    prealloc_unsupported: int = 0  # 1 if the filesystem cannot preallocate (the log competes for space)
    tombstone_errors: int = 0
    syncs: int = 0
    sync_s: float = 0.0  # time spent in fsync


@dataclass(slots=True)
class _Segment:
    id: int
    path: Path
    size: int
    live: int = 0
    keys: list[tuple[int, int, int]] | None = None


class _Chain:
    """The live records of one (lane, epoch) in sequence order, with lazy deletion.

    ``seqs`` is ascending (a gateway's sequence numbers only grow within a boot epoch); freed entries
    stay in ``seqs`` until the head passes them, so freeing by watermark costs only what it frees.
    """

    __slots__ = ("head", "live", "seqs")

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.head = 0
        self.live: dict[int, Record] = {}

    def add(self, rec: Record) -> None:
        if self.seqs and rec.seq <= self.seqs[-1]:  # out of order or a replaced copy (rare); keep sorted
            i = bisect.bisect_left(self.seqs, rec.seq, lo=self.head)
            if i == len(self.seqs) or self.seqs[i] != rec.seq:
                self.seqs.insert(i, rec.seq)
        else:
            self.seqs.append(rec.seq)
        self.live[rec.seq] = rec

    def compact(self) -> None:
        while self.head < len(self.seqs) and self.seqs[self.head] not in self.live:
            self.head += 1
        if self.head > 4096 and self.head * 2 > len(self.seqs):
            del self.seqs[: self.head]
            self.head = 0

    def first(self) -> Record | None:
        self.compact()
        return self.live[self.seqs[self.head]] if self.head < len(self.seqs) else None

    def iter_live(self) -> Iterator[Record]:
        for s in self.seqs[self.head :]:
            rec = self.live.get(s)
            if rec is not None:
                yield rec

    def range(self, lo: int, hi: int) -> list[Record]:
        i = bisect.bisect_left(self.seqs, lo, lo=self.head)
        j = bisect.bisect_right(self.seqs, hi, lo=i)
        return [r for s in self.seqs[i:j] if (r := self.live.get(s)) is not None]


def _crc(header: bytes, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(header[12:], zlib.crc32(header[:8])))


class Spool:
    """A segmented, CRC-checked, bounded write-ahead log of encoded batches under ``state_dir/wal``.

    Opening scans and repairs what is on disk (see the module docstring); ``close()`` syncs and
    closes. ``clock_ns`` (wall clock) is injectable so tests can age records without sleeping.
    """

    def __init__(
        self,
        settings: SpoolSettings,
        state_dir: Path,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        on_drop: Callable[[bytes, DropCause], None] | None = None,
    ) -> None:
        """``on_drop`` receives the payload and cause of every telemetry record dropped by a bound or a full
        disk (read back before its segment goes; called with the lock held, so it must not call the Spool):
        the app counts the dropped samples per signal and reports the dropped sequence ranges from it."""
        self.settings = settings
        self._on_drop = on_drop
        self.dir = Path(state_dir) / "wal"
        self.stats = SpoolStats()
        self._clock_ns = clock_ns
        self._lock = threading.RLock()
        self._segments: dict[int, _Segment] = {}  # insertion order = age
        self._chains: dict[tuple[int, int], _Chain] = {}  # (lane, epoch) -> chain, insertion order = age
        self._read_fds: dict[int, int] = {}
        self._fd = -1
        self._active: _Segment | None = None
        self._dirty = False
        self._closed = False
        self._fallocate = _Fallocate()
        self._reserve_path = self.dir / _RESERVE
        self._last_space_log_s = -1e9
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o640)
        except OSError as exc:
            raise SpoolError(f"spool: cannot create {self.dir}: {exc}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            raise SpoolError(f"spool: {self.dir} is in use by another process or Spool") from exc
        try:
            self._recover()
        except OSError as exc:
            raise SpoolError(f"spool: cannot read the log in {self.dir}: {exc}") from exc
        if self._reserve_path.exists():
            self.stats.reserve_bytes = self._reserve_path.stat().st_size
        try:
            try:
                self._rotate()
            except SpoolError:
                if not self._release_reserve():  # a full disk at start: the reserve is for this
                    raise
                self._rotate()
        except SpoolError as exc:
            self.stats.no_segment = 1
            log.error("%s; the log starts without space (batches are held in memory and retried)", exc)
        self._ensure_reserve()

    # -- opening ----------------------------------------------------------------------------------
    def _recover(self) -> None:
        paths = sorted(p for p in self.dir.iterdir() if p.suffix == _SUFFIX and p.stem.isdigit())
        for p in self.dir.iterdir():
            if p.suffix == ".tmp":
                p.unlink(missing_ok=True)
        for path in paths:
            seg = _Segment(int(path.stem), path, 0, 0, [])
            self._segments[seg.id] = seg
            self._active = seg  # not deleted while its own tombstones are applied
            data = path.read_bytes()
            good = self._scan(seg, data)
            if good < len(data):
                self.stats.torn_cuts += 1
                self.stats.torn_bytes += len(data) - good
                log.warning(
                    "spool: %s: torn or corrupt record at byte %d, cut %d bytes (records behind it are lost)",
                    path, good, len(data) - good,
                )
                if good <= len(FILE_HEADER):
                    good = 0
                with open(path, "r+b") as f:
                    f.truncate(good)
                    os.fsync(f.fileno())
            seg.size = good
            self.stats.bytes += seg.size
            self._active = None
            if seg.live == 0:
                self._delete_segment(seg)
        self.stats.segments = len(self._segments)
        self.stats.recovered_records = self.stats.records
        self.stats.recovered_samples = self.stats.samples
        if self.stats.recovered_records:
            log.info(
                "spool: %d unacked records (%d samples) found in %d segments of %s",
                self.stats.recovered_records, self.stats.recovered_samples, len(self._segments), self.dir,
            )

    def _scan(self, seg: _Segment, data: bytes) -> int:
        """Index the good records of one segment; return the offset of the first bad byte (or the end)."""
        if data[: len(FILE_HEADER)] != FILE_HEADER:
            return 0
        mv = memoryview(data)
        pos = len(FILE_HEADER)
        hs = RECORD_HEADER.size
        while pos < len(data):
            if pos + hs > len(data):
                return pos
            header = data[pos : pos + hs]
            magic, version, lane, length, crc, epoch, seq, n, wall_ns = RECORD_HEADER.unpack(header)
            if magic != RECORD_MAGIC or version != RECORD_VERSION or lane not in (0, 1, 2):
                return pos
            if length > MAX_RECORD_BYTES or pos + hs + length > len(data):
                return pos
            if _crc(header, mv[pos + hs : pos + hs + length]) != crc:
                return pos
            if lane == _TOMBSTONE:
                if length != n * _RANGE.size:
                    return pos
                for i in range(n):
                    r_lane, r_epoch, lo, hi = _RANGE.unpack_from(data, pos + hs + i * _RANGE.size)
                    chain = self._chains.get((r_lane, r_epoch))
                    for rec in chain.range(lo, hi) if chain is not None else ():
                        self._unindex(rec)
            else:
                self._index(Record(Lane(lane), epoch, seq, n, wall_ns, seg.id, pos + hs, length), seg)
            pos += hs + length
        return pos

    def _index(self, rec: Record, seg: _Segment) -> None:
        chain = self._chains.get((rec.lane, rec.epoch))
        if chain is None:
            chain = self._chains[(rec.lane, rec.epoch)] = _Chain()
        old = chain.live.get(rec.seq)
        if old is not None:  # the same batch twice (a re-append after a crash): the newer copy wins
            self._unindex(old)
            log.warning("spool: record lane=%d epoch=%d seq=%d appears twice; keeping the newer", *old.key)
            chain = self._chains.setdefault((rec.lane, rec.epoch), chain)  # _unindex drops emptied chains
        chain.add(rec)
        seg.live += 1
        assert seg.keys is not None
        seg.keys.append(rec.key)
        self.stats.records += 1
        self.stats.samples += rec.n

    def _unindex(self, rec: Record) -> None:
        """Remove a live record from the index; delete its segment when nothing in it is live."""
        chain = self._chains[(rec.lane, rec.epoch)]
        del chain.live[rec.seq]
        if not chain.live:
            del self._chains[(rec.lane, rec.epoch)]
        self.stats.records -= 1
        self.stats.samples -= rec.n
        seg = self._segments.get(rec.segment)
        if seg is not None:
            seg.live -= 1
            if seg.live == 0 and seg is not self._active:
                self._delete_segment(seg)

    def _delete_segment(self, seg: _Segment) -> None:
        self._segments.pop(seg.id, None)
        fd = self._read_fds.pop(seg.id, None)
        if fd is not None:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            seg.path.unlink()
        self.stats.bytes -= seg.size
        self.stats.segments = len(self._segments)

    # -- writing ------------------------------------------------------------------------------------
    def _rotate(self) -> None:
        """Start a new segment, then close the previous one (fsynced).

        If the new file cannot be made (disk full, permissions), the current segment stays active and
        grows past ``segment_bytes``; SpoolError tells the caller.
        """
        new_id = max(self._segments, default=0) + 1
        path = self.dir / f"{new_id:020d}{_SUFFIX}"
        fd = -1
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o640)
            if not self._fallocate(fd, self.settings.segment_bytes):
                self.stats.prealloc_unsupported = 1
            if os.write(fd, FILE_HEADER) != len(FILE_HEADER):
                raise OSError(errno.ENOSPC, "short write of the segment header")
            os.fsync(fd)
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)  # the new file's directory entry survives a power cut too
            finally:
                os.close(dfd)
        except OSError as exc:
            if fd >= 0:
                os.close(fd)
                path.unlink(missing_ok=True)
            raise SpoolError(f"spool: cannot create segment {path}: {exc}") from exc
        old = self._active
        if old is not None:
            os.fsync(self._fd)
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, old.size)  # give back the unused preallocated tail
            os.close(self._fd)
            self._fd = -1
            if old.live == 0:
                self._delete_segment(old)
        seg = _Segment(new_id, path, len(FILE_HEADER), 0, [])
        self._segments[new_id] = seg
        self._active = seg
        self._fd = fd
        self.stats.bytes += seg.size
        self.stats.segments = len(self._segments)
        self.stats.no_segment = 0

    def _rotate_on_full_disk(self) -> None:
        """Start a new segment even on a full disk (caller holds the lock); raises SpoolError if nothing helps.

        In order: plain creation; release the reserve and retry; drop the oldest closed segment (counted)
        and retry, until none is left; finally drop the full active segment itself (counted) so the new
        one takes its space. Newest data wins over the oldest, as with the bounds.
        """
        while True:
            try:
                self._rotate()
                return
            except SpoolError as exc:
                cause = exc.__cause__
                if not isinstance(cause, OSError) or cause.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                if self._release_reserve():
                    continue
                victim = next((g for g in self._segments.values() if g is not self._active), self._active)
                if victim is None:
                    raise
                if victim is self._active:
                    os.close(self._fd)
                    self._fd = -1
                    self._active = None
                    self.stats.no_segment = 1
                recs, samples = self._drop_segment(victim, DropCause.DISK_FULL)
                self.stats.dropped_disk_full_records += recs
                self.stats.dropped_disk_full_samples += samples
                log.error(
                    "spool: disk full: dropped the oldest segment %s (%d unacked records, %d samples) to make room",
                    victim.path.name, recs, samples,
                )

    def _release_reserve(self) -> bool:
        """Give one segment of the reserve to the log (caller holds the lock); False if there is none."""
        if self.stats.reserve_bytes == 0:
            return False
        left = max(0, self.stats.reserve_bytes - self.settings.segment_bytes)
        try:
            if left:
                os.truncate(self._reserve_path, left)
            else:
                self._reserve_path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("spool: cannot shrink the reserve %s: %s", self._reserve_path, exc)
            return False
        self.stats.reserve_bytes = left
        self.stats.reserve_releases += 1
        log.warning("spool: disk full: released the log's reserve (%s) for a new segment", self._reserve_path)
        return True

    def _ensure_reserve(self) -> None:
        """Make the reserve whole if the disk has room (a failure is normal on a full disk)."""
        size = self.settings.segment_bytes * self.settings.reserve_segments
        if self.stats.reserve_bytes >= size or self._closed:
            return
        have = self.stats.reserve_bytes
        try:
            fd = os.open(self._reserve_path, os.O_RDWR | os.O_CREAT, 0o640)
        except OSError as exc:
            self._log_reserve(size, exc)
            return
        try:
            os.posix_fallocate(fd, 0, size)  # grows in place: only the missing part needs free space
            have = size
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, have)  # give back a partial allocation
            self._log_reserve(size, exc)
        finally:
            os.close(fd)
        self.stats.reserve_bytes = have

    def _log_reserve(self, size: int, exc: OSError) -> None:
        now = time.monotonic()
        if now - self._last_space_log_s >= 60.0:
            self._last_space_log_s = now
            log.warning("spool: cannot make the %d-byte reserve %s whole yet: %s", size, self._reserve_path, exc)

    def maintain(self) -> None:
        """Periodic repair (the forwarder calls it every second): a segment to append to if the log had
        none, and the reserve if it was released. Cheap when both exist."""
        with self._lock:
            if self._closed:
                return
            if self._active is None:
                try:
                    self._rotate()
                    log.warning("spool: disk space is back: the log has a segment again")
                except SpoolError:
                    return
            self._ensure_reserve()

    def append(self, payload: bytes, *, epoch: int, seq: int, n_samples: int, lane: Lane = Lane.TELEMETRY) -> Record:
        """Write one batch to the log (page cache; durable at the next ``sync``) and index it as live.

        Enforces the bytes bound first, so the log never exceeds ``max_bytes`` by more than one record.
        A full disk drops the oldest segment (counted) to make room. Raises SpoolError for a payload
        over MAX_RECORD_BYTES or a write that still fails: the caller decides whether to publish anyway;
        the record is then not in the log.
        """
        length = len(payload)
        if length > MAX_RECORD_BYTES:
            raise SpoolError(f"spool: record of {length} bytes exceeds MAX_RECORD_BYTES={MAX_RECORD_BYTES}")
        with self._lock:
            if self._closed:
                raise SpoolError("spool: closed")
            if self._active is None:
                self._rotate()  # SpoolError: still no space; the caller holds the batch and retries
            assert self._active is not None
            seg_full = self._active.size + RECORD_HEADER.size + length > self.settings.segment_bytes
            if seg_full and self._active.size > len(FILE_HEADER):
                try:
                    self._rotate_on_full_disk()
                except SpoolError as exc:
                    if self._active is None:
                        raise
                    log.error("%s; appending to the current segment", exc)
            self._enforce_bytes(RECORD_HEADER.size + length)
            wall_ns = self._clock_ns()
            offset = self._write(int(lane), payload, epoch, seq, n_samples, wall_ns, make_room=True)
            seg = self._active
            rec = Record(lane, epoch, seq, n_samples, wall_ns, seg.id, offset, length)
            written = RECORD_HEADER.size + length
            self._index(rec, seg)
            self.stats.appended_records += 1
            self.stats.appended_samples += n_samples
            self.stats.appended_bytes += written
            return rec

    def _write(
        self, lane: int, payload: bytes, epoch: int, seq: int, n: int, wall_ns: int, *, make_room: bool
    ) -> int:
        """Append one record to the active segment (caller holds the lock); returns its payload offset.

        A full disk (ENOSPC, or a short write) with ``make_room`` drops the oldest segment, counted
        like the bytes bound, and tries again: the newest data wins over the oldest, as with the bounds.
        """
        seg = self._active
        assert seg is not None
        fields = (RECORD_MAGIC, RECORD_VERSION, lane, len(payload), 0, epoch, seq, n, wall_ns)
        header = bytearray(RECORD_HEADER.pack(*fields))
        struct.pack_into("<I", header, 8, _crc(bytes(header), payload))
        total = len(header) + len(payload)
        while True:
            try:
                written = os.writev(self._fd, [header, payload])
                if written == total:
                    break
                os.ftruncate(self._fd, seg.size)  # keep the file a clean sequence of records
                err: OSError = OSError(errno.ENOSPC, f"short write ({written} of {total} bytes)")
            except OSError as exc:
                err = exc
            oldest = next((g for g in self._segments.values() if g is not seg), None)
            if err.errno != errno.ENOSPC or not make_room or oldest is None:
                raise SpoolError(f"spool: write to {seg.path} failed: {err}") from err
            recs, samples = self._drop_segment(oldest, DropCause.DISK_FULL)
            self.stats.dropped_disk_full_records += recs
            self.stats.dropped_disk_full_samples += samples
            log.error("spool: disk full: dropped the oldest segment, %d unacked records, %d samples", recs, samples)
        offset = seg.size + len(header)
        seg.size += total
        self.stats.bytes += total
        self._dirty = True
        return offset

    def _tombstone(self, freed: list[Record]) -> None:
        """Log which records were freed, so a restart does not bring them back (caller holds the lock).

        Best effort: if it cannot be written, a restart re-sends those records once, which is harmless.
        """
        if not freed or self._closed or self._active is None:
            return
        keys = sorted((int(r.lane), r.epoch, r.seq) for r in freed)
        ranges: list[list[int]] = []
        for lane, epoch, seq in keys:
            last = ranges[-1] if ranges else None
            if last is not None and last[0] == lane and last[1] == epoch and last[3] + 1 == seq:
                last[3] = seq
            else:
                ranges.append([lane, epoch, seq, seq])
        payload = b"".join(_RANGE.pack(*r) for r in ranges)
        try:
            self._write(_TOMBSTONE, payload, 0, 0, len(ranges), self._clock_ns(), make_room=False)
        except SpoolError as exc:
            self.stats.tombstone_errors += 1
            log.warning("%s (freed records may be re-sent once after a restart)", exc)

    def sync(self) -> None:
        """fsync what was appended since the last call (group commit); safe to call from any thread."""
        with self._lock:
            if not self._dirty or self._fd < 0:
                return
            fd = os.dup(self._fd)  # a rotation may close the original while we fsync outside the lock
            self._dirty = False
        t0 = time.perf_counter()
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        dt = time.perf_counter() - t0
        with self._lock:
            self.stats.syncs += 1
            self.stats.sync_s += dt

    # -- bounds -------------------------------------------------------------------------------------
    def _enforce_bytes(self, incoming: int) -> None:
        limit = self.settings.max_bytes
        if self.stats.bytes + incoming <= limit:
            return
        recs = samples = segs = 0
        for seg in list(self._segments.values()):
            if self.stats.bytes + incoming <= limit or seg is self._active:
                break
            r, s = self._drop_segment(seg, DropCause.BYTES_BOUND)
            recs, samples, segs = recs + r, samples + s, segs + 1
        self.stats.dropped_bytes_bound_records += recs
        log.error(
            "spool: over max_bytes=%d: dropped the %d oldest segments, %d unacked records, %d samples",
            limit, segs, recs, samples,
        )

    def _report_drop(self, rec: Record, cause: DropCause) -> None:
        """Hand a dropped telemetry record's payload to ``on_drop`` (caller holds the lock; record still live)."""
        if self._on_drop is None or rec.lane != Lane.TELEMETRY:
            return
        try:
            payload = self.read(rec)
        except (SpoolError, OSError) as exc:
            log.warning("spool: dropped record %s cannot be read back for per-signal counts: %s", rec.key, exc)
            return
        self._on_drop(payload, cause)

    def _drop_segment(self, seg: _Segment, cause: DropCause) -> tuple[int, int]:
        recs = samples = 0
        for lane, epoch, seq in seg.keys or ():
            chain = self._chains.get((lane, epoch))
            rec = chain.live.get(seq) if chain is not None else None
            if rec is not None and rec.segment == seg.id:
                self._report_drop(rec, cause)
                recs += 1
                samples += rec.n
                if rec.sends:
                    self.stats.dropped_sent_records += 1
                    self.stats.dropped_sent_samples += rec.n
                self._unindex(rec)  # deletes the segment with its last live record
        if seg.id in self._segments:
            self._delete_segment(seg)
        self.stats.dropped_records += recs
        self.stats.dropped_samples += samples
        return recs, samples

    def enforce_age(self) -> tuple[int, int]:
        """Drop live records older than ``max_age_s`` (oldest first); returns (records, samples) dropped."""
        cutoff = self._clock_ns() - int(self.settings.max_age_s * 1e9)
        recs = samples = 0
        with self._lock:
            freed: list[Record] = []
            for chain in list(self._chains.values()):
                while (rec := chain.first()) is not None and rec.wall_ns < cutoff:
                    self._report_drop(rec, DropCause.AGE_BOUND)
                    recs += 1
                    samples += rec.n
                    if rec.sends:
                        self.stats.dropped_sent_records += 1
                        self.stats.dropped_sent_samples += rec.n
                    self._unindex(rec)
                    freed.append(rec)
            self._tombstone(freed)
            if recs:
                self.stats.dropped_records += recs
                self.stats.dropped_samples += samples
                self.stats.dropped_age_bound_records += recs
        if recs:
            log.error(
                "spool: %d unacked records (%d samples) older than max_age_s=%g dropped",
                recs, samples, self.settings.max_age_s,
            )
        return recs, samples

    # -- acknowledgement ---------------------------------------------------------------------------
    def free(self, rec: Record) -> bool:
        """Free one record (delivered); False if it was already gone."""
        return self._remove(rec, acked=True)

    def discard(self, rec: Record) -> bool:
        """Drop one live record that cannot be delivered (unreadable); counted in ``dropped_*``."""
        return self._remove(rec, acked=False)

    def _remove(self, rec: Record, *, acked: bool) -> bool:
        with self._lock:
            chain = self._chains.get((rec.lane, rec.epoch))
            if chain is None or chain.live.get(rec.seq) is not rec:
                return False
            self._unindex(rec)
            self._tombstone([rec])
            if acked:
                self.stats.acked_records += 1
                self.stats.acked_samples += rec.n
            else:
                self.stats.dropped_records += 1
                self.stats.dropped_samples += rec.n
            return True

    def ack_covered(
        self, epoch: int, watermark: int, ranges: tuple[tuple[int, int], ...] = (), lane: Lane = Lane.TELEMETRY
    ) -> tuple[int, int]:
        """Free the records of ``epoch`` with seq <= watermark or inside a range; returns (records, samples)."""
        recs = samples = 0
        with self._lock:
            chain = self._chains.get((int(lane), epoch))
            if chain is None:
                return 0, 0
            freed: list[Record] = []
            while (rec := chain.first()) is not None and rec.seq <= watermark:
                freed.append(rec)
                self._unindex(rec)
            for lo, hi in ranges:
                for rec in chain.range(lo, hi):
                    freed.append(rec)
                    self._unindex(rec)
            self._tombstone(freed)
            recs, samples = len(freed), sum(r.n for r in freed)
            self.stats.acked_records += recs
            self.stats.acked_samples += samples
        return recs, samples

    # -- reading ------------------------------------------------------------------------------------
    def read(self, rec: Record) -> bytes:
        """The payload of a live record (for re-sending), CRC-checked again; raises SpoolError if damaged."""
        with self._lock:
            fd = self._read_fds.get(rec.segment)
            if fd is None:
                seg = self._segments.get(rec.segment)
                if seg is None:
                    raise SpoolError(f"spool: segment {rec.segment} of record {rec.key} is gone")
                fd = self._read_fds[rec.segment] = os.open(seg.path, os.O_RDONLY)
            hs = RECORD_HEADER.size
            data = os.pread(fd, hs + rec.length, rec.offset - hs)
        header, payload = data[:hs], data[hs:]
        if len(payload) != rec.length or RECORD_HEADER.unpack(header)[4] != _crc(header, payload):
            raise SpoolError(f"spool: record {rec.key} in segment {rec.segment} fails its CRC on re-read")
        return payload

    def live(self, lane: Lane | None = None) -> list[Record]:
        """Live records in (epoch, seq) order (older boot epochs first), optionally of one lane."""
        with self._lock:
            keys = sorted(k for k in self._chains if lane is None or k[0] == int(lane))
            return [r for k in keys for r in self._chains[k].iter_live()]

    def get(self, lane: Lane, epoch: int, seq: int) -> Record | None:
        with self._lock:
            chain = self._chains.get((int(lane), epoch))
            return chain.live.get(seq) if chain is not None else None

    def oldest_wall_ns(self) -> int | None:
        """Append time of the oldest live record, or None when everything is acked."""
        with self._lock:
            firsts = [r.wall_ns for c in self._chains.values() if (r := c.first()) is not None]
        return min(firsts) if firsts else None

    def stats_dict(self) -> dict[str, float]:
        with self._lock:
            d: dict[str, float] = asdict(self.stats)
        oldest = self.oldest_wall_ns()
        d["oldest_unacked_age_s"] = 0.0 if oldest is None else max(0.0, (self._clock_ns() - oldest) / 1e9)
        return d

    def close(self) -> None:
        """fsync and close; the log is reopened (and scanned) by a new Spool on the same directory."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._fd >= 0:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = -1
            for fd in self._read_fds.values():
                os.close(fd)
            self._read_fds.clear()
            os.close(self._lock_fd)  # releases the flock

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
