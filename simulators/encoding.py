"""Vectorised encoding of engineering values into Modbus register images: the mirror of the edge codec.

Why this shape: the demo plant serves 12,000 Modbus signals at up to 10 Hz from one process, so the
simulator cannot afford a Python call per register per tick. Everything that depends only on the
register map is computed once here:

- Every (device, table) pair owns a region of one flat byte buffer ``regs`` (registers, stored as
  they travel on the wire: big-endian 16-bit words) or of ``bits`` (coils and discrete inputs, one
  byte per bit). A server answers a read by slicing its region: ``regs[a:b].tobytes()``.
- Signals are grouped by wire type. For each group a scatter index of shape (n, nbytes) names, for
  every signal, the buffer bytes that receive its value's **little-endian** bytes, with the byte
  and word order (ABCD, CDAB, BADC, DCBA) folded in, exactly as ``edge.sources.modbus_codec`` folds
  it into its gather index. A tick costs per group one subtract/divide (engineering value to raw),
  one rounding cast into a preallocated typed buffer, and one fancy-index store of its bytes.

Raw conversion: ``raw = (value - value_offset) / scale``; integers are rounded and saturated at the
type's limits (a PLC clamps, it does not wrap). A NaN value (sensor dropout) becomes NaN for float
types and the vendor "sensor fault" sentinel for integers: the most negative value for signed
types, the largest for unsigned ones. ``bool`` registers hold 1 or 0; ``bit`` signals set or clear
their bit without touching the other bits of the status word they share; signals in a bit table
(coil, discrete input) are one bit each, set when the value is non-zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from plantwire.plant import BYTE_ORDER_ORDER, TABLE_ORDER, TYPE_ORDER, ByteOrder, RegisterType, SignalTable, Table

__all__ = ["DeviceImage", "RegisterEncoder", "wire_position"]

_ABCD, _CDAB, _BADC, _DCBA = (BYTE_ORDER_ORDER.index(o) for o in ByteOrder)
_HOLDING, _INPUT, _COIL, _DISCRETE = (TABLE_ORDER.index(t) for t in (Table.HOLDING, Table.INPUT, Table.COIL,
                                                                   Table.DISCRETE))
_BIT_TABLES = (_COIL, _DISCRETE)
_BOOL = TYPE_ORDER.index(RegisterType.BOOL)
_BIT = TYPE_ORDER.index(RegisterType.BIT)
_WIDTH_BYTES = {
    TYPE_ORDER.index(RegisterType.INT16): 2, TYPE_ORDER.index(RegisterType.UINT16): 2,
    TYPE_ORDER.index(RegisterType.INT32): 4, TYPE_ORDER.index(RegisterType.UINT32): 4,
    TYPE_ORDER.index(RegisterType.INT64): 8, TYPE_ORDER.index(RegisterType.FLOAT32): 4,
    TYPE_ORDER.index(RegisterType.FLOAT64): 8, _BOOL: 2, _BIT: 2,
}
# Little-endian dtype of each numeric wire type; bool registers travel as uint16 0/1.
_DTYPE: dict[int, str] = {
    TYPE_ORDER.index(RegisterType.INT16): "<i2",
    TYPE_ORDER.index(RegisterType.UINT16): "<u2",
    TYPE_ORDER.index(RegisterType.INT32): "<i4",
    TYPE_ORDER.index(RegisterType.UINT32): "<u4",
    TYPE_ORDER.index(RegisterType.INT64): "<i8",
    TYPE_ORDER.index(RegisterType.FLOAT32): "<f4",
    TYPE_ORDER.index(RegisterType.FLOAT64): "<f8",
    _BOOL: "<u2",
}


def wire_position(order: np.ndarray, nbytes: int, be_pos: np.ndarray | int) -> np.ndarray:
    """Byte position on the wire of big-endian value byte ``be_pos`` (0 = most significant), per order.

    The same mapping as the edge codec's (written again here on purpose: the round-trip test pins
    that the two independent readings of the vendor notation agree).
    """
    be = np.asarray(be_pos, dtype=np.int64)
    words = nbytes // 2
    return np.select(
        [order == _ABCD, order == _CDAB, order == _BADC],
        [be, 2 * (words - 1 - be // 2) + be % 2, 2 * (be // 2) + 1 - be % 2],
        default=nbytes - 1 - be,
    )


@dataclass(frozen=True, slots=True)
class DeviceImage:
    """Where one device's four tables live in the encoder's buffers (views, updated in place)."""

    device: int
    holding: np.ndarray  # uint8 view, 2 bytes per register, wire order
    input: np.ndarray
    coil: np.ndarray  # uint8 view, one byte (0/1) per bit
    discrete: np.ndarray

    def table(self, table: Table) -> np.ndarray:
        return {Table.HOLDING: self.holding, Table.INPUT: self.input, Table.COIL: self.coil,
                Table.DISCRETE: self.discrete}[table]


@dataclass(slots=True)
class _Group:
    rows: np.ndarray  # positions in the encoder's value vector
    index: np.ndarray  # intp (n, nbytes) into regs
    typed: np.ndarray  # (n,) wire dtype
    raw_bytes: np.ndarray  # uint8 (n, nbytes) view of typed
    scratch: np.ndarray  # float64 (n,)
    scale: np.ndarray
    offset: np.ndarray
    lo: float
    hi: float
    sentinel: float | None  # integer types: what NaN becomes
    is_bool: bool


class RegisterEncoder:
    """Encodes the values of some Modbus signals of a SignalTable into per-device register images.

    ``rows`` (SignalTable rows) fixes the order of the value vector ``encode`` takes. Not
    thread-safe; used from the event loop that serves the images, so a read never sees half a tick.
    """

    def __init__(self, table: SignalTable, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        self.rows = rows
        n = rows.size
        dev = table.device[rows].astype(np.int64)
        tbl = table.table[rows].astype(np.int64)
        rtype = table.reg_type[rows].astype(np.int64)
        order = table.byte_order[rows].astype(np.int64)
        addr = table.address[rows].astype(np.int64)
        bit = table.bit[rows].astype(np.int64)
        in_bits = np.isin(tbl, _BIT_TABLES)
        width_regs = np.array([_WIDTH_BYTES[int(t)] // 2 for t in rtype], dtype=np.int64) if n else addr

        # Regions: one per (device, table), sized to the highest register/bit used (at least one).
        self.images: dict[int, DeviceImage] = {}
        reg_start: dict[tuple[int, int], int] = {}
        bit_start: dict[tuple[int, int], int] = {}
        reg_total = bit_total = 0
        region_size: dict[tuple[int, int], int] = {}
        for d in np.unique(dev).tolist():
            for t in (_HOLDING, _INPUT, _COIL, _DISCRETE):
                sel = (dev == d) & (tbl == t)
                end = int((addr[sel] + (1 if t in _BIT_TABLES else width_regs[sel])).max()) if sel.any() else 1
                region_size[(d, t)] = end
                if t in _BIT_TABLES:
                    bit_start[(d, t)] = bit_total
                    bit_total += end
                else:
                    reg_start[(d, t)] = reg_total
                    reg_total += 2 * end
        self.regs = np.zeros(reg_total, dtype=np.uint8)
        self.bits = np.zeros(bit_total, dtype=np.uint8)
        for d in np.unique(dev).tolist():
            def rslice(t: int, d: int = d) -> np.ndarray:
                a = reg_start[(d, t)]
                return self.regs[a : a + 2 * region_size[(d, t)]]

            def bslice(t: int, d: int = d) -> np.ndarray:
                a = bit_start[(d, t)]
                return self.bits[a : a + region_size[(d, t)]]

            self.images[d] = DeviceImage(d, rslice(_HOLDING), rslice(_INPUT), bslice(_COIL), bslice(_DISCRETE))

        first_byte = np.array([reg_start.get((d, t), 0) for d, t in zip(dev.tolist(), tbl.tolist(), strict=True)],
                              dtype=np.int64) + 2 * addr
        first_bit = np.array([bit_start.get((d, t), 0) for d, t in zip(dev.tolist(), tbl.tolist(), strict=True)],
                             dtype=np.int64) + addr
        scale = table.scale[rows]
        offset = table.value_offset[rows]

        self._groups: list[_Group] = []
        for t, dtype in _DTYPE.items():
            sel = np.flatnonzero((rtype == t) & ~in_bits)
            if sel.size == 0:
                continue
            nbytes = np.dtype(dtype).itemsize
            le = np.arange(nbytes)
            index = first_byte[sel, None] + wire_position(order[sel, None], nbytes, (nbytes - 1 - le)[None, :])
            typed = np.zeros(sel.size, dtype=dtype)
            is_int = np.dtype(dtype).kind in "iu"
            info = np.iinfo(dtype) if is_int else None
            sentinel: float | None = None
            lo, hi = -np.inf, np.inf
            if info is not None:
                lo, hi = float(info.min), float(info.max)
                if nbytes == 8:  # stay inside float64's exactly representable range below 2**63
                    lo, hi = -(2.0**63), 2.0**63 - 1024.0
                sentinel = lo if info.min < 0 else hi
            self._groups.append(_Group(
                rows=sel, index=np.ascontiguousarray(index, dtype=np.intp), typed=typed,
                raw_bytes=typed.view(np.uint8).reshape(sel.size, nbytes), scratch=np.zeros(sel.size),
                scale=np.ascontiguousarray(scale[sel]), offset=np.ascontiguousarray(offset[sel]),
                lo=lo, hi=hi, sentinel=sentinel, is_bool=t == _BOOL,
            ))

        # Bits inside a register: byte position and shift as the codec reads them.
        sel = np.flatnonzero((rtype == _BIT) & ~in_bits)
        self._reg_bit_rows = sel
        be_pos = np.where(bit[sel] >= 8, 0, 1)
        self._reg_bit_pos = (first_byte[sel] + wire_position(order[sel], 2, be_pos)).astype(np.intp)
        self._reg_bit_mask = (1 << (bit[sel] % 8)).astype(np.uint8)
        self._reg_bit_clear = (~self._reg_bit_mask).astype(np.uint8)
        self._reg_bit_scale, self._reg_bit_offset = scale[sel], offset[sel]
        # One bit per signal in coil / discrete tables.
        sel = np.flatnonzero(in_bits)
        self._table_bit_rows = sel
        self._table_bit_pos = first_bit[sel].astype(np.intp)
        self._table_bit_scale, self._table_bit_offset = scale[sel], offset[sel]

    def __len__(self) -> int:
        return int(self.rows.size)

    def encode(self, values: np.ndarray) -> None:
        """Write ``values`` (float64 engineering values, in ``rows`` order) into the images."""
        regs = self.regs
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            for g in self._groups:
                x = g.scratch
                np.take(values, g.rows, out=x)
                np.subtract(x, g.offset, out=x)
                np.divide(x, g.scale, out=x)
                if g.is_bool:
                    np.copyto(x, (x != 0.0) & ~np.isnan(x))
                elif g.sentinel is not None:
                    nan = np.isnan(x)
                    np.rint(x, out=x)
                    np.clip(x, g.lo, g.hi, out=x)
                    if nan.any():
                        x[nan] = g.sentinel
                np.copyto(g.typed, x, casting="unsafe")
                regs[g.index] = g.raw_bytes
            if self._reg_bit_rows.size:
                raw = (values[self._reg_bit_rows] - self._reg_bit_offset) / self._reg_bit_scale
                on = np.nan_to_num(raw) != 0
                np.bitwise_and.at(regs, self._reg_bit_pos, self._reg_bit_clear)
                np.bitwise_or.at(regs, self._reg_bit_pos[on], self._reg_bit_mask[on])
            if self._table_bit_rows.size:
                raw = (values[self._table_bit_rows] - self._table_bit_offset) / self._table_bit_scale
                self.bits[self._table_bit_pos] = np.nan_to_num(raw) != 0
