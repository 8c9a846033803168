"""Delivering bundles to gateways over MQTT: ``plantwire models publish`` (contracts.md, "Model bundle").

Layout, per target and slot (``{kind}/{template}``), all retained, QoS 1, as broker user ``plantwire-models``:

- ``plantwire/models/v1/{site}/{gateway}/{kind}/{template}/chunk/{i}``: the 32-byte sha256 of the whole bundle,
  then bytes ``[i * chunk_bytes, (i + 1) * chunk_bytes)`` of it (at most 256 KiB of bundle per chunk);
- ``.../{kind}/{template}/head``: JSON ``{"version", "sha256", "size", "chunks", "chunk_bytes"}``.

Target ``{gateway}`` = ``_all`` addresses a whole site, ``{site}`` = ``{gateway}`` = ``_all`` every gateway.

Why chunks first, head last: a gateway acts on a head; when it arrives, every chunk it names is already
retained at the broker (QoS 1, each PUBACKed before the head is sent). The sha256 prefix in every chunk lets
a gateway tell chunks of the bundle it wants from stale ones of an older bundle still retained under the
same index, and check the reassembled whole. Chunks of an older, longer bundle beyond the new count are
cleared after the head is published (empty retained payloads), as is the whole slot by ``--clear``
(chunks, then an empty head: the contract's "an empty retained head clears a slot").
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from cloud.models.mqtt import Session

TOPIC_ROOT = "plantwire/models/v1"
ALL = "_all"
CHUNK_BYTES = 256 * 1024
DIGEST_BYTES = 32


@dataclass(frozen=True)
class Target:
    """Where a bundle goes: one gateway of a site, a whole site (gateway ``_all``), or all (both ``_all``)."""

    site: str
    gateway: str

    def __post_init__(self) -> None:
        for name, v in (("site", self.site), ("gateway", self.gateway)):
            if not v or any(c in v for c in "+#/") or v.startswith("$"):
                raise ValueError(f"target {name} {v!r}: not a valid topic level")
        if self.site == ALL and self.gateway != ALL:
            raise ValueError("a gateway on every site is not a target: use --site with --gateway, or --all")


def slot_topic(target: Target, kind: str, template: str) -> str:
    return f"{TOPIC_ROOT}/{target.site}/{target.gateway}/{kind}/{template}"


def chunk_payloads(data: bytes, chunk_bytes: int = CHUNK_BYTES) -> list[bytes]:
    """The chunk payloads of a bundle: sha256 (32 bytes) then the chunk's bytes."""
    if not 0 < chunk_bytes <= CHUNK_BYTES:
        raise ValueError(f"chunk_bytes must be in 1..{CHUNK_BYTES}")
    digest = hashlib.sha256(data).digest()
    return [digest + data[i:i + chunk_bytes] for i in range(0, max(len(data), 1), chunk_bytes)]


def head_document(data: bytes, version: str, chunk_bytes: int = CHUNK_BYTES) -> dict[str, object]:
    return {"version": version, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
            "chunks": len(chunk_payloads(data, chunk_bytes)), "chunk_bytes": chunk_bytes}


def reassemble(head: dict[str, object], chunks: dict[int, bytes]) -> bytes:
    """The bundle from a head and its chunk payloads (what a gateway does); ValueError if incomplete or wrong."""
    n, want = int(head["chunks"]), str(head["sha256"])  # type: ignore[call-overload]
    parts = []
    for i in range(n):
        p = chunks.get(i)
        if p is None or len(p) < DIGEST_BYTES or p[:DIGEST_BYTES].hex() != want:
            raise ValueError(f"chunk {i} missing or of another bundle")
        parts.append(p[DIGEST_BYTES:])
    data = b"".join(parts)
    if len(data) != head["size"] or hashlib.sha256(data).hexdigest() != want:
        raise ValueError("reassembled bundle does not match the head's size and sha256")
    return data


def _old_chunks(session: Session, base: str) -> int:
    got = session.retained(f"{base}/head", settle_s=0.3).get(f"{base}/head", b"")
    try:
        return int(json.loads(got)["chunks"]) if got else 0
    except (ValueError, KeyError, TypeError):
        return 0


def publish(session: Session, data: bytes, manifest: dict[str, object], targets: list[Target],
            chunk_bytes: int = CHUNK_BYTES) -> dict[str, int]:
    """Publish one bundle (its bytes and verified manifest) to every target; returns chunks per slot topic."""
    kind, template, version = str(manifest["kind"]), str(manifest["template"]), str(manifest["version"])
    chunks = chunk_payloads(data, chunk_bytes)
    head = json.dumps(head_document(data, version, chunk_bytes), sort_keys=True).encode()
    out = {}
    for target in targets:
        base = slot_topic(target, kind, template)
        old = _old_chunks(session, base)
        session.publish_many([(f"{base}/chunk/{i}", p) for i, p in enumerate(chunks)], retain=True)
        session.publish_many([(f"{base}/head", head)], retain=True)
        if old > len(chunks):
            session.publish_many([(f"{base}/chunk/{i}", b"") for i in range(len(chunks), old)], retain=True)
        out[base] = len(chunks)
    return out


def clear(session: Session, kind: str, template: str, targets: list[Target], max_chunks: int = 0) -> dict[str, int]:
    """Empty a slot: its chunks (as many as the retained head names, or ``max_chunks``), then its head."""
    out = {}
    for target in targets:
        base = slot_topic(target, kind, template)
        n = max(_old_chunks(session, base), max_chunks)
        if n:
            session.publish_many([(f"{base}/chunk/{i}", b"") for i in range(n)], retain=True)
        session.publish_many([(f"{base}/head", b"")], retain=True)
        out[base] = n
    return out
