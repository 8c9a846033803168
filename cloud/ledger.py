"""Gap ledger: which telemetry sequence numbers of each (gateway, boot epoch) are durably stored.

A sequence number enters the ledger only after InfluxDB accepted the batch's points, so the
ledger is at once the accounting of what arrived (gaps: ranges missing below the highest number
seen) and the source of the ack watermark the edge frees its write-ahead log by
(:class:`plantwire.wire.Ack`). Each gateway process numbers its batches from 0 per boot epoch.

Stored as inclusive disjoint ``[lo, hi]`` ranges per key, ascending: a healthy stream is one
range whatever its length. A gap's age counts from when the ingestor first saw a number above
it, which is what a dashboard's "missing for 5 min" means. Persisted atomically (write, fsync,
rename) to ``state_dir/ledger.json`` after every durable write, *before* the MQTT
acknowledgements, so a restart neither forgets data it acknowledged nor invents gaps.

A run's end: the ledger sees only numbers that arrived, so the tail of a run that crashed (batches
numbered but never sent) is invisible to it. The next edge run reports how far the crashed epoch had
numbered (``close_epoch``, from the ``previous_run`` of its health status); numbers up to there that
never arrive are a gap with the reason given ("edge crash"). Numbers the edge's log still replays fill
their part of it as usual. The edge also reports the numbers it dropped itself (its log's bounds, a
full disk: ``mark_dropped``). Every gap carries a reason: the edge's drop cause when the edge reported
every number in it as dropped, the reason its epoch was closed with for the tail, else ``missing``
(lost or still on its way).

Bounds (a daemon runs for months): at most ``max_epochs_per_gateway`` boot epochs per gateway
(the oldest forgotten first, counted in ``forgotten_epochs``) and ``max_ranges`` ranges per epoch
(beyond it the range just above the watermark's is forgotten, counted in ``forgotten_ranges``: a
missing number is never merged into a durable range, since the edge would free it on our word).
"""

from __future__ import annotations

import bisect
import json
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from plantwire.wire import MAX_ACK_RANGES, Ack

__all__ = ["Gap", "GapLedger"]

_FILE = "ledger.json"


@dataclass(frozen=True, slots=True)
class Gap:
    gateway: str
    boot_epoch_ns: int
    lo: int
    hi: int
    since: float  # wall-clock seconds when the gap was first seen
    reason: str = "missing"  # or the reason the epoch was closed with ("edge crash") for its tail

    @property
    def batches(self) -> int:
        return self.hi - self.lo + 1


@dataclass
class _Epoch:
    los: list[int] = field(default_factory=list)
    his: list[int] = field(default_factory=list)
    marks: list[tuple[int, int, float]] = field(default_factory=list)  # hole (lo, hi) and when it opened
    site: str = ""
    updated: float = 0.0
    dropped: int = 0  # the edge's cumulative dropped-sample count last written to InfluxDB (for deltas)
    end: int = -1  # the last number the edge assigned in this epoch, once a later run reported it
    end_reason: str = ""
    drops: list[tuple[int, int, str]] = field(default_factory=list)  # ranges the edge dropped, with the cause


