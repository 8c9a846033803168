"""Sparkplug B 3.0 payloads and topics: the one module that builds and parses them, as plantwire/wire.py is
for the compact wire.

The payload schema is the specification's own (``sparkplug_b.proto``, EPL-2.0, from Eclipse Tahu), compiled
by protoc into ``sparkplug_b_pb2.py``; the protobuf runtime does every varint and field tag. The .proto is
eclipse/tahu's ``sparkplug_b/sparkplug_b.proto`` at 5736e40 (2023-11-06), unchanged. To regenerate (in a
scratch virtualenv with grpcio-tools 1.85.1, whose protoc targets protobuf 7.35):
``python -m grpc_tools.protoc --proto_path=edge/sinks --python_out=edge/sinks edge/sinks/sparkplug_b.proto``.
Nothing here holds state: the edge node (``edge/sinks/sparkplug.py``) keeps seq, bdSeq and the last-sent values.

Choices, with the specification's clause where it has one:

- **Timestamps** are milliseconds since the epoch, UTC, on the payload and on every metric of a BIRTH or DATA
  message (tck-id-payloads-name-birth-data-requirement).
- **Aliases.** BIRTH metrics carry name, alias and datatype; DATA metrics carry alias, timestamp and value
  only (tck-id-payloads-alias-birth-requirement, -alias-data-cmd-requirement, -metric-datatype-not-req). The
  node metrics ``bdSeq`` and ``Node Control/Rebirth`` never appear in DATA and carry no alias
  (tck-id-operational-behavior-data-commands-rebirth-name-aliases).
- **Quality** is the ``Quality`` property (Int32; 192 GOOD, 0 BAD, 500 STALE; tck-id-payloads-propertyset-
  quality-value-type/-value). BIRTH metrics always carry it; DATA metrics carry it when the quality is not
  GOOD or has just returned to GOOD. plantwire's UNCERTAIN (a value read after the fact, or a source that
  says "maybe") has no Sparkplug code of its own and goes out as STALE.
- **Engineering metadata** rides as properties in BIRTH: ``engUnit`` (String), and ``engLow``/``engHigh``
  (Double) where the plant file gives a range: the property names Ignition's MQTT Engine maps to tag
  properties.
- **NaN** (a BAD sample has no value) is sent as ``is_null``.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.sinks import sparkplug_b_pb2 as pb

__all__ = [
    "BD_SEQ",
    "NAMESPACE",
    "REBIRTH",
    "Command",
    "DataType",
    "HostState",
    "MessageType",
    "MetricColumns",
    "PayloadError",
    "SparkplugQuality",
    "decode_command",
    "decode_state",
    "encode_birth",
    "encode_data",
    "encode_ddeath",
    "encode_ndeath",
    "encode_state",
    "quality_codes",
    "topic",
]

NAMESPACE = "spBv1.0"
BD_SEQ = "bdSeq"
REBIRTH = "Node Control/Rebirth"


class PayloadError(ValueError):
    """A payload (NCMD, DCMD, STATE) we cannot act on; the message says why."""


class MessageType(enum.StrEnum):
    NBIRTH = "NBIRTH"
    NDATA = "NDATA"
    NDEATH = "NDEATH"
    NCMD = "NCMD"
    DBIRTH = "DBIRTH"
    DDATA = "DDATA"
    DDEATH = "DDEATH"
    DCMD = "DCMD"


class DataType(enum.IntEnum):
    """The specification's datatype numbers (the ``DataType`` enum of sparkplug_b.proto) that we use."""

    INT32 = pb.Int32
    INT64 = pb.Int64
    UINT64 = pb.UInt64
    DOUBLE = pb.Double
    BOOLEAN = pb.Boolean
    STRING = pb.String


class SparkplugQuality(enum.IntEnum):
    BAD = 0
    GOOD = 192
    STALE = 500


#: plantwire Quality (GOOD 0, UNCERTAIN 1, BAD 2) -> Sparkplug quality code.
_QUALITY_CODES = np.array([SparkplugQuality.GOOD, SparkplugQuality.STALE, SparkplugQuality.BAD], dtype=np.int32)


