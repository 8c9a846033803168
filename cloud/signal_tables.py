"""Known signal tables, persisted so that a restarted ingestor can decode batches at once.

A telemetry batch names its signal table only by an 8-byte hash; the table itself travels in a
retained message on the ``signals`` lane. After a restart the broker may deliver queued batches
before (or without) that retained message, so every table ever accepted is stored in
``state_dir/signal_tables/<gateway-hex>-<hash-hex>.pwst`` (the raw wire payload, written
atomically) and loaded at start. For each table the per-signal series keys for line protocol
are built once (:class:`cloud.sinks.lineproto.SeriesPrefixes`), never per batch.

Bounded: at most ``max_tables`` are kept, the least recently used evicted first (on disk too);
a gateway re-publishes its current table on every connect, so an evicted old table costs only
the batches of a long-gone configuration, which are then held and dead-lettered, never dropped
silently.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from cloud.sinks.lineproto import SeriesPrefixes
from plantwire import wire

__all__ = ["KnownTable", "SignalTableStore"]

log = logging.getLogger(__name__)

_SUFFIX = ".pwst"


@dataclass(frozen=True, slots=True)
class KnownTable:
    message: wire.SignalTableMessage
    prefixes: SeriesPrefixes

    @property
    def site(self) -> str:
        return self.message.site

    def __len__(self) -> int:
        return len(self.message.ids)


class SignalTableStore:
    """(gateway, table_hash) -> decoded table plus series prefixes; persisted under ``state_dir``."""

    def __init__(self, state_dir: Path, measurement: str, *, max_tables: int = 256) -> None:
        self.dir = Path(state_dir) / "signal_tables"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.measurement = measurement
        self.max_tables = max_tables
        self._tables: OrderedDict[tuple[str, bytes], KnownTable] = OrderedDict()
        self._lock = threading.Lock()
        self.load_errors = 0

    def _path(self, gateway: str, table_hash: bytes) -> Path:
        return self.dir / f"{gateway.encode().hex()}-{table_hash.hex()}{_SUFFIX}"

    def load(self) -> int:
        """Load every stored table; a corrupt file is renamed ``*.bad``, counted and skipped."""
        loaded = 0
        for p in sorted(self.dir.glob(f"*{_SUFFIX}"), key=lambda q: q.stat().st_mtime):
            try:
                self._add(wire.decode_signal_table(p.read_bytes()))
                loaded += 1
            except (OSError, wire.WireError) as exc:
                self.load_errors += 1
                log.warning("signal table %s unreadable (%s); moved aside", p, exc)
                with contextlib.suppress(OSError):
                    os.replace(p, p.with_suffix(".bad"))
        return loaded

    def add(self, payload: bytes) -> tuple[KnownTable, bool]:
        """Decode, persist and index a ``signals`` payload; returns (table, new). Raises WireError."""
        msg = wire.decode_signal_table(payload)
        key = (msg.gateway, msg.table_hash)
        with self._lock:
            known = self._tables.get(key)
            if known is not None and known.message == msg:
                self._tables.move_to_end(key)
                return known, False
        path = self._path(msg.gateway, msg.table_hash)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return self._add(msg), True

    def _add(self, msg: wire.SignalTableMessage) -> KnownTable:
        prefixes = SeriesPrefixes.build(
            self.measurement, site=msg.site, gateway=msg.gateway, ids=msg.ids, machines=msg.machines
        )
        table = KnownTable(msg, prefixes)
        evicted: list[tuple[str, bytes]] = []
        with self._lock:
            self._tables[(msg.gateway, msg.table_hash)] = table
            self._tables.move_to_end((msg.gateway, msg.table_hash))
            while len(self._tables) > self.max_tables:
                old, _ = self._tables.popitem(last=False)
                evicted.append(old)
        for gw, h in evicted:
            with contextlib.suppress(OSError):
                self._path(gw, h).unlink()
        return table

    def get(self, gateway: str, table_hash: bytes) -> KnownTable | None:
        with self._lock:
            return self._tables.get((gateway, table_hash))

    def __len__(self) -> int:
        with self._lock:
            return len(self._tables)
