"""The run mark: what this edge run has read and numbered, kept where a kill -9 cannot erase it.

``state_dir/run.mark`` is a fixed-size file mapped into memory (``MAP_SHARED``): every store is in the
kernel's page cache at once, so it survives the process being killed at any instruction, at the cost
of a memory write (no syscall on the hot path). It is flushed (``msync``) on a clean stop; a power cut
may lose the last few seconds of it, as it may the log's last group commit.

What it holds, and who reads it:

- this run's boot epoch and the next telemetry sequence number it would have assigned: after a crash
  the next run reports "epoch E ended at seq N-1, in a crash" to the cloud, whose gap ledger then shows
  every number of that epoch that never arrived as a gap with reason "edge crash", including the
  tail that a ledger cannot otherwise see;
- samples in the frame buffer (read from a PLC, not yet in a batch) and samples of batches held
  unlogged and unsent in memory: what a crash certainly loses, reported by the next run;
- samples dropped per signal (log bounds, full disk, memory queue), so read = stored + dropped holds
  signal by signal even for a run that was killed, and the newest ``MAX_DROPS`` dropped sequence ranges
  with their cause (a killed run's last status may never have reached the broker; the next run
  reports them, and the cloud's ledger names those gaps by the cause);
- samples read per signal and the newest source timestamp per signal (carried over from run to run),
  updated at every flush. The next run drops samples of source-stamped (OPC-UA) signals at or before
  that timestamp as re-reads (OPC-UA re-delivers a slow signal's last value with its old source
  timestamp on subscribing), so "read" counts a sample once across restarts;
  OPC-UA sources back-fill from these timestamps where the server keeps history;
- whether the run stopped cleanly.

If the file cannot be created (state disk full on the first start) the mark lives in anonymous memory:
the daemon runs, says so once, and a crash then cannot be reconciled (``persistent`` is False) until
``try_persist()`` (called every few seconds by the app) finds space and moves the mark to its file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["PreviousRun", "RunMark"]

log = logging.getLogger(__name__)

_FILE = "run.mark"
_MAGIC = int.from_bytes(b"PWMARK\x00\x02", "little")
# Header slots (int64 each).
(MAGIC, N_SIGNALS, TABLE_HASH, BOOT_EPOCH, NEXT_SEQ, STOPPED, PENDING, UNSENT, LAST_FLUSH, READ, DROPPED,
 N_DROPS, N_RUNS) = range(13)
_HEADER = 16  # slots reserved for the header
#: Dropped sequence ranges kept, newest last: (boot epoch, lo, hi, cause code) each. Carried from run to
#: run (each range names its epoch), so a run killed before it could report them is still reported.
MAX_DROPS = 64
#: Earlier runs' summaries kept, newest first (a crash loop with the broker down must not lose all but the
#: last run's accounting): boot epoch, next seq, crashed, dropped samples, buffer samples, unlogged samples.
MAX_RUNS = 8
_RUN_FIELDS = 6
_RUNS_AT = _HEADER + 4 * MAX_DROPS
_FIXED = _RUNS_AT + _RUN_FIELDS * MAX_RUNS


@dataclass(frozen=True, slots=True)
class PreviousRun:
    """What the last run left in its mark."""

    boot_epoch_ns: int
    next_seq: int  # sequence numbers 0 .. next_seq - 1 were assigned
    crashed: bool  # it did not stop cleanly (kill -9, power cut, OOM)
    buffer_samples: int  # read but still in the frame buffer when it died
    unlogged_samples: int  # in batches held unlogged and unsent in memory when it died
    dropped_samples: int  # its own counted drops (log bounds, full disk, memory queue)
    last_flush_ns: int  # wall clock of its last flush: a crash may have lost data read after it
    samples_read: int
    read_per_signal: np.ndarray  # int64 per signal
    dropped_per_signal: np.ndarray  # int64 per signal
    last_ts_ns: np.ndarray | None  # newest source timestamp per signal; None if the signal table changed
    drops: np.ndarray  # int64 (k, 4): boot epoch, lo, hi, cause code of dropped sequence ranges (carried)
    earlier: np.ndarray  # int64 (k, 6): the runs before it, newest first (see MAX_RUNS)

    @property
    def lost_samples(self) -> int:
        """Samples a crash certainly lost (0 after a clean stop)."""
        return self.buffer_samples + self.unlogged_samples if self.crashed else 0

    def row(self) -> list[int]:
        """This run as a history row (the fields of MAX_RUNS)."""
        unlogged = self.unlogged_samples if self.crashed else 0
        return [self.boot_epoch_ns, self.next_seq, int(self.crashed), self.dropped_samples + unlogged,
                self.buffer_samples if self.crashed else 0, unlogged]

    def summary(self) -> dict[str, int | bool]:
        return {
            "boot_epoch_ns": self.boot_epoch_ns,
            "next_seq": self.next_seq,
            "crashed": self.crashed,
            "buffer_samples": self.buffer_samples if self.crashed else 0,
            "unlogged_samples": self.unlogged_samples if self.crashed else 0,
            "dropped_samples": self.dropped_samples + (self.unlogged_samples if self.crashed else 0),
            "lost_samples": self.lost_samples,
            "last_flush_ns": self.last_flush_ns,
            "samples_read": self.samples_read,
        }


def read_previous(state_dir: Path) -> PreviousRun | None:
    """The mark in ``state_dir`` as it stands (None if absent or not a mark); tests read a killed run's."""
    path = Path(state_dir) / _FILE
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if len(data) < _HEADER * 8:
        return None
    h = np.frombuffer(data, dtype=np.int64, count=_HEADER)
    n = int(h[N_SIGNALS])
    if int(h[MAGIC]) != _MAGIC or n < 0 or len(data) < 8 * (_FIXED + 3 * n):
        return None
    arr = np.frombuffer(data, dtype=np.int64, count=_FIXED + 3 * n)
    k = min(max(int(h[N_DROPS]), 0), MAX_DROPS)
    return PreviousRun(
        boot_epoch_ns=int(h[BOOT_EPOCH]),
        next_seq=int(h[NEXT_SEQ]),
        crashed=int(h[STOPPED]) == 0,
        buffer_samples=int(h[PENDING]),
        unlogged_samples=int(h[UNSENT]),
        dropped_samples=int(h[DROPPED]),
        last_flush_ns=int(h[LAST_FLUSH]),
        samples_read=int(h[READ]),
        read_per_signal=arr[_FIXED + n : _FIXED + 2 * n].copy(),
        dropped_per_signal=arr[_FIXED + 2 * n : _FIXED + 3 * n].copy(),
        last_ts_ns=arr[_FIXED : _FIXED + n].copy(),
        drops=arr[_HEADER:_RUNS_AT].reshape(MAX_DROPS, 4)[:k].copy(),
        earlier=arr[_RUNS_AT:_FIXED].reshape(MAX_RUNS, _RUN_FIELDS)[: min(max(int(h[N_RUNS]), 0), MAX_RUNS)].copy(),
    )


