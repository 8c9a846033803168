"""OPC-UA StatusCode values and names: the vocabulary for *why* a sample is not Good.

Both sources speak it: an OPC-UA sample carries the server's code, and the Modbus source maps its
failures onto the nearest standard code (a timeout is ``BadTimeout``, an exception response 04 is
``BadDeviceFailure``), so one metric label, one wire column and one InfluxDB field describe every
bad sample, whatever the protocol. Names come from OPC-UA Part 6 (StatusCode.csv); only the codes
an edge is likely to meet are named here, the rest are shown as hex (``0x80AB0000``). Kept in
``plantwire`` (not asyncua) because the ingestor names codes too and must not import a client stack.
"""

from __future__ import annotations

import numpy as np

__all__ = ["GOOD", "MODBUS_EXCEPTION_NAMES", "STATUS_NAMES", "Status", "is_bad", "status_name"]

GOOD = 0


class Status:
    """The codes plantwire itself assigns (OPC-UA values)."""

    BAD_UNEXPECTED_ERROR = 0x80010000
    BAD_COMMUNICATION_ERROR = 0x80050000
    BAD_DECODING_ERROR = 0x80070000
    BAD_TIMEOUT = 0x800A0000
    BAD_NO_COMMUNICATION = 0x80310000
    BAD_DATA_ENCODING_INVALID = 0x80380000
    BAD_NOT_READABLE = 0x803A0000
    BAD_OUT_OF_RANGE = 0x803C0000
    BAD_NOT_SUPPORTED = 0x803D0000
    BAD_NOT_CONNECTED = 0x808A0000
    BAD_DEVICE_FAILURE = 0x808B0000
    BAD_SENSOR_FAILURE = 0x808C0000
    BAD_TYPE_MISMATCH = 0x80740000


#: uint32 code -> name, for the codes plantwire assigns and the ones servers commonly send.
STATUS_NAMES: dict[int, str] = {
    0x00000000: "Good",
    0x80010000: "BadUnexpectedError",
    0x80020000: "BadInternalError",
    0x80040000: "BadResourceUnavailable",
    0x80050000: "BadCommunicationError",
    0x80070000: "BadDecodingError",
    0x800A0000: "BadTimeout",
    0x800E0000: "BadShutdown",
    0x80310000: "BadNoCommunication",
    0x80320000: "BadWaitingForInitialData",
    0x80330000: "BadNodeIdInvalid",
    0x80340000: "BadNodeIdUnknown",
    0x80350000: "BadAttributeIdInvalid",
    0x80380000: "BadDataEncodingInvalid",
    0x803A0000: "BadNotReadable",
    0x803B0000: "BadNotWritable",
    0x803C0000: "BadOutOfRange",
    0x803D0000: "BadNotSupported",
    0x803E0000: "BadNotFound",
    0x803F0000: "BadObjectDeleted",
    0x80740000: "BadTypeMismatch",
    0x80890000: "BadConfigurationError",
    0x808A0000: "BadNotConnected",
    0x808B0000: "BadDeviceFailure",
    0x808C0000: "BadSensorFailure",
    0x808D0000: "BadOutOfService",
    0x80AB0000: "BadNoData",
    0x80B00000: "BadNoDataAvailable",
    0x40000000: "Uncertain",
    0x40900000: "UncertainNoCommunicationLastUsableValue",
    0x40910000: "UncertainLastUsableValue",
    0x40920000: "UncertainSubstituteValue",
    0x40930000: "UncertainInitialValue",
    0x40940000: "UncertainSensorNotAccurate",
    0x40950000: "UncertainEngineeringUnitsExceeded",
    0x40960000: "UncertainSubNormal",
}


def status_name(code: int) -> str:
    """The code's name; unknown codes by their severity-and-subcode part in hex (info bits dropped)."""
    code = int(code) & 0xFFFFFFFF
    name = STATUS_NAMES.get(code & 0xFFFF0000)
    return name if name is not None else f"0x{code & 0xFFFF0000:08X}"


def is_bad(codes: np.ndarray) -> np.ndarray:
    """Severity Bad (top bit set) per uint32 code."""
    return np.right_shift(np.asarray(codes, dtype=np.uint32), 31).astype(bool)


#: Modbus exception code -> its name in the Modbus specification (metrics label, log lines).
MODBUS_EXCEPTION_NAMES: dict[int, str] = {
    1: "ILLEGAL FUNCTION",
    2: "ILLEGAL DATA ADDRESS",
    3: "ILLEGAL DATA VALUE",
    4: "SERVER DEVICE FAILURE",
    5: "ACKNOWLEDGE",
    6: "SERVER DEVICE BUSY",
    8: "MEMORY PARITY ERROR",
    10: "GATEWAY PATH UNAVAILABLE",
    11: "GATEWAY TARGET DEVICE FAILED TO RESPOND",
}
