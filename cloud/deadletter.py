"""Dead-letter store: payloads and lines the ingestor could not store, kept with the reason.

A malformed payload must never block the MQTT session (it would be redelivered for ever) and
must never vanish either. So it is written here, counted, and then acknowledged. The store is a
JSON-lines file in ``state_dir`` (one object per entry: ``ts``, ``topic``, ``reason`` and the
payload base64-encoded, or the rejected line-protocol lines for InfluxDB's 400 answers), which an
operator can read with ``jq`` and replay once the cause is fixed.

Bounded by bytes: when ``deadletter.jsonl`` would exceed half the bound it is rotated to
``deadletter.1.jsonl`` (replacing the previous one), so at most ``max_bytes`` are on disk. What
rotation discards is counted in ``evicted``; the newest entries are the ones kept, as an
operator investigating a fault wants the latest evidence. A payload larger than the bound is
recorded with its size and a prefix only (``truncated: true``).
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DeadLetterStats", "DeadLetterStore"]

_FILE = "deadletter.jsonl"
_OLD = "deadletter.1.jsonl"


@dataclass
class DeadLetterStats:
    entries: int = 0
    bytes_written: int = 0
    evicted_entries: int = 0
    write_errors: int = 0


class DeadLetterStore:
    """Append-only, size-bounded JSONL store; thread-safe; never raises on a full or broken disk."""

    def __init__(self, state_dir: Path, *, max_bytes: int = 256 * 1024 * 1024, fsync: bool = True) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / _FILE
        self.old_path = self.dir / _OLD
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.stats = DeadLetterStats()
        self._lock = threading.Lock()
        self._size = self.path.stat().st_size if self.path.exists() else 0
        self._entries_in_file = _count_lines(self.path)

    def add(
        self,
        *,
        topic: str,
        reason: str,
        payload: bytes | None = None,
        lines: list[str] | None = None,
        extra: dict[str, object] | None = None,
    ) -> bool:
        """Record one rejected payload (or rejected lines); True when it reached the disk.

        A write failure (disk full) is counted in ``stats.write_errors`` and returns False: the
        caller decides whether to acknowledge anyway (it does, and logs; blocking the session on
        a full disk would stall every gateway for one bad payload).
        """
        doc: dict[str, object] = {"ts": time.time(), "topic": topic, "reason": reason}
        if payload is not None:
            limit = max(self.max_bytes // 4, 1024)
            doc["payload_bytes"] = len(payload)
            if len(payload) > limit:
                doc["truncated"] = True
                payload = payload[:4096]
            doc["payload_b64"] = base64.b64encode(payload).decode()
        if lines is not None:
            doc["lines"] = lines
        if extra:
            doc.update(extra)
        raw = (json.dumps(doc, ensure_ascii=True) + "\n").encode()
        with self._lock:
            try:
                if self._size + len(raw) > self.max_bytes // 2 and self._size > 0:
                    self._rotate()
                with open(self.path, "ab") as f:
                    f.write(raw)
                    f.flush()
                    if self.fsync:
                        os.fsync(f.fileno())
            except OSError:
                self.stats.write_errors += 1
                return False
            self._size += len(raw)
            self._entries_in_file += 1
            self.stats.entries += 1
            self.stats.bytes_written += len(raw)
            return True

    def _rotate(self) -> None:
        """Caller holds the lock: the current file replaces the old one, whose entries are evicted."""
        self.stats.evicted_entries += _count_lines(self.old_path)
        os.replace(self.path, self.old_path)
        self._size = 0
        self._entries_in_file = 0

    def read(self) -> list[dict[str, object]]:
        """Every entry on disk, oldest first (for tests and tools; not for the hot path)."""
        out: list[dict[str, object]] = []
        for p in (self.old_path, self.path):
            if p.exists():
                out.extend(json.loads(line) for line in p.read_text().splitlines() if line.strip())
        return out

    @staticmethod
    def decode_payload(entry: dict[str, object]) -> bytes:
        return base64.b64decode(str(entry["payload_b64"]))


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except OSError:
        return 0
