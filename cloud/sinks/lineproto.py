"""InfluxDB line protocol built vectorised from a decoded telemetry batch (no Python object per sample).

Schema (one point per sample)::

    samples,gateway=<gw>,machine=<machine>,signal=<id>,site=<site> value=<float> <ts_ns>                (good)
    samples,gateway=<gw>,machine=<machine>,signal=<id>,site=<site> value=<float>,quality=<q>i <ts_ns>   (not good)

- Tags are written in key order (InfluxDB sorts them anyway; pre-sorted saves it the work). A tag
  whose value is empty (a signal without machine) is left out, since line protocol has no empty
  tag values.
- ``quality`` (integer, 1 uncertain / 2 bad) is written only on points that are not good; **an absent
  quality means good** (0). A second field costs InfluxDB 1.x about 40 % of a point's CPU (6.45 vs
  10.3 µs at 10,000-line requests, bench/RESULTS.md), and nearly every sample is good. Until
  2026-12-03 every point carried it (``quality=0i`` on good ones): readers must take both forms, and
  old points keep theirs. Counting samples is therefore ``count(value) + count(nonfinite)`` (every point
  has exactly one of the two), no longer ``count(quality)``; ``max(quality)`` over a stretch is its worst
  quality, null when all of it was good.
- ``value`` is the float exactly: it is printed as the shortest decimal that parses back to the same
  float64, character for character what Python's ``repr`` prints (``-0.0``, ``1e-05``, ``5e-324``,
  ``1.7976931348623157e+308``).
- InfluxDB rejects NaN and infinite fields, and one such sample would fail the whole request. A
  non-finite sample is therefore written without ``value`` and with a string field
  ``nonfinite="nan"`` (or ``"+inf"``, ``"-inf"``) (after its quality when not good): the point still
  exists, counts, and says what the sensor delivered; nothing is dropped.
- ``status`` (string, the OPC-UA StatusCode's name: ``"BadSensorFailure"``, ``"BadTimeout"``,
  ``"UncertainLastUsableValue"``, unknown codes as ``"0x80FE0000"``) is written only on points that
  are not plain Good and only for batches that carry it (wire v3). Good points stay as short as
  before; ``SELECT count(status) ... GROUP BY status`` tells failed sensors from a dead network.
  Names are looked up once per distinct code in the batch, then copied by the kernel.

Each signal's series key (measurement plus escaped tags plus the space before the fields) is
built once per signal table (:class:`SeriesPrefixes`). The per-sample work is one numba kernel
that copies the prefix and prints value, quality and timestamp into a preallocated ``uint8``
buffer. Float printing is a port of Ryu (Ulf Adams, "Ryū: fast float-to-string conversion",
PLDI 2018; reference code Apache-2.0/Boost) with 128-bit products done in 64-bit halves, laid
out as Python's ``repr``. numpy's own ``astype(bytes)`` costs ~800 ns per float64 here and
``repr`` ~550 ns; the kernel does the whole line in a small fraction of that (see bench figures
in the module's tests and the ingestor report).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numba
import numpy as np

from plantwire.status import status_name

__all__ = [
    "BACKSLASH_STANDIN",
    "Lines",
    "SeriesPrefixes",
    "build_lines",
    "escape_key",
    "escape_measurement",
    "escape_tag_value",
    "stored_name",
]

# -- escaping (once per signal table, plain Python) --------------------------------------------


#: What a backslash that InfluxDB cannot store becomes (U+29F5 REVERSE SOLIDUS OPERATOR, looks alike).
BACKSLASH_STANDIN = "\u29f5"
_BAD_BACKSLASH = re.compile(r"\\(?=[,= ]|$)")


def escape_measurement(s: str) -> str:
    """Measurement names: commas and spaces are escaped; see :func:`escape_key` for backslashes."""
    return _storable(s).replace(",", "\\,").replace(" ", "\\ ")


def escape_key(s: str) -> str:
    """Tag keys, tag values and field keys: commas, equals signs and spaces are escaped.

    InfluxDB 1.x's parser takes a backslash as escaping whatever byte follows, but unescapes only
    ``\\,``, ``\\=`` and ``\\ `` (measured on 1.6: ``y\\z`` is stored as written, ``x\\`` at
    the end of a tag and ``x\\\\,`` are rejected as "invalid tag format"). A backslash at the end
    of a name or right before one of those three characters therefore cannot be stored at all; it is
    written as :data:`BACKSLASH_STANDIN` instead, so the line is accepted and the name stays readable.
    Every other backslash is stored as is.
    """
    return _storable(s).replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def escape_tag_value(s: str) -> str:
    """A tag value (same rules as :func:`escape_key`)."""
    return escape_key(s)


def stored_name(s: str) -> str:
    """The string InfluxDB stores for a tag value or key ``s`` written through these escapes."""
    return _storable(s)


def _storable(s: str) -> str:
    # A newline ends a line of line protocol and cannot be escaped: show it as the two characters
    # backslash-n, so the tag stays readable and the line stays parseable.
    s = s.replace("\r", "\\r").replace("\n", "\\n")
    return _BAD_BACKSLASH.sub(BACKSLASH_STANDIN, s)


@dataclass(frozen=True, slots=True)
class SeriesPrefixes:
    """Per-signal series keys for one signal table, concatenated in one ``uint8`` buffer.

    ``prefix(i) = buf[offset[i] : offset[i] + length[i]]`` ends with the space before the fields.
    """

    buf: np.ndarray  # uint8
    offset: np.ndarray  # int64
    length: np.ndarray  # int64

    def __len__(self) -> int:
        return int(self.offset.shape[0])

    @classmethod
    def build(
        cls,
        measurement: str,
        *,
        site: str,
        gateway: str,
        ids: Sequence[str],
        machines: Sequence[str],
    ) -> SeriesPrefixes:
        head = escape_measurement(measurement)
        gw = f",gateway={escape_tag_value(gateway)}" if gateway else ""
        st = f",site={escape_tag_value(site)}" if site else ""
        parts: list[bytes] = []
        for sid, machine in zip(ids, machines, strict=True):
            m = f",machine={escape_tag_value(machine)}" if machine else ""
            s = f",signal={escape_tag_value(sid)}" if sid else ""
            parts.append(f"{head}{gw}{m}{s}{st} ".encode())
        lengths = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
        offsets = np.zeros(len(parts), dtype=np.int64)
        if len(parts) > 1:
            np.cumsum(lengths[:-1], out=offsets[1:])
        buf = np.frombuffer(b"".join(parts), dtype=np.uint8).copy()
        return cls(buf, offsets, lengths)

    def prefix(self, i: int) -> bytes:
        o = int(self.offset[i])
        return self.buf[o : o + int(self.length[i])].tobytes()


@dataclass(frozen=True, slots=True)
class Lines:
    """Line protocol for one batch: the bytes and where each line ends (exclusive, after ``\\n``)."""

    data: np.ndarray  # uint8
    line_end: np.ndarray  # int64

    def __len__(self) -> int:
        return int(self.line_end.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.data.shape[0])

    def tobytes(self) -> bytes:
        return self.data.tobytes()

    def chunks(self, max_lines: int) -> Iterator[memoryview]:
        """Consecutive slices of at most ``max_lines`` whole lines each (zero-copy views)."""
        n = len(self)
        mv = memoryview(self.data)
        start = 0
        for first in range(0, n, max_lines):
            end = int(self.line_end[min(first + max_lines, n) - 1])
            yield mv[start:end]
            start = end


def build_lines(
    prefixes: SeriesPrefixes,
    ts_ns: np.ndarray,
    signal: np.ndarray,
    value: np.ndarray,
    quality: np.ndarray,
    status: np.ndarray | None = None,
) -> Lines:
    """Line protocol for the samples (columns of equal length); ``signal`` indexes ``prefixes``.

    ``status``: uint32 OPC-UA StatusCode per sample (0 = Good, no field written), or None.
    Raises ValueError for columns of unequal length or a signal index outside the table.
    """
    n = int(ts_ns.shape[0])
    if not (signal.shape[0] == value.shape[0] == quality.shape[0] == n):
        raise ValueError("columns differ in length")
    if status is not None and status.shape[0] != n:
        raise ValueError("columns differ in length")
    if n == 0:
        return Lines(np.empty(0, dtype=np.uint8), np.empty(0, dtype=np.int64))
    sig = np.ascontiguousarray(signal, dtype=np.int64)
    top = int(sig.max())
    if top >= len(prefixes) or int(sig.min()) < 0:
        raise ValueError(f"signal index {top} outside the signal table of {len(prefixes)} signals")
    sidx, names, name_off, name_len = _status_names(status, n)
    bound = int(prefixes.length[sig].sum()) + n * _MAX_FIELDS_BYTES
    if name_len.size:
        bound += int(np.count_nonzero(sidx >= 0)) * (len(_STATUS_EQ) + 1 + int(name_len.max()))
    out = np.empty(bound, dtype=np.uint8)
    line_end = np.empty(n, dtype=np.int64)
    used = _build_kernel(
        prefixes.buf,
        prefixes.offset,
        prefixes.length,
        sig,
        np.ascontiguousarray(value, dtype=np.float64).view(np.uint64),
        np.ascontiguousarray(quality, dtype=np.uint8),
        np.ascontiguousarray(ts_ns, dtype=np.int64),
        sidx,
        names,
        name_off,
        name_len,
        out,
        line_end,
    )
    return Lines(out[:used], line_end)


def _status_names(status: np.ndarray | None, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per sample an index into a table of escaped status names (-1: Good, no field); the table as one
    byte buffer with offsets and lengths. Empty arrays when no sample carries a status."""
    empty = np.zeros(0, dtype=np.int64)
    if status is None:
        return np.full(0, -1, dtype=np.int32), np.zeros(0, dtype=np.uint8), empty, empty
    codes = np.ascontiguousarray(status, dtype=np.uint32)
    nz = np.flatnonzero(codes)
    if nz.size == 0:
        return np.full(0, -1, dtype=np.int32), np.zeros(0, dtype=np.uint8), empty, empty
    uniq = np.unique(codes[nz])
    encoded = [status_name(int(c)).replace("\\", "").replace('"', "").encode() for c in uniq.tolist()]
    lengths = np.array([len(e) for e in encoded], dtype=np.int64)
    offsets = np.cumsum(lengths) - lengths
    sidx = np.full(n, -1, dtype=np.int32)
    sidx[nz] = np.searchsorted(uniq, codes[nz]).astype(np.int32)
    return sidx, np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), offsets, lengths