class RunMark:
    """This run's mark (see the module docstring). ``head`` and the two arrays are views of the mapping."""

    def __init__(self, state_dir: Path, n_signals: int, table_hash: bytes, boot_epoch_ns: int) -> None:
        self.path = Path(state_dir) / _FILE
        hash_i = int.from_bytes(table_hash[:8].ljust(8, b"\0"), "little", signed=True)
        prev = read_previous(state_dir)
        if prev is not None and prev.last_ts_ns is not None:
            old_hash = int(np.frombuffer(self.path.read_bytes()[: 8 * _HEADER], dtype=np.int64)[TABLE_HASH])
            if old_hash != hash_i or prev.last_ts_ns.shape[0] != n_signals:
                prev = dataclasses.replace(prev, last_ts_ns=None)
        self.previous = prev
        size = 8 * (_FIXED + 3 * n_signals)
        self.persistent = True
        self._n = n_signals
        self._mm = self._map(size)
        self._bind(self._mm)
        self.head[:] = 0
        # Carried forward: a signal this run never reads (a slow one whose re-read was dropped) keeps the
        # newest timestamp any earlier run read, so the run after this one still recognises the re-read.
        self.last_ts_ns[:] = prev.last_ts_ns if prev is not None and prev.last_ts_ns is not None else 0
        self.read_per_signal[:] = 0
        self.dropped_per_signal[:] = 0
        self.drops[:] = 0
        self.runs[:] = 0
        if prev is not None:
            k = min(len(prev.drops), MAX_DROPS)
            self.drops[:k] = prev.drops[len(prev.drops) - k :]
            self.head[N_DROPS] = k
            rows = [prev.row(), *prev.earlier.tolist()][:MAX_RUNS]
            self.runs[: len(rows)] = rows
            self.head[N_RUNS] = len(rows)
        self.head[N_SIGNALS] = n_signals
        self.head[TABLE_HASH] = hash_i
        self.head[BOOT_EPOCH] = boot_epoch_ns
        self.head[MAGIC] = _MAGIC  # last: a half-initialised mark is not read as one

    def _bind(self, mm: mmap.mmap) -> None:
        n = self._n
        arr = np.frombuffer(mm, dtype=np.int64)
        self.head = arr[:_HEADER]
        self.drops = arr[_HEADER:_RUNS_AT].reshape(MAX_DROPS, 4)
        self.runs = arr[_RUNS_AT:_FIXED].reshape(MAX_RUNS, _RUN_FIELDS)
        self.last_ts_ns = arr[_FIXED : _FIXED + n]
        self.read_per_signal = arr[_FIXED + n : _FIXED + 2 * n]
        self.dropped_per_signal = arr[_FIXED + 2 * n : _FIXED + 3 * n]

    def try_persist(self) -> bool:
        """Move an in-memory mark to its file once the disk has room; True if it moved now.

        The arrays are new objects afterwards: owners re-read ``read_per_signal`` and friends.
        """
        if self.persistent:
            return False
        size = len(self._mm)
        content = bytes(self._mm)
        self.persistent = True
        mm = self._map(size, quiet=True)
        if not self.persistent:
            return False
        mm[:] = content
        self._mm = mm
        self._bind(mm)
        log.warning("run mark %s is on disk again", self.path)
        return True

    def _map(self, size: int, *, quiet: bool = False) -> mmap.mmap:
        """Map the file, reusing its blocks (it exists after the first run, so a full disk is no obstacle)."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
            try:
                if os.fstat(fd).st_size != size:
                    os.ftruncate(fd, 0)
                    os.posix_fallocate(fd, 0, size)
                else:
                    os.posix_fallocate(fd, 0, size)  # no-op when every block is there
                return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            finally:
                os.close(fd)
        except OSError as exc:
            self.persistent = False
            if quiet:
                with contextlib.suppress(OSError):
                    self.path.unlink(missing_ok=True)
                return mmap.mmap(-1, size)
            log.error(
                "run mark %s cannot be written (%s): running without it; a crash of this run cannot be "
                "reconciled (its unsent tail and buffered samples are then lost uncounted)", self.path, str(exc),
            )
            with contextlib.suppress(OSError):
                self.path.unlink(missing_ok=True)
            return mmap.mmap(-1, size)

    def add_drop(self, epoch: int, seq: int, cause: int) -> bool:
        """Note one dropped batch, merged into the newest range when it continues it; False if the oldest
        range had to be forgotten to make room."""
        k = int(self.head[N_DROPS])
        if k:
            last = self.drops[k - 1]
            if last[0] == epoch and last[2] + 1 == seq and last[3] == cause:
                last[2] = seq
                return True
        kept = True
        if k == MAX_DROPS:
            self.drops[:-1] = self.drops[1:].copy()
            k -= 1
            kept = False
        self.drops[k] = (epoch, seq, seq, cause)
        self.head[N_DROPS] = k + 1
        return kept

    def drop_list(self) -> np.ndarray:
        return self.drops[: int(self.head[N_DROPS])]

    def earlier_runs(self) -> list[dict[str, int | bool]]:
        """The runs before this one, newest first, as reported to the cloud (``previous_runs``)."""
        keys = ("boot_epoch_ns", "next_seq", "crashed", "dropped_samples", "buffer_samples", "unlogged_samples")
        out: list[dict[str, int | bool]] = []
        for row in self.runs[: int(self.head[N_RUNS])].tolist():
            d: dict[str, int | bool] = dict(zip(keys, row, strict=True))
            d["crashed"] = bool(d["crashed"])
            out.append(d)
        return out

    def close(self, *, stopped: bool) -> None:
        """Record a clean stop and flush the mapping to disk."""
        if stopped:
            self.head[STOPPED] = 1
        with contextlib.suppress(OSError, ValueError):
            self._mm.flush()
        # The numpy views keep the mapping alive; it is unmapped when they are gone.
