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

Telemetry batch v2 (kind 1): the same header plus ``npairs B``, then the gateway id and a zstd body
that codes each value as the smallest exact form that reproduces its float64 bits::

    pairs    float64[npairs] scales, then float64[npairs] offsets (the quantisations used)
    ts_ns    int64[n]   as v1
    signal   uint32[n]  as v1
    mode     uint8[n]   how the value is coded:
                          0          raw float64 (the ``raw`` column)
                          1          float32: ``k`` holds the float32 bits
                          2 + d      decimal: float64(k) / 10**d             (d = 0..6)
                          10 + d     float32 decimal: float32(float64(k) / 10**d)
                          18 + d     decimal product: float64(k) * 1e-d (the float64 constant;
                                     what ``rint(v / 0.01) * 0.01`` quantisers produce)
                          32 + j     quantised: float64(k) * scale[j] + offset[j] (Modbus
                                     ``raw * scale + value_offset``)
    k        int64[n]   zigzag of the delta to the previous ``k`` of the same signal (0 for raw)
    raw      uint64[n]  float64 bits where mode is 0 (else 0), XORed per signal as in v1
    quality  uint8[n]

The encoder recomputes every coded value with the decoder's exact numpy operations and keeps a
code only when the float64 bits are identical, so v2 is bit-exact (NaN payloads, -0.0, inf fall
back to raw). Why: at 1 Hz each signal appears once per batch, so v1's per-signal XOR cannot help
and every value costs ~5 bytes; an integer register or a decimal reading costs ~2.

Telemetry batch v3 (kind 1): v2 plus the OPC-UA StatusCode of every sample that is not plain Good,
as a sparse column (a healthy plant sends none, so it costs nothing; a failed sensor costs its
index and code)::

    header   as v2, then ``nstatus I`` (entries in the sparse column, at most n)
    body     the v2 body, then
               idx   uint32[nstatus] sample index, first absolute then deltas (strictly
                                     increasing: each index once)
               code  uint32[nstatus] StatusCode (never 0), byte-shuffled

Decoded, ``Batch.status`` is a dense uint32 column (0 = Good); v1 and v2 batches have none
(``None``). Why in the batch and not implied by quality: "BadSensorFailure" and
"BadCommunicationError" ask for different people (instrument technician, network); the ingestor
stores the code as a field on the non-good points only. Why a new version and not a flag: the
golden bytes of v1/v2 stay valid and every decoder tells the formats apart by the version byte.
Deploy the ingestor first: an older ingestor dead-letters v3 (with the reason), it never misreads it.

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
#: Telemetry v2 (coded values); the signal table stays v1.
VERSION_V2 = 2
#: Telemetry v3 (v2 plus the sparse status column).
VERSION_V3 = 3
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
_TELEMETRY_V2 = struct.Struct("<qQ8sIBB")
_SAMPLE_BYTES_V2 = 8 + 4 + 1 + 8 + 8 + 1
_TELEMETRY_V3 = struct.Struct("<qQ8sIBBI")

MODE_RAW = 0
MODE_F32 = 1
MODE_DEC = 2
MODE_DEC32 = 10
MODE_DECM = 18
MODE_PAIR = 32
#: Decimal places tried for decimal codes (10**6 and every k below 2**53 are exact in float64).
MAX_DECIMALS = 6
#: At most this many distinct (scale, offset) pairs per batch (mode byte 32..255).
MAX_PAIRS = 256 - MODE_PAIR
_NO_PAIR = 255
_K_LIMIT = float(2**53)

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
    status: np.ndarray | None = None  # uint32 StatusCode per sample (0 = Good); None before v3

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


# -- v2 value coding ---------------------------------------------------------------------------

_POW10 = 10.0 ** np.arange(MAX_DECIMALS + 1)
#: The float64 constants 1e-0 .. 1e-6 (Python literals: correctly rounded), part of the format.
_NEG_POW10 = np.array([1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6])