# -- the kernel ------------------------------------------------------------------------------------
# Upper bound of everything after the prefix: 'value=' 6 + float 24 + ',quality=' 9 + '255i' 4 +
# ' ' 1 + int64 20 + '\n' 1 = 65; the non-finite form is shorter.
_MAX_FIELDS_BYTES = 72

_POW5_INV_BITCOUNT = 125
_POW5_BITCOUNT = 125
_M64 = (1 << 64) - 1


def _ryu_tables() -> tuple[np.ndarray, np.ndarray]:
    """Ryu's 128-bit tables of 5^-q and 5^i, computed exactly with Python integers at import."""
    inv = np.empty((342, 2), dtype=np.uint64)
    for q in range(342):
        p = 5**q
        v = (1 << (p.bit_length() - 1 + _POW5_INV_BITCOUNT)) // p + 1
        inv[q, 0], inv[q, 1] = v & _M64, v >> 64
    pos = np.empty((326, 2), dtype=np.uint64)
    for i in range(326):
        p = 5**i
        shift = p.bit_length() - _POW5_BITCOUNT
        v = p >> shift if shift >= 0 else p << -shift
        pos[i, 0], pos[i, 1] = v & _M64, v >> 64
    return inv, pos


_POW5_INV_SPLIT, _POW5_SPLIT = _ryu_tables()

