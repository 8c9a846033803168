"""Why a bundle was refused: one label per cause, the ``reason`` of ``model_bundles_refused_total``.

The verification causes map one to one onto ``plantwire.bundle.Refusal`` (``reader._MAP``); the rest are
the edge's own (delivery, compatibility with this plant, storage).

A refusal is never an exception that escapes: the manager counts it, keeps the last few with their
detail for the health document, and the running model carries on.
"""

from __future__ import annotations

import enum


class Refusal(enum.StrEnum):
    BAD_HEAD = "bad-head"  # head not JSON, or fields missing / out of range
    TOO_LARGE = "too-large"  # head announces more than models.max_bundle_bytes
    SIZE_MISMATCH = "size-mismatch"  # a chunk's length or the total does not match the head
    SHA256_MISMATCH = "sha256-mismatch"  # the reassembled bytes do not hash to the head's sha256
    BAD_ARCHIVE = "bad-archive"  # not a stored zip of exactly manifest.json, arrays.npz, manifest.sig
    BAD_SIGNATURE = "bad-signature"  # Ed25519 signature does not verify with the configured key
    UNKNOWN_KEY = "unknown-key"  # signed by a key (key_id) this gateway does not trust
    NO_KEY = "no-key"  # no public key configured: nothing can be trusted
    BAD_MANIFEST = "bad-manifest"  # manifest not JSON, a key missing / mistyped, unknown format or kind
    ARRAYS_SHA256_MISMATCH = "arrays-sha256-mismatch"  # arrays.npz does not hash to manifest.arrays_sha256
    BAD_ARRAYS = "bad-arrays"  # arrays.npz unreadable or its arrays do not fit the manifest
    UNSUPPORTED_KIND = "unsupported-kind"  # kind this edge does not apply (see docs/models.md)
    UNKNOWN_TEMPLATE = "unknown-template"  # the plant has no such template (or no machine of it)
    SIGNAL_MISMATCH = "signal-mismatch"  # signal names or order differ from the template's
    SLOT_MISMATCH = "slot-mismatch"  # kind/template/version in the manifest differ from the topic and head
    NO_TARGET = "no-target"  # the kind's stage is not configured here (e.g. RUL without analytics.health)
    STORE_FAILED = "store-failed"  # the verified bundle could not be written to the state directory


class BundleRefused(Exception):
    """A bundle that must not be used; ``reason`` is the metric label, the message the detail."""

    def __init__(self, reason: Refusal, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
