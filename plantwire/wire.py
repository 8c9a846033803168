"""The plantwire wire format: the only module the edge and the cloud share.

Every payload starts with a fixed little-endian header::

    magic    2s   b"PW"
    version  B    1 (every version ever shipped stays decodable; golden bytes in tests pin them)
    kind     B    1 telemetry batch, 2 signal table
    ...kind-specific header, then a zstd frame (with content checksum)

Telemetry batch v1 (kind 1)::

    boot_epoch_ns  q   wall-clock ns when the gateway process started (tells restarts apart)
    seq            Q   per-gateway monotonic batch sequence number
    table_hash     8s  identity of the signal table the ``signal`` column indexes
    n              I   number of samples
    gw_len         B   then gw_len bytes of UTF-8 gateway id
    body           zstd of the columns below, each byte-shuffled so that equal high bytes
                   compress together:
                     ts_ns   int64[n]   first absolute, then deltas
                     signal  uint32[n]  first absolute, then deltas (mod 2**32)
                     value   float64[n] XOR with the previous value of the *same* signal in the
                                        batch (0 bits for an unchanged reading)
                     quality uint8[n]

Signal table v1 (kind 2)::

    table_hash 8s, gw_len B, gateway id, then zstd of UTF-8 JSON
    {"site": ..., "signals": [[id, machine, unit, kind], ...]}

Decoding validates every length and bound and raises :class:`WireError` naming the field, so a
malformed payload is dead-lettered with its reason and never crashes the ingestor.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np
import zstandard

MAGIC = b"PW"
VERSION = 1
KIND_TELEMETRY = 1
KIND_SIGNALS = 2

#: Upper bound on samples in one batch; a header claiming more is rejected before decompressing.
MAX_SAMPLES = 1_000_000
#: Upper bound on a signal table's JSON, for the same reason.
MAX_TABLE_BYTES = 64 * 1024 * 1024

_PREFIX = struct.Struct("<2sBB")
_TELEMETRY = struct.Struct("<qQ8sIB")
_SIGNALS = struct.Struct("<8sB")
_SAMPLE_BYTES = 8 + 4 + 8 + 1

_ZSTD_LEVEL = 3


class WireError(ValueError):
    """A payload that is not a valid plantwire message; the message names the offending field."""


@dataclass(frozen=True, slots=True)
class Batch:
    """One telemetry batch: header fields plus the four sample columns (length n each)."""

    gateway: str
    boot_epoch_ns: int
    seq: int
    table_hash: bytes
    ts_ns: np.ndarray  # int64
    signal: np.ndarray  # uint32
    value: np.ndarray  # float64
    quality: np.ndarray  # uint8

    def __len__(self) -> int:
        return int(self.ts_ns.shape[0])


@dataclass(frozen=True, slots=True)
class SignalTableMessage:
    gateway: str
    table_hash: bytes
    site: str
    ids: list[str]
    machines: list[str]
    units: list[str]
    kinds: list[str]


def _shuffle(a: np.ndarray) -> bytes:
    """Byte-transpose an array of fixed-width items (all first bytes, then all second bytes ...)."""
    width = a.dtype.itemsize
    return np.ascontiguousarray(a.view(np.uint8).reshape(-1, width).T).tobytes()


def _unshuffle(raw: memoryview, n: int, dtype: np.dtype) -> np.ndarray:
    width = dtype.itemsize
    planes = np.frombuffer(raw, dtype=np.uint8, count=n * width).reshape(width, n)
    return np.ascontiguousarray(planes.T).view(dtype).reshape(n)


def _xor_by_signal(bits: np.ndarray, signal: np.ndarray) -> np.ndarray:
    """XOR each value with the previous value of the same signal in this batch (vectorised).

    Samples are stably sorted by signal so that each signal's readings are adjacent; within a run
    each element is XORed with its predecessor; the first of each run is kept as is.
    """
    n = bits.shape[0]
    if n < 2:
        return bits.copy()
    order = np.argsort(signal, kind="stable")
    sb = bits[order]
    ss = signal[order]
    out_sorted = sb.copy()
    same = ss[1:] == ss[:-1]
    out_sorted[1:][same] = sb[1:][same] ^ sb[:-1][same]
    out = np.empty_like(bits)
    out[order] = out_sorted
    return out


def _unxor_by_signal(xored: np.ndarray, signal: np.ndarray) -> np.ndarray:
    n = xored.shape[0]
    if n < 2:
        return xored.copy()
    order = np.argsort(signal, kind="stable")
    xs = xored[order]
    ss = signal[order]
    # Prefix-XOR within runs of equal signal: cumulative XOR over the whole array, then undo the
    # carry-over from the previous run by XORing with the cumulative value just before each run.
    cum = np.bitwise_xor.accumulate(xs)
    run_start = np.ones(n, dtype=bool)
    run_start[1:] = ss[1:] != ss[:-1]
    start_idx = np.flatnonzero(run_start)
    before = np.zeros(start_idx.shape[0], dtype=np.uint64)
    before[1:] = cum[start_idx[1:] - 1]
    run_id = np.cumsum(run_start) - 1
    vals_sorted = cum ^ before[run_id]
    out = np.empty_like(xored)
    out[order] = vals_sorted
    return out


def encode_batch(
    *,
    gateway: str,
    boot_epoch_ns: int,
    seq: int,
    table_hash: bytes,
    ts_ns: np.ndarray,
    signal: np.ndarray,
    value: np.ndarray,
    quality: np.ndarray,
) -> bytes:
    """Encode one telemetry batch; the columns must have equal length (at most MAX_SAMPLES)."""
    n = int(ts_ns.shape[0])
    if not (signal.shape[0] == value.shape[0] == quality.shape[0] == n):
        raise ValueError("columns differ in length")
    if n > MAX_SAMPLES:
        raise ValueError(f"batch of {n} samples exceeds MAX_SAMPLES={MAX_SAMPLES}")
    gw = gateway.encode()
    if not gw or len(gw) > 255:
        raise ValueError("gateway id must be 1..255 bytes of UTF-8")
    if len(table_hash) != 8:
        raise ValueError("table_hash must be 8 bytes")
    ts = np.asarray(ts_ns, dtype=np.int64)
    sig = np.asarray(signal, dtype=np.uint32)
    ts_d = np.empty_like(ts)
    sig_d = np.empty_like(sig)
    if n:
        ts_d[0] = ts[0]
        ts_d[1:] = np.diff(ts)
        sig_d[0] = sig[0]
        sig_d[1:] = sig[1:] - sig[:-1]  # wraps mod 2**32, undone by cumsum in uint32
    bits = np.asarray(value, dtype=np.float64).view(np.uint64)
    val_x = _xor_by_signal(bits, sig)
    body = b"".join(
        (_shuffle(ts_d), _shuffle(sig_d), _shuffle(val_x), np.asarray(quality, dtype=np.uint8).tobytes())
    )
    compressed = zstandard.ZstdCompressor(level=_ZSTD_LEVEL, write_checksum=True).compress(body)
    header = _PREFIX.pack(MAGIC, VERSION, KIND_TELEMETRY) + _TELEMETRY.pack(
        boot_epoch_ns, seq, table_hash, n, len(gw)
    )
    return header + gw + compressed


def _read_prefix(payload: bytes) -> tuple[int, int]:
    if len(payload) < _PREFIX.size:
        raise WireError(f"header: payload of {len(payload)} bytes is shorter than the {_PREFIX.size}-byte prefix")
    magic, version, kind = _PREFIX.unpack_from(payload, 0)
    if magic != MAGIC:
        raise WireError(f"header.magic: expected {MAGIC!r}, got {magic!r}")
    if version != VERSION:
        raise WireError(f"header.version: unsupported version {version}")
    return version, kind


def peek_kind(payload: bytes) -> int:
    """Kind of a payload (telemetry or signal table) after checking magic and version."""
    return _read_prefix(payload)[1]


def _decompress(blob: bytes, max_size: int, field: str) -> bytes:
    """Decompress at most ``max_size`` bytes. A frame header claiming more is refused before any
    allocation (zstandard would otherwise try to allocate the claimed size and raise MemoryError)."""
    try:
        params = zstandard.get_frame_parameters(blob)
    except zstandard.ZstdError as exc:
        raise WireError(f"{field}: corrupt zstd frame ({exc})") from None
    claimed = params.content_size
    if claimed not in (zstandard.CONTENTSIZE_UNKNOWN, zstandard.CONTENTSIZE_ERROR) and claimed > max_size:
        raise WireError(f"{field}: zstd frame claims {claimed} bytes, more than the {max_size} allowed")
    try:
        return zstandard.ZstdDecompressor().decompress(blob, max_output_size=max_size)
    except zstandard.ZstdError as exc:
        raise WireError(f"{field}: corrupt zstd frame ({exc})") from None
    except MemoryError:
        raise WireError(f"{field}: zstd frame needs more memory than is available") from None


def decode_batch(payload: bytes) -> Batch:
    """Decode a telemetry batch, validating every field; raises WireError on any defect."""
    _, kind = _read_prefix(payload)
    if kind != KIND_TELEMETRY:
        raise WireError(f"header.kind: expected telemetry ({KIND_TELEMETRY}), got {kind}")
    off = _PREFIX.size
    if len(payload) < off + _TELEMETRY.size:
        raise WireError("header: truncated telemetry header")
    boot, seq, thash, n, gw_len = _TELEMETRY.unpack_from(payload, off)
    off += _TELEMETRY.size
    if n > MAX_SAMPLES:
        raise WireError(f"header.n: {n} samples exceeds the limit of {MAX_SAMPLES}")
    if gw_len == 0 or len(payload) < off + gw_len:
        raise WireError("header.gateway: missing or truncated gateway id")
    try:
        gateway = payload[off : off + gw_len].decode()
    except UnicodeDecodeError:
        raise WireError("header.gateway: not UTF-8") from None
    off += gw_len
    expected = n * _SAMPLE_BYTES
    body = _decompress(payload[off:], max(expected, 1), "body")
    if len(body) != expected:
        raise WireError(f"body: {len(body)} bytes for {n} samples, expected {expected}")
    mv = memoryview(body)
    ts_d = _unshuffle(mv[0 : 8 * n], n, np.dtype(np.int64))
    sig_d = _unshuffle(mv[8 * n : 12 * n], n, np.dtype(np.uint32))
    val_x = _unshuffle(mv[12 * n : 20 * n], n, np.dtype(np.uint64))
    quality = np.frombuffer(mv[20 * n : 21 * n], dtype=np.uint8).copy()
    ts = np.cumsum(ts_d, dtype=np.int64)
    sig = np.cumsum(sig_d, dtype=np.uint32)
    value = _unxor_by_signal(val_x, sig).view(np.float64)
    if n and int(quality.max()) > 2:
        raise WireError(f"body.quality: value {int(quality.max())} is not a known quality")
    return Batch(gateway, boot, seq, thash, ts, sig, value, quality)


def encode_signal_table(
    *,
    gateway: str,
    table_hash: bytes,
    site: str,
    ids: list[str],
    machines: list[str],
    units: list[str],
    kinds: list[str],
) -> bytes:
    gw = gateway.encode()
    if not gw or len(gw) > 255:
        raise ValueError("gateway id must be 1..255 bytes of UTF-8")
    rows = [list(r) for r in zip(ids, machines, units, kinds, strict=True)]
    doc = json.dumps({"site": site, "signals": rows}, separators=(",", ":")).encode()
    compressed = zstandard.ZstdCompressor(level=_ZSTD_LEVEL, write_checksum=True).compress(doc)
    return _PREFIX.pack(MAGIC, VERSION, KIND_SIGNALS) + _SIGNALS.pack(table_hash, len(gw)) + gw + compressed


def decode_signal_table(payload: bytes) -> SignalTableMessage:
    _, kind = _read_prefix(payload)
    if kind != KIND_SIGNALS:
        raise WireError(f"header.kind: expected signal table ({KIND_SIGNALS}), got {kind}")
    off = _PREFIX.size
    if len(payload) < off + _SIGNALS.size:
        raise WireError("header: truncated signal-table header")
    thash, gw_len = _SIGNALS.unpack_from(payload, off)
    off += _SIGNALS.size
    if gw_len == 0 or len(payload) < off + gw_len:
        raise WireError("header.gateway: missing or truncated gateway id")
    try:
        gateway = payload[off : off + gw_len].decode()
    except UnicodeDecodeError:
        raise WireError("header.gateway: not UTF-8") from None
    raw = _decompress(payload[off + gw_len :], MAX_TABLE_BYTES, "body")
    try:
        doc = json.loads(raw)
        site = doc["site"]
        rows = doc["signals"]
        if not isinstance(site, str) or not isinstance(rows, list):
            raise TypeError
        ids, machines, units, kinds = [], [], [], []
        for r in rows:
            sid, mid, unit, kind_ = r
            if not all(isinstance(x, str) for x in (sid, mid, unit, kind_)):
                raise TypeError
            ids.append(sid)
            machines.append(mid)
            units.append(unit)
            kinds.append(kind_)
    except (ValueError, KeyError, TypeError, RecursionError):
        raise WireError("body.signals: not a valid signal-table document") from None
    return SignalTableMessage(gateway, thash, site, ids, machines, units, kinds)


def topic(site: str, gateway: str, lane: str) -> str:
    """``plantwire/v1/{site}/{gateway}/{lane}`` with lane in telemetry|events|health|signals|ack."""
    return f"plantwire/v1/{site}/{gateway}/{lane}"


def parse_topic(name: str) -> tuple[str, str, str]:
    """Inverse of :func:`topic`; raises WireError for anything else."""
    parts = name.split("/")
    if len(parts) != 5 or parts[0] != "plantwire" or parts[1] != "v1":
        raise WireError(f"topic: {name!r} is not plantwire/v1/<site>/<gateway>/<lane>")
    return parts[2], parts[3], parts[4]


# -- ack watermark (cloud -> edge) and events lane (edge -> cloud): small JSON control messages --

ACK_VERSION = 1
MAX_ACK_RANGES = 1024
MAX_CONTROL_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Ack:
    """What the cloud holds durably (in InfluxDB) of one gateway boot epoch.

    ``watermark``: every sequence number ``<= watermark`` is durable (``-1``: none yet).
    ``ranges``: further durable inclusive ``(lo, hi)`` ranges above the watermark, ascending and
    disjoint, so the edge can free records that arrived out of order (replays behind live data)
    while one batch below them is still missing. At most MAX_ACK_RANGES are sent (the lowest);
    a record not covered stays in the edge's log and is re-sent, which is harmless.
    Published at QoS 1 on ``topic(site, gateway, "ack")``, retained (a restarted edge learns the
    state at once), after every durable write and at least every few seconds; one message per
    (gateway, boot epoch) with records in flight, so an edge replaying an older epoch's records
    gets acks for them too.
    """

    gateway: str
    boot_epoch_ns: int
    watermark: int
    ranges: tuple[tuple[int, int], ...] = ()

    def covers(self, seq: int) -> bool:
        if seq <= self.watermark:
            return True
        return any(lo <= seq <= hi for lo, hi in self.ranges)


def encode_ack(ack: Ack) -> bytes:
    doc = {
        "v": ACK_VERSION,
        "gateway": ack.gateway,
        "boot_epoch_ns": ack.boot_epoch_ns,
        "watermark": ack.watermark,
        "ranges": [[lo, hi] for lo, hi in ack.ranges[:MAX_ACK_RANGES]],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _json_object(payload: bytes, what: str) -> dict:
    if len(payload) > MAX_CONTROL_BYTES:
        raise WireError(f"{what}: payload of {len(payload)} bytes exceeds {MAX_CONTROL_BYTES}")
    try:
        doc = json.loads(payload)
    except RecursionError:
        raise WireError(f"{what}: JSON nested too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WireError(f"{what}: not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise WireError(f"{what}: expected a JSON object")
    return doc


def _int_field(doc: dict, key: str, what: str) -> int:
    v = doc.get(key)
    if not isinstance(v, int) or isinstance(v, bool):
        raise WireError(f"{what}.{key}: expected an integer, got {v!r}")
    return v


def decode_ack(payload: bytes) -> Ack:
    doc = _json_object(payload, "ack")
    if doc.get("v") != ACK_VERSION:
        raise WireError(f"ack.v: unsupported version {doc.get('v')!r}")
    gateway = doc.get("gateway")
    if not isinstance(gateway, str) or not gateway:
        raise WireError("ack.gateway: expected a non-empty string")
    raw_ranges = doc.get("ranges", [])
    if not isinstance(raw_ranges, list) or len(raw_ranges) > MAX_ACK_RANGES:
        raise WireError(f"ack.ranges: expected a list of at most {MAX_ACK_RANGES} [lo, hi] pairs")
    ranges: list[tuple[int, int]] = []
    for i, r in enumerate(raw_ranges):
        if (
            not isinstance(r, list)
            or len(r) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in r)
            or r[0] > r[1]
        ):
            raise WireError(f"ack.ranges[{i}]: expected [lo, hi] integers with lo <= hi, got {r!r}")
        ranges.append((r[0], r[1]))
    return Ack(
        gateway=gateway,
        boot_epoch_ns=_int_field(doc, "boot_epoch_ns", "ack"),
        watermark=_int_field(doc, "watermark", "ack"),
        ranges=tuple(ranges),
    )


EVENTS_VERSION = 1
EVENT_TYPES = ("alarm", "health")


def encode_events(gateway: str, boot_epoch_ns: int, events: list[dict]) -> bytes:
    """Events lane payload: JSON ``{"v", "gateway", "boot_epoch_ns", "events": [...]}``.

    Each event is a flat object with ``type``:

    - ``alarm``: ``state`` ("open"|"closed"), ``kind`` (detector: ewma, cusum, stuck, rate, limit,
      machine, ...), ``signal`` and/or ``machine``, ``start_ns``, ``end_ns`` (null while open),
      ``peak`` score in [0, 1].
    - ``health``: ``machine``, ``ts_ns``, ``health`` in [0, 1] (1 healthy), ``rul`` and its band
      ``rul_low``/``rul_high`` (in the model's unit, cycles or seconds; null when unknown).

    Events are rare (hysteresis and debounce on the edge), so JSON's size does not matter and
    keeps the lane readable with mosquitto_sub.
    """
    for i, ev in enumerate(events):
        if ev.get("type") not in EVENT_TYPES:
            raise WireError(f"events[{i}].type: expected one of {EVENT_TYPES}, got {ev.get('type')!r}")
    doc = {"v": EVENTS_VERSION, "gateway": gateway, "boot_epoch_ns": boot_epoch_ns, "events": events}
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def decode_events(payload: bytes) -> tuple[str, int, list[dict]]:
    doc = _json_object(payload, "events")
    if doc.get("v") != EVENTS_VERSION:
        raise WireError(f"events.v: unsupported version {doc.get('v')!r}")
    gateway = doc.get("gateway")
    if not isinstance(gateway, str) or not gateway:
        raise WireError("events.gateway: expected a non-empty string")
    events = doc.get("events")
    if not isinstance(events, list):
        raise WireError("events.events: expected a list")
    for i, ev in enumerate(events):
        if not isinstance(ev, dict) or ev.get("type") not in EVENT_TYPES:
            raise WireError(f"events.events[{i}].type: expected one of {EVENT_TYPES}")
    return gateway, _int_field(doc, "boot_epoch_ns", "events"), events