_U0 = np.uint64(0)
_U1 = np.uint64(1)
_U2 = np.uint64(2)
_U4 = np.uint64(4)
_U5 = np.uint64(5)
_U10 = np.uint64(10)
_U32 = np.uint64(32)
_U52 = np.uint64(52)
_U63 = np.uint64(63)
_U64 = np.uint64(64)
_M32 = np.uint64(0xFFFFFFFF)
_MANT_MASK = np.uint64((1 << 52) - 1)
_EXP_MASK = np.uint64(0x7FF)
_HIDDEN = np.uint64(1 << 52)
_E8 = np.uint64(100_000_000)
_POW10 = np.array([10**k for k in range(20)], dtype=np.uint64)
_DIGIT_PAIRS = np.frombuffer(b"".join(b"%02d" % i for i in range(100)), dtype=np.uint8).copy()


@numba.njit(cache=True, inline="always")
def _umul128_hi_lo(a: np.uint64, b: np.uint64) -> tuple[np.uint64, np.uint64]:
    a_lo = a & _M32
    a_hi = a >> _U32
    b_lo = b & _M32
    b_hi = b >> _U32
    b00 = a_lo * b_lo
    b01 = a_lo * b_hi
    b10 = a_hi * b_lo
    b11 = a_hi * b_hi
    mid1 = b10 + (b00 >> _U32)
    mid2 = b01 + (mid1 & _M32)
    hi = b11 + (mid1 >> _U32) + (mid2 >> _U32)
    lo = (mid2 << _U32) | (b00 & _M32)
    return hi, lo