def quality_codes(quality: np.ndarray) -> np.ndarray:
    """Sparkplug quality code of each plantwire quality (uint8 in, int32 out; unknown values map to BAD)."""
    return np.where(quality < 3, _QUALITY_CODES[np.minimum(quality, 2)], SparkplugQuality.BAD).astype(np.int32)


def topic(group_id: str, message_type: MessageType, edge_node_id: str, device_id: str | None = None) -> str:
    """``spBv1.0/<group>/<type>/<edge node>[/<device>]``."""
    base = f"{NAMESPACE}/{group_id}/{message_type.value}/{edge_node_id}"
    return base if device_id is None else f"{base}/{device_id}"


@dataclass(frozen=True, slots=True)
class MetricColumns:
    """What a BIRTH needs about a set of metrics, as columns (one row per metric).

    ``datatype`` holds DataType values; ``unit`` may be empty (no ``engUnit``); ``low``/``high`` may be NaN.
    """

    name: list[str]
    alias: np.ndarray  # uint64
    datatype: np.ndarray  # uint32
    unit: list[str]
    low: np.ndarray  # float64
    high: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.name)


def _set_value(m: pb.Payload.Metric, datatype: int, value: float) -> None:
    """Put a float64 engineering value into the metric's oneof for its datatype; NaN -> is_null."""
    if value != value:  # NaN
        m.is_null = True
    elif datatype == DataType.DOUBLE:
        m.double_value = value
    elif datatype == DataType.BOOLEAN:
        m.boolean_value = value != 0.0
    elif datatype == DataType.INT32:
        m.int_value = int(value) & 0xFFFFFFFF  # the spec carries signed 32-bit as its two's complement in uint32
    else:  # INT64 / UINT64
        m.long_value = int(value) & 0xFFFFFFFFFFFFFFFF


def _add_quality(ps: pb.Payload.PropertySet, code: int) -> None:
    ps.keys.append("Quality")
    pv = ps.values.add()
    pv.type = DataType.INT32
    pv.int_value = code


def encode_birth(
    *,
    ts_ms: int,
    seq: int,
    metrics: MetricColumns,
    value: np.ndarray,
    quality: np.ndarray,
    metric_ts_ms: np.ndarray,
    bd_seq: int | None = None,
) -> bytes:
    """An NBIRTH (``bd_seq`` given: adds ``bdSeq`` and ``Node Control/Rebirth``) or DBIRTH payload.

    ``value`` (float64), ``quality`` (Sparkplug codes, int32) and ``metric_ts_ms`` (int64) are per metric row.
    """
    p = pb.Payload()
    p.timestamp = ts_ms
    p.seq = seq
    if bd_seq is not None:
        m = p.metrics.add()
        m.name = BD_SEQ
        m.timestamp = ts_ms
        m.datatype = DataType.INT64
        m.long_value = bd_seq
        m = p.metrics.add()
        m.name = REBIRTH
        m.timestamp = ts_ms
        m.datatype = DataType.BOOLEAN
        m.boolean_value = False
    names, units = metrics.name, metrics.unit
    for i, (alias, dt, v, q, t, lo, hi) in enumerate(zip(
        metrics.alias.tolist(), metrics.datatype.tolist(), value.tolist(), quality.tolist(), metric_ts_ms.tolist(),
        metrics.low.tolist(), metrics.high.tolist(), strict=True,
    )):
        m = p.metrics.add()
        m.name = names[i]
        m.alias = alias
        m.timestamp = t
        m.datatype = dt
        _set_value(m, dt, v)
        ps = m.properties
        _add_quality(ps, q)
        if units[i]:
            ps.keys.append("engUnit")
            pv = ps.values.add()
            pv.type = DataType.STRING
            pv.string_value = units[i]
        for key, bound in (("engLow", lo), ("engHigh", hi)):
            if bound == bound:
                ps.keys.append(key)
                pv = ps.values.add()
                pv.type = DataType.DOUBLE
                pv.double_value = bound
    return p.SerializeToString()


