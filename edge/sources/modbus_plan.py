"""Read planning for one Modbus device: which block reads cover its signals, computed once at start-up.

A poll must cost as few round trips as possible (one Modbus connection is latency-bound, see
shared/MEASURED.md), so neighbouring signals of the same table are coalesced into one read of at
most ``max_block_registers`` registers (holding/input) or ``max_block_bits`` bits (coil/discrete).
Two neighbours share a block when the unused addresses between them number at most ``max_gap``;
reading a few unused registers is cheaper than another request, but spanning addresses the PLC
does not define makes it answer the whole block with an exception, hence the bound.

Choices a plant engineer would want, written down:
- A signal is never split across blocks: a float64 (4 registers) at a block edge starts the next
  block instead. A signal wider than the block limit cannot be read at all and is a planning error.
- Signals may share addresses (several ``bit`` signals in one status word); they share the read.
- In the bit tables (coil, discrete) every signal is one bit wide whatever its declared type,
  and ``max_gap`` counts bits there.
- Blocks are packed greedily left to right over the address-sorted signals, which gives the fewest
  blocks for contiguous reads under a length limit.

The plan also holds, per signal, its block and its offset in that block, as numpy arrays, so
decoding (edge/sources/modbus_codec.py) never searches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from plantwire.plant import REGISTER_WIDTH, TABLE_ORDER, TYPE_ORDER, SignalTable, Table

__all__ = ["BIT_TABLES", "MAX_BITS", "MAX_REGISTERS", "Block", "PlanError", "ReadPlan", "plan_device", "plan_reads"]

MAX_REGISTERS = 125  # Modbus limit for function codes 3 and 4
MAX_BITS = 2000  # Modbus limit for function codes 1 and 2
BIT_TABLES = frozenset({Table.COIL, Table.DISCRETE})

# Register width per RegisterType index (TYPE_ORDER), for vectorised lookups.
_WIDTH_BY_TYPE = np.array([REGISTER_WIDTH[t] for t in TYPE_ORDER], dtype=np.int32)
_IS_BIT_TABLE = np.array([t in BIT_TABLES for t in TABLE_ORDER], dtype=bool)


class PlanError(ValueError):
    """A device whose signals cannot be read with the configured limits (e.g. wider than a block)."""


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: ``count`` registers or bits of ``table`` from ``start``, on ``unit_id``."""

    table: Table
    unit_id: int
    start: int
    count: int

    @property
    def is_bits(self) -> bool:
        return self.table in BIT_TABLES

    @property
    def nbytes(self) -> int:
        """Payload bytes of the response (registers are 2 bytes, bits are packed 8 per byte)."""
        return (self.count + 7) // 8 if self.is_bits else 2 * self.count


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """Block reads of one device and, per signal, where its value lies.

    The per-signal arrays are parallel: row i describes SignalTable row ``signals[i]``, which sits
    ``signal_offset[i]`` registers (or bits) into block ``signal_block[i]``.
    """

    unit_id: int
    blocks: tuple[Block, ...]
    signals: np.ndarray  # uint32, SignalTable rows
    signal_block: np.ndarray  # int32, index into blocks
    signal_offset: np.ndarray  # int32, register or bit offset inside the block

    def __len__(self) -> int:
        return int(self.signals.shape[0])

    @property
    def registers_read(self) -> int:
        """Registers (or bits) requested per poll, gaps included."""
        return sum(b.count for b in self.blocks)


def plan_reads(
    signals: np.ndarray,
    table: np.ndarray,
    address: np.ndarray,
    reg_type: np.ndarray,
    *,
    unit_id: int,
    max_block_registers: int = MAX_REGISTERS,
    max_block_bits: int = MAX_BITS,
    max_gap: int = 16,
) -> ReadPlan:
    """Plan the block reads for signals given as parallel columns (SignalTable encoding).

    ``signals`` are the SignalTable rows to report; ``table``, ``address`` and ``reg_type`` are their
    columns (indices into TABLE_ORDER and TYPE_ORDER). Raises PlanError when a signal cannot fit.
    """
    if not 1 <= max_block_registers <= MAX_REGISTERS:
        raise PlanError(f"max_block_registers must be 1..{MAX_REGISTERS}, got {max_block_registers}")
    if not 1 <= max_block_bits <= MAX_BITS:
        raise PlanError(f"max_block_bits must be 1..{MAX_BITS}, got {max_block_bits}")
    if max_gap < 0:
        raise PlanError(f"max_gap must be >= 0, got {max_gap}")
    signals = np.asarray(signals, dtype=np.uint32)
    table = np.asarray(table, dtype=np.intp)
    address = np.asarray(address, dtype=np.int64)
    reg_type = np.asarray(reg_type, dtype=np.intp)
    n = signals.shape[0]
    if not (table.shape[0] == address.shape[0] == reg_type.shape[0] == n):
        raise PlanError("signal columns differ in length")

    is_bits = _IS_BIT_TABLE[table]
    width = np.where(is_bits, 1, _WIDTH_BY_TYPE[reg_type]).astype(np.int64)
    end = address + width
    if n and (address.min() < 0 or end.max() > 65536):
        bad = int(np.flatnonzero((address < 0) | (end > 65536))[0])
        raise PlanError(f"signal row {int(signals[bad])}: address {int(address[bad])} outside 0..65535")

    blocks: list[Block] = []
    signal_block = np.empty(n, dtype=np.int32)
    signal_offset = np.empty(n, dtype=np.int32)
    for t_index, tbl in enumerate(TABLE_ORDER):
        rows = np.flatnonzero(table == t_index)
        if rows.size == 0:
            continue
        limit = max_block_bits if tbl in BIT_TABLES else max_block_registers
        too_wide = rows[width[rows] > limit]
        if too_wide.size:
            r = int(too_wide[0])
            raise PlanError(
                f"signal row {int(signals[r])}: {int(width[r])} registers do not fit a block of {limit}"
            )
        # Stable sort by address, then a Python walk over the sorted rows: this runs once at
        # start-up for a few hundred signals per device, and clarity beats vectorising it.
        rows = rows[np.argsort(address[rows], kind="stable")]
        starts = address[rows].tolist()
        ends = end[rows].tolist()
        block_start, block_end = starts[0], ends[0]
        first = 0
        for i in range(1, len(rows) + 1):
            if i < len(rows):
                s, e = starts[i], ends[i]
                new_end = max(block_end, e)
                if s - block_end <= max_gap and new_end - block_start <= limit:
                    block_end = new_end
                    continue
            members = rows[first:i]
            signal_block[members] = len(blocks)
            signal_offset[members] = address[members] - block_start
            blocks.append(Block(tbl, unit_id, int(block_start), int(block_end - block_start)))
            if i < len(rows):
                first, block_start, block_end = i, starts[i], ends[i]
    return ReadPlan(unit_id, tuple(blocks), signals, signal_block, signal_offset)


def plan_device(table: SignalTable, device_index: int, *, max_block_registers: int = MAX_REGISTERS,
                max_block_bits: int = MAX_BITS, max_gap: int = 16) -> ReadPlan:
    """Plan the reads of one device of the signal table (its unit id comes from the device)."""
    rows = table.signals_of(device_index)
    return plan_reads(
        rows.astype(np.uint32),
        table.table[rows],
        table.address[rows],
        table.reg_type[rows],
        unit_id=table.devices[device_index].unit_id,
        max_block_registers=max_block_registers,
        max_block_bits=max_block_bits,
        max_gap=max_gap,
    )
