"""Turn lists of OPC-UA DataValues into frame columns, in a few passes per list, not one object per sample.

asyncua has already decoded the wire bytes into Python objects (that part is asyncua's, and it is
most of the cost); this module only walks them in tight comprehensions and does the rest with numpy.

Rules (the same for subscriptions, polling and HistoryRead back-fill):

- **Quality** from the StatusCode's severity bits (Part 4 7.34.1): Good -> GOOD, Uncertain ->
  UNCERTAIN, Bad -> BAD with the value set to NaN (a Bad value is not a measurement). Uncertain keeps
  its value.
- **Values**: numeric and Boolean variants become float64. Anything else (String, ByteString,
  arrays, structures, empty variants) cannot be a sample: it is delivered BAD with NaN and counted
  as ``unconvertible``, so a mis-typed node shows up in the data and the metrics instead of vanishing.
- **Status**: the uint32 StatusCode of every sample travels on (``Decoded.status``), so which Bad
  it was (BadSensorFailure, BadCommunicationError, ...) reaches the metrics and the data; a refused
  value gets BadTypeMismatch.
  Numeric strings are refused on purpose: a String node is a configuration error, not a number.
- **Timestamps**: SourceTimestamp when present, else ServerTimestamp, else the caller's fallback
  (receive or tick time), as int64 ns since the Unix epoch. A timestamp before 1970 (the OPC-UA
  null DateTime is 1601-01-01) or past 2262 (int64 ns) counts as absent. Datetimes are converted
  once per distinct value: a server stamps a whole scan with the same few times.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from asyncua import ua

from plantwire.plant import Quality

__all__ = ["Decoded", "datetime_to_ns", "decode_datavalues", "finish", "pick_timestamps", "quality_of_status"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_NUMERIC = frozenset({
    ua.VariantType.Boolean, ua.VariantType.SByte, ua.VariantType.Byte, ua.VariantType.Int16,
    ua.VariantType.UInt16, ua.VariantType.Int32, ua.VariantType.UInt32, ua.VariantType.Int64,
    ua.VariantType.UInt64, ua.VariantType.Float, ua.VariantType.Double,
})
# Severity (top two bits of a StatusCode) -> Quality: 00 Good, 01 Uncertain, 10 Bad, 11 reserved (Bad).
_SEVERITY_QUALITY = np.array([Quality.GOOD, Quality.UNCERTAIN, Quality.BAD, Quality.BAD], dtype=np.uint8)
_BAD = int(Quality.BAD)
_BAD_TYPE_MISMATCH = 0x80740000


def datetime_to_ns(dt: datetime) -> int:
    """Nanoseconds since the Unix epoch; naive datetimes are UTC (asyncua decodes DateTime as aware UTC)."""
    delta = dt - (_EPOCH if dt.tzinfo is not None else _EPOCH_NAIVE)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def quality_of_status(codes: np.ndarray) -> np.ndarray:
    """uint8 Quality per uint32 StatusCode value."""
    return _SEVERITY_QUALITY[np.right_shift(codes.astype(np.uint32, copy=False), 30)]


@dataclass(slots=True)
class Decoded:
    """Columns for one list of DataValues; ``ts_ns`` may be a scalar when every sample shares it."""

    ts_ns: np.ndarray  # int64
    value: np.ndarray  # float64
    quality: np.ndarray  # uint8
    bad_status: int  # samples whose StatusCode was Bad
    unconvertible: int  # samples with a value that is not a number (delivered BAD)
    status: np.ndarray  # uint32 StatusCode per sample (BadTypeMismatch for unconvertible values)


_NO_TS = -1  # "no usable timestamp" in the int64 timestamp columns
_INT64_MAX = 2**63 - 1


def _datetimes_ns(dts: list[datetime | None]) -> np.ndarray:
    """int64 ns per datetime, ``_NO_TS`` for None and for times before 1970 or after 2262 (the OPC-UA
    null DateTime is 1601; int64 ns ends in 2262). Converted once per distinct value."""
    lookup: dict[datetime | None, int] = dict.fromkeys(dts, _NO_TS)
    for dt in lookup:
        if dt is not None:
            ns = datetime_to_ns(dt)
            lookup[dt] = ns if 0 < ns <= _INT64_MAX else _NO_TS
    if len(lookup) == 1:
        return np.full(len(dts), next(iter(lookup.values())), dtype=np.int64)
    return np.fromiter(map(lookup.__getitem__, dts), dtype=np.int64, count=len(dts))


def pick_timestamps(source_ns: np.ndarray | None, server_ns: np.ndarray | None, fallback_ns: int) -> np.ndarray:
    """SourceTimestamp where usable, else ServerTimestamp, else ``fallback_ns`` (columns use ``_NO_TS``)."""
    if source_ns is None and server_ns is None:
        raise ValueError("need at least one timestamp column")
    ts = source_ns if source_ns is not None else server_ns
    assert ts is not None
    if server_ns is not None and source_ns is not None:
        ts = np.where(source_ns > 0, source_ns, server_ns)
    return np.where(ts > 0, ts, fallback_ns)


def finish(codes: np.ndarray, values: np.ndarray, convertible: np.ndarray | None, ts_ns: np.ndarray) -> Decoded:
    """Apply the quality rules to raw columns (shared by the object path here and the byte path in opcua_fastpath).

    ``values`` is modified in place; ``convertible`` is None when every value is a number.
    """
    quality = quality_of_status(codes)
    bad = quality == _BAD
    bad_status = int(np.count_nonzero(bad))
    n_unconvertible = 0
    if convertible is not None:
        # A Bad status already explains a missing value; count only the good/uncertain ones we refuse.
        refused = ~convertible & ~bad
        n_unconvertible = int(np.count_nonzero(refused))
        quality[refused] = _BAD
        bad |= refused
        if n_unconvertible:
            codes = codes.astype(np.uint32, copy=True)
            codes[refused] = _BAD_TYPE_MISMATCH
    if bad_status or n_unconvertible:
        values[bad] = np.nan
    return Decoded(ts_ns, values, quality, bad_status, n_unconvertible, codes.astype(np.uint32, copy=False))


def _values(variants: list[ua.Variant | None]) -> tuple[np.ndarray, np.ndarray | None]:
    """float64 values and, when some cannot be converted, a bool mask of the convertible ones."""
    n = len(variants)
    types = {v.VariantType if v is not None else None for v in variants}
    if types <= _NUMERIC:
        try:
            out = np.array([v.Value for v in variants], dtype=np.float64)  # type: ignore[union-attr]
        except (TypeError, ValueError):  # an array among scalars
            pass
        else:
            if out.shape == (n,):
                return out, None
    # Slow path, only for notifications carrying something odd: judge each variant.
    out = np.full(n, np.nan, dtype=np.float64)
    ok = np.zeros(n, dtype=bool)
    for i, v in enumerate(variants):
        if v is None or v.VariantType not in _NUMERIC or v.is_array or isinstance(v.Value, list | tuple):
            continue
        try:
            out[i] = float(v.Value)
        except (TypeError, ValueError, OverflowError):
            continue
        ok[i] = True
    return out, ok


def decode_datavalues(dvs: Sequence[ua.DataValue], fallback_ns: int, *, use_timestamps: bool = True) -> Decoded:
    """Columns for ``dvs`` (in order). ``fallback_ns`` stamps samples that carry no timestamp, and every
    sample when ``use_timestamps`` is False (polling)."""
    n = len(dvs)
    codes = np.fromiter((dv.StatusCode.value if dv.StatusCode is not None else 0 for dv in dvs),
                        dtype=np.uint32, count=n)
    values, convertible = _values([dv.Value for dv in dvs])
    if use_timestamps:
        source = _datetimes_ns([dv.SourceTimestamp for dv in dvs])
        server = _datetimes_ns([dv.ServerTimestamp for dv in dvs]) if np.any(source <= 0) else None
        ts = pick_timestamps(source, server, fallback_ns)
    else:
        ts = np.full(n, fallback_ns, dtype=np.int64)
    return finish(codes, values, convertible, ts)