@numba.njit(cache=True, inline="always")
def _mul_shift64(m: np.uint64, mul_lo: np.uint64, mul_hi: np.uint64, j: np.int64) -> np.uint64:
    """(m * mul) >> j for the 128-bit ``mul``; 64 < j < 128 here."""
    high0, _low0 = _umul128_hi_lo(m, mul_lo)
    high1, low1 = _umul128_hi_lo(m, mul_hi)
    total = high0 + low1
    if total < high0:
        high1 += _U1
    dist = np.uint64(j - 64)
    return (high1 << (_U64 - dist)) | (total >> dist)


@numba.njit(cache=True, inline="always")
def _pow5_factor(v: np.uint64) -> np.int64:
    count = 0
    while v != _U0 and v % _U5 == _U0:
        v = v // _U5
        count += 1
    return count


@numba.njit(cache=True, inline="always")
def _decimal_length(v: np.uint64, most: np.int64) -> np.int64:
    """Number of decimal digits of v, for v < 10**most; counts down since long numbers are the norm."""
    n = most
    while n > 1 and v < _POW10[n - 1]:
        n -= 1
    return n


@numba.njit(cache=True)
def _shortest(ieee_mantissa: np.uint64, ieee_exponent: np.int64) -> tuple[np.uint64, np.int64]:
    """Shortest decimal (digits, exponent) with digits * 10**exponent == the float (Ryu's d2d)."""
    # Small integers in [1, 2**53): exact, no table needed.
    if ieee_exponent != 0:
        e2i = ieee_exponent - 1075
        if -52 <= e2i <= 0:
            m2i = _HIDDEN | ieee_mantissa
            shift = np.uint64(-e2i)
            if m2i & ((_U1 << shift) - _U1) == _U0:
                return m2i >> shift, 0
    if ieee_exponent == 0:
        e2 = 1 - 1023 - 52 - 2
        m2 = ieee_mantissa
    else:
        e2 = ieee_exponent - 1023 - 52 - 2
        m2 = _HIDDEN | ieee_mantissa
    even = (m2 & _U1) == _U0
    accept_bounds = even
    mv = m2 * _U4
    mm_shift = _U1 if (ieee_mantissa != _U0 or ieee_exponent <= 1) else _U0
    vm_trailing = False
    vr_trailing = False
    if e2 >= 0:
        q = ((e2 * 78913) >> 18) - (1 if e2 > 3 else 0)
        e10 = q
        k = _POW5_INV_BITCOUNT + (((q * 1217359) >> 19) + 1) - 1
        i = -e2 + q + k
        mul_lo = _POW5_INV_SPLIT[q, 0]
        mul_hi = _POW5_INV_SPLIT[q, 1]
        vr = _mul_shift64(mv, mul_lo, mul_hi, i)
        vp = _mul_shift64(mv + _U2, mul_lo, mul_hi, i)
        vm = _mul_shift64(mv - _U1 - mm_shift, mul_lo, mul_hi, i)
        if q <= 21:
            if mv % _U5 == _U0:
                vr_trailing = _pow5_factor(mv) >= q
            elif accept_bounds:
                vm_trailing = _pow5_factor(mv - _U1 - mm_shift) >= q
            else:
                if _pow5_factor(mv + _U2) >= q:
                    vp -= _U1
    else:
        q = (((-e2) * 732923) >> 20) - (1 if -e2 > 1 else 0)
        e10 = q + e2
        i = -e2 - q
        k = (((i * 1217359) >> 19) + 1) - _POW5_BITCOUNT
        j = q - k
        mul_lo = _POW5_SPLIT[i, 0]
        mul_hi = _POW5_SPLIT[i, 1]
        vr = _mul_shift64(mv, mul_lo, mul_hi, j)
        vp = _mul_shift64(mv + _U2, mul_lo, mul_hi, j)
        vm = _mul_shift64(mv - _U1 - mm_shift, mul_lo, mul_hi, j)
        if q <= 1:
            vr_trailing = True
            if accept_bounds:
                vm_trailing = mm_shift == _U1
            else:
                vp -= _U1
        elif q < 63:
            vr_trailing = (mv & ((_U1 << np.uint64(q)) - _U1)) == _U0
    removed = 0
    last_removed = _U0
    if vm_trailing or vr_trailing:
        while True:
            vp_div = vp // _U10
            vm_div = vm // _U10
            if vp_div <= vm_div:
                break
            vm_mod = vm - vm_div * _U10
            vr_div = vr // _U10
            vr_mod = vr - vr_div * _U10
            vm_trailing = vm_trailing and vm_mod == _U0
            vr_trailing = vr_trailing and last_removed == _U0
            last_removed = vr_mod
            vr = vr_div
            vp = vp_div
            vm = vm_div
            removed += 1
        if vm_trailing:
            while True:
                vm_div = vm // _U10
                vm_mod = vm - vm_div * _U10
                if vm_mod != _U0:
                    break
                vp_div = vp // _U10
                vr_div = vr // _U10
                vr_mod = vr - vr_div * _U10
                vr_trailing = vr_trailing and last_removed == _U0
                last_removed = vr_mod
                vr = vr_div
                vp = vp_div
                vm = vm_div
                removed += 1
        if vr_trailing and last_removed == _U5 and vr % _U2 == _U0:
            last_removed = np.uint64(4)
        up = (vr == vm and (not accept_bounds or not vm_trailing)) or last_removed >= _U5
        output = vr + (_U1 if up else _U0)
    else:
        round_up = False
        vp_div100 = vp // np.uint64(100)
        vm_div100 = vm // np.uint64(100)
        if vp_div100 > vm_div100:
            vr_div100 = vr // np.uint64(100)
            vr_mod100 = vr - vr_div100 * np.uint64(100)
            round_up = vr_mod100 >= np.uint64(50)
            vr = vr_div100
            vp = vp_div100
            vm = vm_div100
            removed += 2
        while True:
            vp_div = vp // _U10
            vm_div = vm // _U10
            if vp_div <= vm_div:
                break
            vr_div = vr // _U10
            vr_mod = vr - vr_div * _U10
            round_up = vr_mod >= _U5
            vr = vr_div
            vp = vp_div
            vm = vm_div
            removed += 1
        output = vr + (_U1 if (vr == vm or round_up) else _U0)
    return output, e10 + removed


