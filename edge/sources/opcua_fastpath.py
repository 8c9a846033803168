"""Decode PublishResponses straight from the bytes into columns, skipping asyncua's object per value.

Where the time goes without this: asyncua turns every MonitoredItemNotification into a
MonitoredItemNotification, a DataValue, a Variant, a StatusCode and one or two datetimes (about 5 us
of the ~6 us per sample the client spends; bench/opcua_source.py --profile). Here a
DataChangeNotification body becomes numpy columns:

- **Uniform notifications** (every item has the same DataValue encoding mask and the same scalar
  variant type, the usual case: one PLC, one data type) are read with one structured
  ``np.frombuffer``: no Python work per item at all.
- **Mixed notifications** (several scalar numeric types, some items with a status or without a
  value) are read item by item with ``struct.unpack_from``: still no objects.
- **Anything else** (arrays, strings, structures, unknown encodings) falls back to asyncua's decoder
  for that notification, and a message this module cannot parse at all is decoded by asyncua
  whole: the fast path may only ever be faster, never different. ``tests/test_opcua_source.py``
  checks it against asyncua + ``decode_datavalues`` (the reference) on random notifications.

Timestamps follow asyncua's resolution (DateTime truncated to microseconds) so the two paths agree
to the nanosecond.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import Primitives, from_binary, nodeid_from_binary

from .opcua_decode import Decoded, finish, pick_timestamps

__all__ = ["ColumnsNotification", "install", "parse_datachange", "parse_publish_response", "parse_read_response",
           "read"]

_DATACHANGE_ID = ua.ObjectIds.DataChangeNotification_Encoding_DefaultBinary
_PUBLISH_RESPONSE_ID = ua.ObjectIds.PublishResponse_Encoding_DefaultBinary
_READ_RESPONSE_ID = ua.ObjectIds.ReadResponse_Encoding_DefaultBinary
_EPOCH_AS_FILETIME = 116_444_736_000_000_000  # 1970-01-01 in 100 ns units since 1601
_FILETIME_LIMIT = _EPOCH_AS_FILETIME + (2**63 - 1) // 100  # beyond: int64 ns overflow (year 2262)

# Scalar numeric variant types: encoding byte -> numpy dtype of the value bytes.
_VARIANT_DTYPE: dict[int, np.dtype[Any]] = {
    1: np.dtype("u1"), 2: np.dtype("i1"), 3: np.dtype("u1"), 4: np.dtype("<i2"), 5: np.dtype("<u2"),
    6: np.dtype("<i4"), 7: np.dtype("<u4"), 8: np.dtype("<i8"), 9: np.dtype("<u8"), 10: np.dtype("<f4"),
    11: np.dtype("<f8"),
}
_VARIANT_STRUCT = {k: struct.Struct("<" + c) for k, c in
                   {1: "B", 2: "b", 3: "B", 4: "h", 5: "H", 6: "i", 7: "I", 8: "q", 9: "Q", 10: "f", 11: "d"}.items()}
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_I64 = struct.Struct("<q")
_BOOLEAN = 1


@dataclass(slots=True)
class ColumnsNotification:
    """A DataChangeNotification already decoded: client handles and the sample columns."""

    handles: np.ndarray  # int64 ClientHandle per item
    codes: np.ndarray  # uint32 StatusCode
    values: np.ndarray  # float64 (NaN where there is no value)
    convertible: np.ndarray | None  # bool, None when every item carries a number
    source_ns: np.ndarray  # int64 ns, -1 when absent or unusable
    server_ns: np.ndarray | None

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def decoded(self, fallback_ns: int) -> Decoded:
        """Apply the same quality and timestamp rules as ``decode_datavalues``."""
        return finish(self.codes, self.values, self.convertible,
                      pick_timestamps(self.source_ns, self.server_ns, fallback_ns))


def _filetime_ns(ft: np.ndarray) -> np.ndarray:
    """100 ns FILETIME -> int64 ns since 1970 at microsecond resolution (as asyncua); -1 when unusable."""
    ft = ft.astype(np.int64, copy=False)
    ok = (ft >= _EPOCH_AS_FILETIME + 10) & (ft < _FILETIME_LIMIT)
    safe = np.where(ok, ft, _EPOCH_AS_FILETIME)
    return np.where(ok, ((safe - _EPOCH_AS_FILETIME) // 10) * 1000, -1)


def _layout(mask: int, vtype: int, handles: bool) -> list[tuple[str, str, int]] | None:
    """Fields (name, numpy format, offset) of one MonitoredItemNotification (``handles``) or DataValue."""
    if mask & ~0x3F:
        return None
    fields = [("handle", "<u4", 0), ("mask", "u1", 4)] if handles else [("mask", "u1", 0)]
    off = fields[-1][2] + 1
    if mask & 0x01:
        dtype = _VARIANT_DTYPE.get(vtype)
        if dtype is None:
            return None
        fields.append(("vtype", "u1", off))
        fields.append(("value", dtype.str, off + 1))
        off += 1 + dtype.itemsize
    if mask & 0x02:
        fields.append(("status", "<u4", off))
        off += 4
    if mask & 0x04:
        fields.append(("source", "<i8", off))
        off += 8
    if mask & 0x08:
        fields.append(("server", "<i8", off))
        off += 8
    if mask & 0x10:
        off += 2  # SourcePicoseconds: below asyncua's resolution, ignored as asyncua does
    if mask & 0x20:
        off += 2
    fields.append(("_end", "V0", off))
    return fields


def _uniform(mv: memoryview, n: int, handles_present: bool = True) -> ColumnsNotification | None:
    first = 8 if handles_present else 4  # the first item's mask byte
    mask = mv[first]
    vtype = mv[first + 1] if mask & 0x01 else 0
    layout = _layout(mask, vtype, handles_present)
    if layout is None:
        return None
    size = layout[-1][2]
    end = 4 + n * size
    if len(mv) != end + 4 or _I32.unpack_from(mv, end)[0] > 0:  # the items, then empty DiagnosticInfos
        return None
    body = layout[:-1]
    dtype = np.dtype({"names": [f[0] for f in body], "formats": [f[1] for f in body],
                      "offsets": [f[2] for f in body], "itemsize": size})
    rec = np.frombuffer(mv, dtype=dtype, count=n, offset=4)
    if not np.all(rec["mask"] == mask) or (mask & 0x01 and not np.all(rec["vtype"] == vtype)):
        return None
    handles = rec["handle"].astype(np.int64) if handles_present else np.zeros(0, dtype=np.int64)
    codes = rec["status"].astype(np.uint32) if mask & 0x02 else np.zeros(n, dtype=np.uint32)
    convertible: np.ndarray | None = None
    if mask & 0x01:
        raw = rec["value"]
        values = (raw != 0).astype(np.float64) if vtype == _BOOLEAN else raw.astype(np.float64)
    else:
        values = np.full(n, np.nan)
        convertible = np.zeros(n, dtype=bool)
    source = _filetime_ns(rec["source"]) if mask & 0x04 else np.full(n, -1, dtype=np.int64)
    server = _filetime_ns(rec["server"]) if mask & 0x08 else None
    return ColumnsNotification(handles, codes, values, convertible, source, server)


def _itemwise(mv: memoryview, n: int, handles_present: bool = True) -> ColumnsNotification | None:
    handles = np.empty(n if handles_present else 0, dtype=np.int64)
    codes = np.zeros(n, dtype=np.uint32)
    values = np.full(n, np.nan)
    convertible = np.ones(n, dtype=bool)
    source = np.zeros(n, dtype=np.int64)
    server = np.zeros(n, dtype=np.int64)
    u32, i64, structs = _U32.unpack_from, _I64.unpack_from, _VARIANT_STRUCT
    pos = 4
    for i in range(n):
        if handles_present:
            handles[i] = u32(mv, pos)[0]
            pos += 4
        mask = mv[pos]
        pos += 1
        if mask & ~0x3F:
            return None
        if mask & 0x01:
            vtype = mv[pos]
            st = structs.get(vtype)
            if st is None:
                return None  # array, string, structure...: asyncua's job
            v = st.unpack_from(mv, pos + 1)[0]
            values[i] = float(v != 0) if vtype == _BOOLEAN else v
            pos += 1 + st.size
        else:
            convertible[i] = False
        if mask & 0x02:
            codes[i] = u32(mv, pos)[0]
            pos += 4
        if mask & 0x04:
            source[i] = i64(mv, pos)[0]
            pos += 8
        if mask & 0x08:
            server[i] = i64(mv, pos)[0]
            pos += 8
        pos += 2 * bool(mask & 0x10) + 2 * bool(mask & 0x20)
    if len(mv) != pos + 4 or _I32.unpack_from(mv, pos)[0] > 0:
        return None
    # Items without a timestamp have 0 here, which _filetime_ns maps to "absent".
    return ColumnsNotification(handles, codes, values, None if convertible.all() else convertible,
                               _filetime_ns(source), _filetime_ns(server))


def parse_datachange(body: bytes | memoryview, handles_present: bool = True) -> ColumnsNotification | None:
    """Columns of a DataChangeNotification body, or None when it holds something only asyncua decodes.

    With ``handles_present`` False: an array of DataValues followed by DiagnosticInfos (a ReadResponse's
    results); ``handles`` is then empty.
    """
    mv = memoryview(body)
    if len(mv) < 8:
        return None
    n = _I32.unpack_from(mv, 0)[0]
    if n <= 0:
        empty = np.zeros(0, dtype=np.int64)
        if len(mv) != 8 or _I32.unpack_from(mv, 4)[0] > 0:
            return None
        return ColumnsNotification(empty, np.zeros(0, np.uint32), np.zeros(0), None, empty, None)
    if len(mv) < 10:
        return None
    try:
        return _uniform(mv, n, handles_present) or _itemwise(mv, n, handles_present)
    except (struct.error, IndexError, ValueError):
        return None


def parse_publish_response(data: Buffer) -> ua.PublishResponse | None:
    """A PublishResponse whose DataChangeNotifications are ColumnsNotification; None -> let asyncua decode it."""
    buf = data.copy()
    typeid = nodeid_from_binary(buf)
    if typeid.NamespaceIndex != 0 or typeid.Identifier != _PUBLISH_RESPONSE_ID:
        return None
    header = from_binary(ua.ResponseHeader, buf)
    result = ua.PublishResult()
    result.SubscriptionId = Primitives.UInt32.unpack(buf)
    count = Primitives.Int32.unpack(buf)
    result.AvailableSequenceNumbers = [Primitives.UInt32.unpack(buf) for _ in range(max(count, 0))]
    result.MoreNotifications = Primitives.Boolean.unpack(buf)
    message = ua.NotificationMessage()
    message.SequenceNumber = Primitives.UInt32.unpack(buf)
    message.PublishTime = Primitives.DateTime.unpack(buf)
    count = Primitives.Int32.unpack(buf)
    notifications: list[Any] = []
    for _ in range(max(count, 0)):
        nid = nodeid_from_binary(buf)
        encoding = ord(buf.read(1))
        if not encoding & 0x01:
            return None
        length = Primitives.Int32.unpack(buf)
        if length < 0:
            return None
        body = buf.read(length)
        if nid.NamespaceIndex == 0 and nid.Identifier == _DATACHANGE_ID:
            columns = parse_datachange(body)
            notifications.append(columns if columns is not None
                                 else from_binary(ua.DataChangeNotification, Buffer(body)))
            continue
        cls = ua.extension_objects_by_typeid.get(nid)
        if cls is None:
            return None
        notifications.append(from_binary(cls, Buffer(body)))
    message.NotificationData = notifications
    result.NotificationMessage = message
    count = Primitives.Int32.unpack(buf)
    result.Results = [ua.StatusCode(Primitives.UInt32.unpack(buf)) for _ in range(max(count, 0))]
    count = Primitives.Int32.unpack(buf)
    result.DiagnosticInfos = [from_binary(ua.DiagnosticInfo, buf) for _ in range(max(count, 0))]
    response = ua.PublishResponse()
    response.ResponseHeader = header
    response.Parameters = result
    return response


def parse_read_response(data: Buffer) -> ColumnsNotification | None:
    """The results of a ReadResponse as columns (no handles); None -> let asyncua decode it."""
    buf = data.copy()
    typeid = nodeid_from_binary(buf)
    if typeid.NamespaceIndex != 0 or typeid.Identifier != _READ_RESPONSE_ID:
        return None
    header = from_binary(ua.ResponseHeader, buf)
    header.ServiceResult.check()
    return parse_datachange(bytes(buf), handles_present=False)


async def read(session: Any, params: ua.ReadParameters) -> ColumnsNotification | list[ua.DataValue]:
    """A Read service call whose answer is parsed here when it can be (as ``UaSession.read`` otherwise)."""
    from asyncua.ua.ua_binary import struct_from_binary

    request = ua.ReadRequest()
    request.Parameters = params
    data = await session._send_request(request)
    columns = parse_read_response(data)
    if columns is not None:
        return columns
    response = struct_from_binary(ua.ReadResponse, data)
    response.ResponseHeader.ServiceResult.check()
    return list(response.Results)


def install(session: Any, on_error: Callable[[BaseException], None] | None = None) -> None:
    """Make ``session`` (an asyncua UaSession) decode its PublishResponses here.

    Replaces the instance's ``publish`` (the coroutine asyncua's publish loop awaits) with one that
    sends the same request and parses the answer with ``parse_publish_response``; any message it
    cannot parse, or any error while parsing, goes through asyncua's own decoder instead.
    """
    from asyncua.ua.ua_binary import struct_from_binary
    from asyncua.ua.uaerrors import UaStructParsingError

    async def publish(acks: list[ua.SubscriptionAcknowledgement]) -> ua.PublishResponse:
        request = ua.PublishRequest()
        request.Parameters.SubscriptionAcknowledgements = acks if acks else []
        data = await session._send_request(request, timeout=0)
        try:
            response = parse_publish_response(data)
        except Exception as exc:  # the fast path must never lose a message
            if on_error is not None:
                on_error(exc)
            response = None
        if response is None:
            try:
                response = struct_from_binary(ua.PublishResponse, data)
            except Exception as exc:  # as asyncua's own publish(): the loop skips the message and goes on
                raise UaStructParsingError from exc
        return response

    session.publish = publish