@dataclass(frozen=True, slots=True)
class Quantisation:
    """The edge's per-signal ``value = raw * scale + value_offset`` knowledge, for v2's quantised code.

    ``scale``/``offset``: the distinct usable pairs (at most MAX_PAIRS, the most used first);
    ``pair_of_signal[i]``: index of signal i's pair, 255 when it has none (scale 0 or not finite).
    Build it once per signal table with :func:`quantisation`; the batch carries the pairs it uses,
    so the cloud needs no extra state to decode.
    """

    scale: np.ndarray  # float64[m]
    offset: np.ndarray  # float64[m]
    pair_of_signal: np.ndarray  # uint8[signals]


def quantisation(scale: np.ndarray, value_offset: np.ndarray) -> Quantisation:
    """Quantisation table from the signal table's ``scale`` and ``value_offset`` columns."""
    sc = np.ascontiguousarray(scale, dtype=np.float64).ravel()
    of = np.ascontiguousarray(value_offset, dtype=np.float64).ravel()
    if sc.shape != of.shape:
        raise ValueError("scale and value_offset differ in length")
    pair = np.full(sc.shape[0], _NO_PAIR, dtype=np.uint8)
    idx = np.flatnonzero(np.isfinite(sc) & np.isfinite(of) & (sc != 0))
    if not idx.size:
        empty = np.empty(0, dtype=np.float64)
        return Quantisation(empty, empty.copy(), pair)
    us, inv_s = np.unique(sc[idx].view(np.uint64), return_inverse=True)
    uo, inv_o = np.unique(of[idx].view(np.uint64), return_inverse=True)
    key = inv_s.astype(np.int64) * uo.shape[0] + inv_o
    uk, inv_k, counts = np.unique(key, return_inverse=True, return_counts=True)
    rank = np.argsort(-counts, kind="stable")[:MAX_PAIRS]
    slot = np.full(uk.shape[0], _NO_PAIR, dtype=np.uint8)
    slot[rank] = np.arange(rank.shape[0])
    pair[idx] = slot[inv_k]
    chosen = uk[rank]
    return Quantisation(
        us[chosen // uo.shape[0]].view(np.float64).copy(), uo[chosen % uo.shape[0]].view(np.float64).copy(), pair
    )


def _decimal(v: np.ndarray, want: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ok, k, d) for float64 values equal to ``k / 10**d``, d smallest.

    One test at MAX_DECIMALS suffices: k*10**j / 10**(d+j) is the same rational as k / 10**d and
    IEEE division rounds it the same way, so trailing decimal zeros are stripped afterwards.
    """
    q = np.rint(v * _POW10[MAX_DECIMALS])
    ok = np.abs(q) < _K_LIMIT  # False for NaN
    kk = np.where(ok, q, 0.0).astype(np.int64)
    rec = kk.astype(np.float64) / _POW10[MAX_DECIMALS]
    ok &= rec.view(np.uint64) == want
    kk = kk[ok]
    d = np.full(kk.shape[0], MAX_DECIMALS, dtype=np.int64)
    for _ in range(MAX_DECIMALS):
        z = (kk % 10 == 0) & (d > 0)
        if not z.any():
            break
        kk[z] //= 10
        d[z] -= 1
    return ok, kk, d


def _code_values(
    value: np.ndarray, sig: np.ndarray, quant: Quantisation | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Choose each value's code: (mode uint8, k int64, pair scales, pair offsets). Vectorised.

    Preference: the signal's own quantisation, decimal, decimal product, float32 decimal, float32
    bits, raw.
    Every candidate is recomputed with the decoder's operations and kept only if bit-identical.
    """
    n = value.shape[0]
    bits = value.view(np.uint64)
    mode = np.zeros(n, dtype=np.uint8)
    k = np.zeros(n, dtype=np.int64)
    p_scale = p_offset = np.empty(0, dtype=np.float64)
    if quant is not None and quant.scale.shape[0]:
        pos = np.full(n, _NO_PAIR, dtype=np.uint8)
        inside = sig < quant.pair_of_signal.shape[0]
        pos[inside] = quant.pair_of_signal[sig[inside]]
        idx = np.flatnonzero(pos != _NO_PAIR)
        if idx.size:
            p = pos[idx]
            sc = quant.scale[p]
            of = quant.offset[p]
            q = np.rint((value[idx] - of) / sc)
            ok = np.abs(q) < _K_LIMIT
            kk = np.where(ok, q, 0.0).astype(np.int64)
            ok &= (kk.astype(np.float64) * sc + of).view(np.uint64) == bits[idx]
            if ok.any():
                used = np.flatnonzero(np.bincount(p[ok], minlength=quant.scale.shape[0]))
                remap = np.zeros(quant.scale.shape[0], dtype=np.uint8)
                remap[used] = np.arange(used.shape[0])
                sel = idx[ok]
                mode[sel] = MODE_PAIR + remap[p[ok]]
                k[sel] = kk[ok]
                p_scale, p_offset = quant.scale[used], quant.offset[used]
    rest = np.flatnonzero(mode == MODE_RAW) if p_scale.shape[0] else np.arange(n)
    if rest.size:
        ok, kk, d = _decimal(value[rest], bits[rest])
        sel = rest[ok]
        mode[sel] = MODE_DEC + d
        k[sel] = kk
        rest = rest[~ok]
    for d in range(1, MAX_DECIMALS + 1):
        if not rest.size:
            break
        q = np.rint(value[rest] * _POW10[d])
        ok = np.abs(q) < _K_LIMIT
        kk = np.where(ok, q, 0.0).astype(np.int64)
        ok &= (kk.astype(np.float64) * _NEG_POW10[d]).view(np.uint64) == bits[rest]
        sel = rest[ok]
        mode[sel] = MODE_DECM + d
        k[sel] = kk[ok]
        rest = rest[~ok]
    if rest.size:
        v32 = value[rest].astype(np.float32)
        is32 = v32.astype(np.float64).view(np.uint64) == bits[rest]
        rest = rest[is32]
        v32 = v32[is32]
    if rest.size:
        # float32 holds ~7 digits, so a test at MAX_DECIMALS would match a neighbouring k with no
        # trailing zeros: try the fewest decimals first instead.
        for d in range(MAX_DECIMALS + 1):
            q = np.rint(value[rest] * _POW10[d])
            ok = np.abs(q) < _K_LIMIT
            kk = np.where(ok, q, 0.0).astype(np.int64)
            rec = (kk.astype(np.float64) / _POW10[d]).astype(np.float32).astype(np.float64)
            ok &= rec.view(np.uint64) == bits[rest]
            sel = rest[ok]
            mode[sel] = MODE_DEC32 + d
            k[sel] = kk[ok]
            rest = rest[~ok]
            v32 = v32[~ok]
            if not rest.size:
                break
        mode[rest] = MODE_F32
        k[rest] = v32.view(np.uint32)
    return mode, k, p_scale, p_offset


def _decode_values(
    mode: np.ndarray, k: np.ndarray, raw: np.ndarray, p_scale: np.ndarray, p_offset: np.ndarray
) -> np.ndarray:
    """Inverse of :func:`_code_values`: float64 values; raw rows come from ``raw`` as they are."""
    out = raw.copy()
    if not mode.shape[0] or not mode.any():
        return out.view(np.float64)
    counts = np.bincount(mode, minlength=256)
    known = np.zeros(256, dtype=bool)
    known[[MODE_RAW, MODE_F32]] = True
    known[MODE_DEC : MODE_DEC + MAX_DECIMALS + 1] = True
    known[MODE_DEC32 : MODE_DEC32 + MAX_DECIMALS + 1] = True
    known[MODE_DECM : MODE_DECM + MAX_DECIMALS + 1] = True
    known[MODE_PAIR : MODE_PAIR + p_scale.shape[0]] = True
    unknown = np.flatnonzero((counts > 0) & ~known)
    if unknown.size:
        raise WireError(f"body.mode: unknown value code {int(unknown[0])} (batch carries {p_scale.shape[0]} pairs)")
    order = np.argsort(mode, kind="stable")
    stops = np.cumsum(counts)
    for m in np.flatnonzero(counts[1:]) + 1:
        idx = order[stops[m] - counts[m] : stops[m]]
        kk = k[idx]
        if m == MODE_F32:
            if int(kk.min()) < 0 or int(kk.max()) >= 2**32:
                raise WireError("body.k: float32 bits out of range")
            vals = kk.astype(np.uint32).view(np.float32).astype(np.float64)
        elif m < MODE_DEC32:
            vals = kk.astype(np.float64) / _POW10[m - MODE_DEC]
        elif m < MODE_DECM:
            vals = (kk.astype(np.float64) / _POW10[m - MODE_DEC32]).astype(np.float32).astype(np.float64)
        elif m < MODE_PAIR:
            vals = kk.astype(np.float64) * _NEG_POW10[m - MODE_DECM]
        else:
            vals = kk.astype(np.float64) * p_scale[m - MODE_PAIR] + p_offset[m - MODE_PAIR]
        out[idx] = vals.view(np.uint64)
    return out.view(np.float64)


def _signal_runs(signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(stable order by signal, mask over sorted[1:] of 'same signal as the previous sample')."""
    order = np.argsort(signal, kind="stable")
    ss = signal[order]
    return order, ss[1:] == ss[:-1]


def _encode_k_raw(k: np.ndarray, raw: np.ndarray, signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-signal zigzag deltas of k and XORs of raw bits (wrapping arithmetic, undone exactly)."""
    n = k.shape[0]
    if n >= 2:
        order, same = _signal_runs(signal)
        ks = k[order]
        rs = raw[order]
        kd = ks.copy()
        kd[1:][same] = ks[1:][same] - ks[:-1][same]
        rx = rs.copy()
        rx[1:][same] = rs[1:][same] ^ rs[:-1][same]
        k_out = np.empty_like(k)
        k_out[order] = kd
        raw_out = np.empty_like(raw)
        raw_out[order] = rx
    else:
        k_out, raw_out = k.copy(), raw.copy()
    zig = ((k_out << 1) ^ (k_out >> 63)).view(np.uint64)
    return zig, raw_out


def _undelta_by_signal(d: np.ndarray, signal: np.ndarray) -> np.ndarray:
    """Prefix sums within runs of equal signal (int64, wrapping), inverse of the encoder's deltas."""
    n = d.shape[0]
    if n < 2:
        return d.copy()
    order = np.argsort(signal, kind="stable")
    ds = d[order]
    ss = signal[order]
    cum = np.cumsum(ds)
    run_start = np.ones(n, dtype=bool)
    run_start[1:] = ss[1:] != ss[:-1]
    start_idx = np.flatnonzero(run_start)
    before = np.zeros(start_idx.shape[0], dtype=np.int64)
    before[1:] = cum[start_idx[1:] - 1]
    run_id = np.cumsum(run_start) - 1
    out = np.empty_like(d)
    out[order] = cum - before[run_id]
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
    version: int = VERSION,
    quant: Quantisation | None = None,
    status: np.ndarray | None = None,
) -> bytes:
    """Encode one telemetry batch; the columns must have equal length (at most MAX_SAMPLES).

    ``status`` (v3 only): uint32 StatusCode per sample, 0 for Good; only the non-zero ones travel.

    ``version``: 1 (the default, what every decoder reads) or VERSION_V2 (coded values, ~2-3 bytes
    per sample instead of ~5 at 1 Hz). ``quant`` (v2 only): the signal table's scale/offset pairs,
    from :func:`quantisation`, so Modbus ``raw * scale + offset`` values travel as ``raw``.
    """
    if version not in (VERSION, VERSION_V2, VERSION_V3):
        raise ValueError(f"unknown telemetry version {version}")
    n = int(ts_ns.shape[0])
    if not (signal.shape[0] == value.shape[0] == quality.shape[0] == n):
        raise ValueError("columns differ in length")
    if status is not None and (version != VERSION_V3 or status.shape[0] != n):
        raise ValueError("status needs version 3 and one code per sample")
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
    if version in (VERSION_V2, VERSION_V3):
        return _encode_v2(gw, boot_epoch_ns, seq, table_hash, ts_d, sig_d, sig, value, quality, quant,
                          status if version == VERSION_V3 else None, version)
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


def _encode_v2(
    gw: bytes,
    boot_epoch_ns: int,
    seq: int,
    table_hash: bytes,
    ts_d: np.ndarray,
    sig_d: np.ndarray,
    sig: np.ndarray,
    value: np.ndarray,
    quality: np.ndarray,
    quant: Quantisation | None,
    status: np.ndarray | None = None,
    version: int = VERSION_V2,
) -> bytes:
    n = sig.shape[0]
    val = np.ascontiguousarray(value, dtype=np.float64)
    with np.errstate(all="ignore"):
        mode, k, p_scale, p_offset = _code_values(val, sig, quant)
    raw = np.where(mode == MODE_RAW, val.view(np.uint64), np.uint64(0))
    zig, raw_x = _encode_k_raw(k, raw, sig)
    body = b"".join(
        (
            p_scale.tobytes(),
            p_offset.tobytes(),
            _shuffle(ts_d),
            _shuffle(sig_d),
            mode.tobytes(),
            _shuffle(zig),
            _shuffle(raw_x),
            np.asarray(quality, dtype=np.uint8).tobytes(),
            *_sparse_status(status),
        )
    )
    compressed = zstandard.ZstdCompressor(level=_ZSTD_LEVEL, write_checksum=True).compress(body)
    if version == VERSION_V3:
        nstatus = 0 if status is None else int(np.count_nonzero(status))
        header = _PREFIX.pack(MAGIC, VERSION_V3, KIND_TELEMETRY) + _TELEMETRY_V3.pack(
            boot_epoch_ns, seq, table_hash, n, len(gw), p_scale.shape[0], nstatus
        )
    else:
        header = _PREFIX.pack(MAGIC, VERSION_V2, KIND_TELEMETRY) + _TELEMETRY_V2.pack(
            boot_epoch_ns, seq, table_hash, n, len(gw), p_scale.shape[0]
        )
    return header + gw + compressed


def _sparse_status(status: np.ndarray | None) -> tuple[bytes, ...]:
    """The v3 status column: (index deltas, codes) of the non-zero codes, byte-shuffled; empty when none."""
    if status is None:
        return ()
    codes = np.asarray(status, dtype=np.uint32)
    idx = np.flatnonzero(codes).astype(np.uint32)
    if idx.size == 0:
        return ()
    idx_d = np.empty_like(idx)
    idx_d[0] = idx[0]
    idx_d[1:] = np.diff(idx)
    return _shuffle(idx_d), _shuffle(codes[idx])


def _read_prefix(payload: bytes) -> tuple[int, int]:
    if len(payload) < _PREFIX.size:
        raise WireError(f"header: payload of {len(payload)} bytes is shorter than the {_PREFIX.size}-byte prefix")
    magic, version, kind = _PREFIX.unpack_from(payload, 0)
    if magic != MAGIC:
        raise WireError(f"header.magic: expected {MAGIC!r}, got {magic!r}")
    if version not in (VERSION, VERSION_V2, VERSION_V3) or (version != VERSION and kind != KIND_TELEMETRY):
        raise WireError(f"header.version: unsupported version {version} for kind {kind}")
    return version, kind


def peek_kind(payload: bytes) -> int:
    """Kind of a payload (telemetry or signal table) after checking magic and version."""
    return _read_prefix(payload)[1]


def _read_gateway(payload: bytes, off: int, gw_len: int) -> tuple[str, int]:
    """The gateway id every header carries after its fixed part; returns it and the offset past it."""
    if gw_len == 0 or len(payload) < off + gw_len:
        raise WireError("header.gateway: missing or truncated gateway id")
    try:
        gateway = payload[off : off + gw_len].decode()
    except UnicodeDecodeError:
        raise WireError("header.gateway: not UTF-8") from None
    return gateway, off + gw_len


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
    version, kind = _read_prefix(payload)
    if kind != KIND_TELEMETRY:
        raise WireError(f"header.kind: expected telemetry ({KIND_TELEMETRY}), got {kind}")
    if version in (VERSION_V2, VERSION_V3):
        return _decode_v2(payload, version)
    off = _PREFIX.size
    if len(payload) < off + _TELEMETRY.size:
        raise WireError("header: truncated telemetry header")
    boot, seq, thash, n, gw_len = _TELEMETRY.unpack_from(payload, off)
    off += _TELEMETRY.size
    if n > MAX_SAMPLES:
        raise WireError(f"header.n: {n} samples exceeds the limit of {MAX_SAMPLES}")
    gateway, off = _read_gateway(payload, off, gw_len)
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


def _decode_v2(payload: bytes, version: int = VERSION_V2) -> Batch:
    off = _PREFIX.size
    head = _TELEMETRY_V3 if version == VERSION_V3 else _TELEMETRY_V2
    if len(payload) < off + head.size:
        raise WireError(f"header: truncated telemetry v{version} header")
    if version == VERSION_V3:
        boot, seq, thash, n, gw_len, npairs, nstatus = _TELEMETRY_V3.unpack_from(payload, off)
    else:
        boot, seq, thash, n, gw_len, npairs = _TELEMETRY_V2.unpack_from(payload, off)
        nstatus = 0
    off += head.size
    if n > MAX_SAMPLES:
        raise WireError(f"header.n: {n} samples exceeds the limit of {MAX_SAMPLES}")
    if nstatus > n:
        raise WireError(f"header.nstatus: {nstatus} status entries for {n} samples")
    if npairs > MAX_PAIRS:
        raise WireError(f"header.npairs: {npairs} pairs exceeds the limit of {MAX_PAIRS}")
    gateway, off = _read_gateway(payload, off, gw_len)
    expected = 16 * npairs + n * _SAMPLE_BYTES_V2 + 8 * nstatus
    body = _decompress(payload[off:], max(expected, 1), "body")
    if len(body) != expected:
        raise WireError(f"body: {len(body)} bytes for {n} samples, {npairs} pairs and {nstatus} status entries, "
                        f"expected {expected}")
    mv = memoryview(body)
    p_scale = np.frombuffer(mv[0 : 8 * npairs], dtype=np.float64)
    p_offset = np.frombuffer(mv[8 * npairs : 16 * npairs], dtype=np.float64)
    o = 16 * npairs
    ts_d = _unshuffle(mv[o : o + 8 * n], n, np.dtype(np.int64))
    o += 8 * n
    sig_d = _unshuffle(mv[o : o + 4 * n], n, np.dtype(np.uint32))
    o += 4 * n
    mode = np.frombuffer(mv[o : o + n], dtype=np.uint8)
    o += n
    zig = _unshuffle(mv[o : o + 8 * n], n, np.dtype(np.uint64))
    o += 8 * n
    raw_x = _unshuffle(mv[o : o + 8 * n], n, np.dtype(np.uint64))
    o += 8 * n
    quality = np.frombuffer(mv[o : o + n], dtype=np.uint8).copy()
    o += n
    if n and int(quality.max()) > 2:
        raise WireError(f"body.quality: value {int(quality.max())} is not a known quality")
    status = _read_status(mv[o:], n, nstatus) if version == VERSION_V3 else None
    ts = np.cumsum(ts_d, dtype=np.int64)
    sig = np.cumsum(sig_d, dtype=np.uint32)
    k_d = ((zig >> np.uint64(1)) ^ (np.uint64(0) - (zig & np.uint64(1)))).view(np.int64)
    with np.errstate(all="ignore"):
        k = _undelta_by_signal(k_d, sig)
        raw = _unxor_by_signal(raw_x, sig)
        value = _decode_values(mode, k, raw, p_scale, p_offset)
    return Batch(gateway, boot, seq, thash, ts, sig, value, quality, status)


def _read_status(mv: memoryview, n: int, nstatus: int) -> np.ndarray:
    """Dense uint32 status column from the v3 sparse entries; validates indices and codes."""
    status = np.zeros(n, dtype=np.uint32)
    if not nstatus:
        return status
    idx_d = _unshuffle(mv[: 4 * nstatus], nstatus, np.dtype(np.uint32))
    codes = _unshuffle(mv[4 * nstatus : 8 * nstatus], nstatus, np.dtype(np.uint32))
    if nstatus > 1 and not (idx_d[1:] > 0).all():
        raise WireError("body.status: indices not strictly increasing")
    idx = np.cumsum(idx_d, dtype=np.uint64)
    if int(idx[-1]) >= n:
        raise WireError(f"body.status: index {int(idx[-1])} beyond {n} samples")
    if not codes.all():
        raise WireError("body.status: a Good (0) code in the sparse column")
    status[idx.astype(np.intp)] = codes
    return status


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
    gateway, off = _read_gateway(payload, off, gw_len)
    raw = _decompress(payload[off:], MAX_TABLE_BYTES, "body")
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
EVENT_TYPES = ("alarm", "health", "incident", "audit")  # incident, audit: issue 16 (contracts.md)


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


def stamp_events_seq(payload: bytes, seq: int) -> bytes:
    """An ``encode_events`` payload with its events-lane sequence number (``"seq"``) added.

    The edge's forwarder numbers events-lane messages per boot epoch as it logs them (the app encodes them
    before); the cloud answers with an *events ack* (``topic(site, gateway, "evack")``, the :class:`Ack`
    format: ``ranges`` of the seqs it stored, ``watermark`` -1), and only that frees them from the edge's log,
    as the ack watermark does for telemetry. A reader that does not know ``seq`` ignores it."""
    if not (payload.startswith(b'{"v":') and payload.endswith(b"]}")):
        raise WireError("events: not an encode_events payload (or already stamped)")
    return payload[:-1] + b',"seq":%d}' % int(seq)


def decode_events_seq(payload: bytes) -> tuple[str, int, int | None, list[dict]]:
    """``decode_events`` plus the events-lane seq (None from an edge that does not number its events)."""
    doc = _json_object(payload, "events")
    gateway, boot, events = _events_doc(doc)
    seq = doc.get("seq")
    if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool) or seq < 0):
        raise WireError(f"events.seq: expected a non-negative integer, got {seq!r}")
    return gateway, boot, seq, events


def decode_events(payload: bytes) -> tuple[str, int, list[dict]]:
    return _events_doc(_json_object(payload, "events"))


def _events_doc(doc: dict) -> tuple[str, int, list[dict]]:
    if doc.get("v") != EVENTS_VERSION:
        raise WireError(f"events.v: unsupported version {doc.get('v')!r}")
    gateway = doc.get("gateway")
    if not isinstance(gateway, str) or not gateway:
        raise WireError("events.gateway: expected a non-empty string")
    events = doc.get("events")
    if not isinstance(events, list):
        raise WireError("events.events: expected a list")
    # A type this version does not know is let through (a newer edge may send it): the reader
    # dead-letters that one document and stores the rest of the message.
    for i, ev in enumerate(events):
        if not isinstance(ev, dict) or not isinstance(ev.get("type"), str) or not ev["type"]:
            raise WireError(f"events.events[{i}].type: expected a non-empty string (one of {EVENT_TYPES})")
    return gateway, _int_field(doc, "boot_epoch_ns", "events"), events