@numba.njit(cache=True, inline="always")
def _put_pair(out: np.ndarray, p: np.int64, x: np.uint32) -> None:
    i = np.int64(x) * 2
    out[p] = _DIGIT_PAIRS[i]
    out[p + 1] = _DIGIT_PAIRS[i + 1]


@numba.njit(cache=True, inline="always")
def _put_digits(out: np.ndarray, pos: np.int64, v: np.uint64, n: np.int64) -> None:
    """Write the n decimal digits of v at out[pos : pos + n] (v < 10**n).

    Eight digits at a time from the right, each eight as four independent digit pairs in 32-bit
    arithmetic: a chain of single-digit divisions is latency-bound and costs twice as much.
    """
    p = pos + n
    while p - pos > 8:
        q = v // _E8
        x = np.uint32(v - q * _E8)
        hi = x // np.uint32(10000)
        lo = x - hi * np.uint32(10000)
        a = hi // np.uint32(100)
        c = lo // np.uint32(100)
        _put_pair(out, p - 8, a)
        _put_pair(out, p - 6, hi - a * np.uint32(100))
        _put_pair(out, p - 4, c)
        _put_pair(out, p - 2, lo - c * np.uint32(100))
        v = q
        p -= 8
    x = np.uint32(v)
    while p - pos >= 2:
        q32 = x // np.uint32(100)
        _put_pair(out, p - 2, x - q32 * np.uint32(100))
        x = q32
        p -= 2
    if p > pos:
        out[pos] = np.uint8(48 + x)