class GapLedger:
    """Thread-safe ranges of durable sequence numbers per (gateway, boot epoch), persisted."""

    def __init__(self, state_dir: Path, *, max_epochs_per_gateway: int = 32, max_ranges: int = 4096) -> None:
        self.path = Path(state_dir) / _FILE
        self.max_epochs_per_gateway = max_epochs_per_gateway
        self.max_ranges = max_ranges
        self._epochs: dict[tuple[str, int], _Epoch] = {}
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()  # the consuming and the writer thread may both save
        self.forgotten_epochs = 0
        self.forgotten_ranges = 0

    # -- updates ----------------------------------------------------------------------------------
    def add(
        self, gateway: str, boot_epoch_ns: int, seqs: Iterable[int], *, site: str = "", now: float | None = None
    ) -> int:
        """Mark sequence numbers durable; returns how many were already in the ledger (replays)."""
        now = time.time() if now is None else now
        dup = 0
        with self._lock:
            ep = self._epochs.get((gateway, boot_epoch_ns))
            if ep is None:
                ep = self._epochs[(gateway, boot_epoch_ns)] = _Epoch()
                self._bound_epochs(gateway)
            if site:
                ep.site = site
            ep.updated = now
            for s in seqs:
                dup += self._insert(ep, int(s), now)
            while len(ep.los) > self.max_ranges:
                # Forget the range just above the watermark's: never claim a missing number durable
                # (the edge would free it); the edge re-sends what it still holds of it (counted).
                del ep.los[1], ep.his[1]
                self.forgotten_ranges += 1
            self._prune_marks(ep)
        return dup

    def merge_ack(self, ack: Ack, *, site: str = "", now: float | None = None) -> None:
        """Fold in what a peer ingestor acknowledged (MQTT 5 shared subscriptions split one gateway's
        batches over several ingestors; each publishes the union, so the edge frees all of them)."""
        spans = ([(0, ack.watermark)] if ack.watermark >= 0 else []) + list(ack.ranges)
        if not spans:
            return
        now = time.time() if now is None else now
        with self._lock:
            ep = self._epochs.get((ack.gateway, ack.boot_epoch_ns))
            if ep is None:
                ep = self._epochs[(ack.gateway, ack.boot_epoch_ns)] = _Epoch()
                self._bound_epochs(ack.gateway)
            if site:
                ep.site = site
            ep.updated = now
            for lo, hi in spans:
                self._insert_span(ep, lo, hi, now)
            self._prune_marks(ep)

    def close_epoch(
        self, gateway: str, boot_epoch_ns: int, last_seq: int, reason: str, *, site: str = "", now: float | None = None
    ) -> bool:
        """Record that the edge numbered this epoch up to ``last_seq`` (idempotent); True if it was news.

        Numbers up to ``last_seq`` that are not durable become (or stay) gaps; the tail above the
        highest number seen carries ``reason``.
        """
        now = time.time() if now is None else now
        with self._lock:
            ep = self._epoch(gateway, boot_epoch_ns, site, now)
            if last_seq <= ep.end:
                return False
            top = ep.his[-1] if ep.his else -1
            if last_seq > top:
                ep.marks.append((max(top, ep.end) + 1, last_seq, now))
            ep.end = last_seq
            ep.end_reason = reason
            self._prune_marks(ep)
            return True

    def mark_dropped(
        self, gateway: str, boot_epoch_ns: int, lo: int, hi: int, reason: str, *, site: str = "",
        now: float | None = None,
    ) -> bool:
        """Record that the edge dropped numbers ``lo..hi`` (idempotent); True if it was news. At most
        ``max_ranges`` such ranges per epoch (the oldest forgotten: its gap then reads ``missing``)."""
        now = time.time() if now is None else now
        with self._lock:
            ep = self._epoch(gateway, boot_epoch_ns, site, now)
            for d_lo, d_hi, d_reason in ep.drops:
                if d_lo <= lo and hi <= d_hi and d_reason == reason:
                    return False
            if ep.drops and ep.drops[-1][2] == reason and ep.drops[-1][1] + 1 >= lo >= ep.drops[-1][0]:
                ep.drops[-1] = (ep.drops[-1][0], max(hi, ep.drops[-1][1]), reason)
            else:
                ep.drops.append((lo, hi, reason))
                ep.drops.sort()
                if len(ep.drops) > self.max_ranges:
                    del ep.drops[0]
            return True

    @staticmethod
    def _reason(ep: _Epoch, lo: int, hi: int, top: int) -> str:
        """Why ``lo..hi`` is missing: one drop cause covering all of it, the epoch's end reason for the
        tail, else "missing"."""
        causes = {r for d_lo, d_hi, r in ep.drops if d_lo <= hi and lo <= d_hi}
        covered = sum(min(hi, d_hi) - max(lo, d_lo) + 1 for d_lo, d_hi, _ in ep.drops if d_lo <= hi and lo <= d_hi)
        if len(causes) == 1 and covered >= hi - lo + 1:
            return causes.pop()
        if lo > top and ep.end_reason:
            return ep.end_reason
        return "missing"

    @staticmethod
    def _insert_span(ep: _Epoch, lo: int, hi: int, now: float) -> None:
        los, his = ep.los, ep.his
        top = his[-1] if his else -1
        if lo > top + 1:
            ep.marks.append((top + 1, lo - 1, now))
        i = bisect.bisect_left(his, lo - 1)  # first range that touches or lies above lo
        j = bisect.bisect_right(los, hi + 1)  # ranges before j start at or below hi + 1
        if i < j:
            lo = min(lo, los[i])
            hi = max(hi, his[j - 1])
        los[i:j] = [lo]
        his[i:j] = [hi]

    @classmethod
    def _prune_marks(cls, ep: _Epoch) -> None:
        """Keep the marks that still overlap a hole (O(marks log holes))."""
        holes = cls._holes(ep)
        his = [h[1] for h in holes]
        kept = []
        for m in ep.marks:
            i = bisect.bisect_left(his, m[0])  # first hole ending at or after the mark's start
            if i < len(holes) and holes[i][0] <= m[1]:
                kept.append(m)
        ep.marks = kept

    @staticmethod
    def _holes(ep: _Epoch) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        prev_hi = -1
        for lo, hi in zip(ep.los, ep.his, strict=True):
            if lo > prev_hi + 1:
                out.append((prev_hi + 1, lo - 1))
            prev_hi = hi
        if ep.end > prev_hi:  # the tail of a closed epoch that never arrived
            out.append((prev_hi + 1, ep.end))
        return out

    @staticmethod
    def _insert(ep: _Epoch, s: int, now: float) -> int:
        los, his = ep.los, ep.his
        i = bisect.bisect_right(los, s) - 1  # range starting at or below s
        if i >= 0 and s <= his[i]:
            return 1
        top = his[-1] if his else -1
        if s > top + 1:
            ep.marks.append((top + 1, s - 1, now))  # a new hole opens below s
        joins_left = i >= 0 and his[i] == s - 1
        joins_right = i + 1 < len(los) and los[i + 1] == s + 1
        if joins_left and joins_right:
            his[i] = his[i + 1]
            del los[i + 1], his[i + 1]
        elif joins_left:
            his[i] = s
        elif joins_right:
            los[i + 1] = s
        else:
            los.insert(i + 1, s)
            his.insert(i + 1, s)
        return 0

    def _epoch(self, gateway: str, boot_epoch_ns: int, site: str, now: float) -> _Epoch:
        """The epoch's entry, created (and the gateway's epochs bounded) when it is new. Caller holds the lock."""
        ep = self._epochs.get((gateway, boot_epoch_ns))
        if ep is None:
            ep = self._epochs[(gateway, boot_epoch_ns)] = _Epoch(site=site, updated=now)
            self._bound_epochs(gateway)
        return ep

    def _bound_epochs(self, gateway: str) -> None:
        mine = sorted(k for k in self._epochs if k[0] == gateway)
        while len(mine) > self.max_epochs_per_gateway:
            del self._epochs[mine.pop(0)]
            self.forgotten_epochs += 1

    # -- queries ----------------------------------------------------------------------------------
    def ranges(self, gateway: str, boot_epoch_ns: int) -> list[tuple[int, int]]:
        with self._lock:
            ep = self._epochs.get((gateway, boot_epoch_ns))
            return list(zip(ep.los, ep.his, strict=True)) if ep else []

    def ack(self, gateway: str, boot_epoch_ns: int) -> Ack:
        """The ack watermark message for one epoch (every number <= watermark durable)."""
        rs = self.ranges(gateway, boot_epoch_ns)
        if rs and rs[0][0] == 0:
            return Ack(gateway, boot_epoch_ns, rs[0][1], tuple(rs[1 : 1 + MAX_ACK_RANGES]))
        return Ack(gateway, boot_epoch_ns, -1, tuple(rs[:MAX_ACK_RANGES]))

    def gaps(self) -> list[Gap]:
        """Every missing range below the highest number seen, per epoch, with when it was first seen."""
        out: list[Gap] = []
        with self._lock:
            for (gw, boot), ep in self._epochs.items():
                top = ep.his[-1] if ep.his else -1
                for lo, hi in self._holes(ep):
                    since = min((m[2] for m in ep.marks if m[0] <= hi and lo <= m[1]), default=ep.updated)
                    reason = self._reason(ep, lo, hi, top)
                    out.append(Gap(gw, boot, lo, hi, since, reason))
        return out

    def epochs(self) -> list[tuple[str, int, str]]:
        """(gateway, boot epoch, site) of every epoch in the ledger."""
        with self._lock:
            return [(gw, boot, ep.site) for (gw, boot), ep in self._epochs.items()]

    def dropped_reported(self, gateway: str, boot_epoch_ns: int) -> int:
        """The edge's cumulative dropped samples already turned into ``dropped`` deltas (0 if unknown)."""
        with self._lock:
            ep = self._epochs.get((gateway, boot_epoch_ns))
            return ep.dropped if ep else 0

    def set_dropped_reported(self, gateway: str, boot_epoch_ns: int, total: int, *, site: str = "") -> None:
        with self._lock:
            ep = self._epoch(gateway, boot_epoch_ns, site, time.time())
            ep.dropped = max(ep.dropped, total)

    def site_of(self, gateway: str, boot_epoch_ns: int) -> str:
        with self._lock:
            ep = self._epochs.get((gateway, boot_epoch_ns))
            return ep.site if ep else ""

    # -- persistence ------------------------------------------------------------------------------
    def save(self) -> None:
        """Write the ledger atomically (tmp file, fsync, rename); raises OSError on a broken disk."""
        with self._lock:
            doc = {
                "version": 1,
                "epochs": [
                    {
                        "gateway": gw,
                        "boot_epoch_ns": boot,
                        "site": ep.site,
                        "updated": ep.updated,
                        "ranges": [[lo, hi] for lo, hi in zip(ep.los, ep.his, strict=True)],
                        "marks": [list(m) for m in ep.marks],
                        "dropped": ep.dropped,
                        "end": ep.end,
                        "end_reason": ep.end_reason,
                        "drops": [list(d) for d in ep.drops],
                    }
                    for (gw, boot), ep in self._epochs.items()
                ],
            }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with self._save_lock:
            with open(tmp, "w") as f:
                json.dump(doc, f, separators=(",", ":"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)

    def load(self) -> int:
        """Read the saved ledger (absent: empty); returns the number of epochs. Raises ValueError if corrupt."""
        if not self.path.exists():
            return 0
        try:
            doc = json.loads(self.path.read_text())
            epochs: dict[tuple[str, int], _Epoch] = {}
            for e in doc["epochs"]:
                ep = _Epoch(
                    site=str(e.get("site", "")), updated=float(e.get("updated", 0.0)), dropped=int(e.get("dropped", 0)),
                    end=int(e.get("end", -1)), end_reason=str(e.get("end_reason", "")),
                    drops=[(int(lo), int(hi), str(r)) for lo, hi, r in e.get("drops", [])],
                )
                for lo, hi in e["ranges"]:
                    ep.los.append(int(lo))
                    ep.his.append(int(hi))
                ep.marks = [(int(lo), int(hi), float(t)) for lo, hi, t in e.get("marks", [])]
                epochs[(str(e["gateway"]), int(e["boot_epoch_ns"]))] = ep
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{self.path}: unreadable gap ledger ({exc})") from exc
        with self._lock:
            self._epochs = epochs
        return len(epochs)