def _seq(x: np.ndarray | Sequence[Any]) -> Sequence[Any]:
    return x.tolist() if isinstance(x, np.ndarray) else x


def encode_data(
    *,
    ts_ms: int,
    seq: int,
    alias: np.ndarray | Sequence[int],
    datatype: np.ndarray | Sequence[int],
    value: np.ndarray | Sequence[float],
    metric_ts_ms: np.ndarray | Sequence[int],
    quality: np.ndarray | Sequence[int],
    send_quality: np.ndarray | Sequence[bool],
    historical: bool = False,
) -> bytes:
    """A DDATA (or NDATA) payload: alias, timestamp and value per metric row, no names, no datatypes.

    Columns are numpy arrays or lists (the node passes list slices). ``quality`` holds Sparkplug codes;
    the property goes only on rows where ``send_quality`` is true.
    ``historical`` sets ``is_historical`` on every metric (stored data sent after the fact). Building a
    protobuf metric is per-metric Python by nature; bench/sparkplug.py measures it per reported metric.
    """
    p = pb.Payload()
    p.timestamp = ts_ms
    p.seq = seq
    metrics = p.metrics
    for a, dt, v, t, q, sq in zip(
        _seq(alias), _seq(datatype), _seq(value), _seq(metric_ts_ms), _seq(quality), _seq(send_quality), strict=True,
    ):
        m = metrics.add()
        m.alias = a
        m.timestamp = t
        if dt == DataType.DOUBLE and v == v:
            m.double_value = v
        else:
            _set_value(m, dt, v)
        if historical:
            m.is_historical = True
        if sq:
            _add_quality(m.properties, q)
    return p.SerializeToString()


def encode_ndeath(bd_seq: int) -> bytes:
    """The NDEATH (the MQTT will): a single ``bdSeq`` metric, no seq (tck-id-topics-ndeath-seq)."""
    p = pb.Payload()
    m = p.metrics.add()
    m.name = BD_SEQ
    m.datatype = DataType.INT64
    m.long_value = bd_seq
    return p.SerializeToString()


def encode_ddeath(ts_ms: int, seq: int) -> bytes:
    p = pb.Payload()
    p.timestamp = ts_ms
    p.seq = seq
    return p.SerializeToString()


@dataclass(frozen=True, slots=True)
class Command:
    """One metric of an NCMD or DCMD: addressed by name or alias (whichever the host sent)."""

    name: str | None
    alias: int | None
    value: bool | int | float | str | bytes | None


def decode_command(raw: bytes) -> list[Command]:
    """The metrics of an NCMD/DCMD payload; raises PayloadError when it is not a Sparkplug payload."""
    p = pb.Payload()
    try:
        p.ParseFromString(raw)
    except Exception as exc:  # protobuf raises DecodeError (a subclass of Exception) for any bad input
        raise PayloadError(f"not a Sparkplug B payload: {exc}") from None
    out: list[Command] = []
    for m in p.metrics:
        kind = m.WhichOneof("value")
        value = None if kind is None or m.is_null else getattr(m, kind)
        out.append(Command(m.name if m.HasField("name") else None, m.alias if m.HasField("alias") else None, value))
    return out


@dataclass(frozen=True, slots=True)
class HostState:
    online: bool
    timestamp_ms: int


def decode_state(raw: bytes) -> HostState:
    """A Sparkplug 3.0 STATE payload: JSON ``{"online": bool, "timestamp": ms}``."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"STATE is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise PayloadError("STATE is not a JSON object")
    online, ts = doc.get("online"), doc.get("timestamp")
    if not isinstance(online, bool):
        raise PayloadError("STATE has no boolean 'online'")
    if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
        raise PayloadError("STATE has no numeric 'timestamp'")
    return HostState(online, ts)


def encode_state(online: bool, timestamp_ms: int) -> bytes:
    """What a primary host publishes on ``spBv1.0/STATE/<host id>`` (used by tests and the bench)."""
    return json.dumps({"online": online, "timestamp": timestamp_ms}).encode()