@numba.njit(cache=True)
def _put_float(out: np.ndarray, pos: np.int64, bits: np.uint64) -> np.int64:
    """Print a finite float64 as Python's repr does; returns the position after it."""
    if bits >> _U63:
        out[pos] = 45  # '-'
        pos += 1
    mant = bits & _MANT_MASK
    expo = np.int64((bits >> _U52) & _EXP_MASK)
    if expo == 0 and mant == _U0:
        out[pos] = 48
        out[pos + 1] = 46
        out[pos + 2] = 48
        return pos + 3
    digits, exp10 = _shortest(mant, expo)
    while digits % _U10 == _U0:
        digits = digits // _U10
        exp10 += 1
    n = _decimal_length(digits, 17)
    decpt = n + exp10  # value = 0.<digits> * 10**decpt
    if decpt <= -4 or decpt > 16:
        # d[.ddd]e[+-]XX
        _put_digits(out, pos + 1, digits, n)
        out[pos] = out[pos + 1]
        if n > 1:
            out[pos + 1] = 46
            pos += n + 1
        else:
            pos += 1
        out[pos] = 101  # 'e'
        e = decpt - 1
        if e < 0:
            out[pos + 1] = 45
            e = -e
        else:
            out[pos + 1] = 43
        pos += 2
        ne = 3 if e >= 100 else 2
        _put_digits(out, pos, np.uint64(e), ne)
        return pos + ne
    if decpt <= 0:
        out[pos] = 48
        out[pos + 1] = 46
        pos += 2
        for _ in range(-decpt):
            out[pos] = 48
            pos += 1
        _put_digits(out, pos, digits, n)
        return pos + n
    if decpt >= n:
        _put_digits(out, pos, digits, n)
        pos += n
        for _ in range(decpt - n):
            out[pos] = 48
            pos += 1
        out[pos] = 46
        out[pos + 1] = 48
        return pos + 2
    # digits with the point inside: print the digits one place right, then pull the head back.
    _put_digits(out, pos + 1, digits, n)
    for k in range(decpt):
        out[pos + k] = out[pos + k + 1]
    out[pos + decpt] = 46
    return pos + n + 1


@numba.njit(cache=True, inline="always")
def _put_int(out: np.ndarray, pos: np.int64, v: np.int64) -> np.int64:
    if v < 0:
        out[pos] = 45
        pos += 1
        u = np.uint64(-(v + 1)) + _U1  # also right for the most negative int64
    else:
        u = np.uint64(v)
    n = _decimal_length(u, 20)
    _put_digits(out, pos, u, n)
    return pos + n


_VALUE_EQ = np.frombuffer(b"value=", dtype=np.uint8).copy()
_QUALITY_EQ = np.frombuffer(b"quality=", dtype=np.uint8).copy()
_NONFINITE = np.frombuffer(b'nonfinite="', dtype=np.uint8).copy()
_STATUS_EQ = np.frombuffer(b',status="', dtype=np.uint8).copy()


@numba.njit(cache=True, nogil=True)
def _build_kernel(
    pbuf: np.ndarray,
    poff: np.ndarray,
    plen: np.ndarray,
    sig: np.ndarray,
    vbits: np.ndarray,
    qual: np.ndarray,
    ts: np.ndarray,
    sidx: np.ndarray,
    names: np.ndarray,
    name_off: np.ndarray,
    name_len: np.ndarray,
    out: np.ndarray,
    line_end: np.ndarray,
) -> np.int64:
    has_status = sidx.shape[0] > 0
    pos = 0
    for r in range(sig.shape[0]):
        s = sig[r]
        o = poff[s]
        for k in range(plen[s]):
            out[pos + k] = pbuf[o + k]
        pos += plen[s]
        bits = vbits[r]
        finite = ((bits >> _U52) & _EXP_MASK) != _EXP_MASK
        if finite:
            for k in range(6):
                out[pos + k] = _VALUE_EQ[k]
            pos = _put_float(out, pos + 6, bits)
        q = qual[r]
        if q != 0:  # good points carry no quality field (absent means good)
            if finite:
                out[pos] = 44  # ','
                pos += 1
            for k in range(8):
                out[pos + k] = _QUALITY_EQ[k]
            pos = _put_int(out, pos + 8, np.int64(q))
            out[pos] = 105  # 'i'
            pos += 1
        if not finite:
            if q != 0:
                out[pos] = 44  # ','
                pos += 1
            for k in range(11):
                out[pos + k] = _NONFINITE[k]
            pos += 11
            if bits & _MANT_MASK:
                out[pos] = 110  # nan
                out[pos + 1] = 97
                out[pos + 2] = 110
                pos += 3
            else:
                out[pos] = 45 if bits >> _U63 else 43
                out[pos + 1] = 105  # inf
                out[pos + 2] = 110
                out[pos + 3] = 102
                pos += 4
            out[pos] = 34  # '"'
            pos += 1
        if has_status and sidx[r] >= 0:
            for k in range(9):
                out[pos + k] = _STATUS_EQ[k]
            pos += 9
            j = sidx[r]
            no = name_off[j]
            for k in range(name_len[j]):
                out[pos + k] = names[no + k]
            pos += name_len[j]
            out[pos] = 34  # '"'
            pos += 1
        out[pos] = 32  # ' '
        pos = _put_int(out, pos + 1, ts[r])
        out[pos] = 10  # '\n'
        pos += 1
        line_end[r] = pos
    return pos
