"""Chunks and a head for one slot -> the bundle's bytes, checked against the head (sizes, sha256).

Runs on the event loop (cheap: a dict insert per chunk, one sha256 per complete bundle). Memory is
bounded by ``max_bundle_bytes`` per slot: only chunks whose 32-byte prefix is the current head's sha256
are kept; a chunk of another version (stale retained messages, or the next version arriving before
its head) is ignored and counted. After a complete bundle or a refusal the head is settled: repeated
deliveries of its chunks (a re-subscription re-sends retained messages) change nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field

from edge.modelstore.reasons import BundleRefused, Refusal

MAX_CHUNK_BYTES = 256 * 1024
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Head:
    version: str
    sha256: str  # hex
    size: int
    chunks: int
    chunk_bytes: int


def parse_head(payload: bytes, max_bundle_bytes: int) -> Head | None:
    """The head of a slot; None for an empty payload (the slot is cleared). Raises ``BundleRefused``."""
    if not payload:
        return None
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleRefused(Refusal.BAD_HEAD, f"head is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise BundleRefused(Refusal.BAD_HEAD, "head is not a JSON object")
    version, sha, size, chunks, chunk_bytes = (doc.get(k) for k in ("version", "sha256", "size", "chunks",
                                                                     "chunk_bytes"))
    if not isinstance(version, str) or not version or len(version) > 200:
        raise BundleRefused(Refusal.BAD_HEAD, "head.version: a non-empty string expected")
    if not isinstance(sha, str) or not _HEX64.match(sha.lower()):
        raise BundleRefused(Refusal.BAD_HEAD, "head.sha256: 64 hex digits expected")
    ints = {"size": size, "chunks": chunks, "chunk_bytes": chunk_bytes}
    for k, v in ints.items():
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise BundleRefused(Refusal.BAD_HEAD, f"head.{k}: a positive integer expected, got {v!r}")
    assert isinstance(size, int) and isinstance(chunks, int) and isinstance(chunk_bytes, int)
    if size > max_bundle_bytes:
        raise BundleRefused(Refusal.TOO_LARGE, f"head.size {size} > models.max_bundle_bytes {max_bundle_bytes}")
    if chunk_bytes > MAX_CHUNK_BYTES:
        raise BundleRefused(Refusal.BAD_HEAD, f"head.chunk_bytes {chunk_bytes} > {MAX_CHUNK_BYTES}")
    if chunks != math.ceil(size / chunk_bytes):
        raise BundleRefused(Refusal.BAD_HEAD, f"head.chunks {chunks} != ceil(size {size} / chunk_bytes {chunk_bytes})")
    return Head(version, sha.lower(), size, chunks, chunk_bytes)


@dataclass
class SlotAssembly:
    """Reassembly state of one slot (scope, kind, template)."""

    head: Head | None = None
    parts: dict[int, bytes] = field(default_factory=dict)
    settled: bool = False  # the current head completed or was refused
    stale_chunks: int = 0

    def set_head(self, head: Head | None) -> None:
        if head is not None and self.head is not None and head.sha256 == self.head.sha256:
            return  # the same bundle announced again (re-subscription): keep what we have
        self.head = head
        self.parts = {}
        self.settled = False

    def add_chunk(self, index: int, payload: bytes) -> bytes | None:
        """The whole bundle when this chunk completes it; None while incomplete. Raises ``BundleRefused``."""
        h = self.head
        if h is None or len(payload) < 32 or payload[:32].hex() != h.sha256:
            self.stale_chunks += 1
            return None
        if self.settled:
            return None
        data = payload[32:]
        if not 0 <= index < h.chunks:
            self.settled = True
            raise BundleRefused(Refusal.SIZE_MISMATCH, f"chunk {index} of a bundle of {h.chunks} chunks")
        want = h.chunk_bytes if index < h.chunks - 1 else h.size - (h.chunks - 1) * h.chunk_bytes
        if len(data) != want:
            self.settled = True
            raise BundleRefused(Refusal.SIZE_MISMATCH, f"chunk {index}: {len(data)} bytes, the head says {want}")
        self.parts[index] = data
        if len(self.parts) < h.chunks:
            return None
        whole = b"".join(self.parts[i] for i in range(h.chunks))
        self.parts = {}
        self.settled = True
        got = hashlib.sha256(whole).hexdigest()
        if got != h.sha256:
            raise BundleRefused(Refusal.SHA256_MISMATCH, f"bundle hashes to {got[:16]}..., the head says "
                                                        f"{h.sha256[:16]}...")
        return whole
