"""The vectorised Modbus codec against a plain struct-based reference, for every type and byte order."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import strategies as st

from edge.sources.modbus_codec import Codec, encode_registers
from edge.sources.modbus_plan import ReadPlan, plan_reads
from plantwire.plant import BYTE_ORDER_ORDER, REGISTER_WIDTH, TABLE_ORDER, TYPE_ORDER, ByteOrder, RegisterType, Table
from tests.property_runs import quick_and_full

HR, IR, COIL, DI = (TABLE_ORDER.index(t) for t in (Table.HOLDING, Table.INPUT, Table.COIL, Table.DISCRETE))

# The reference: which value byte (A = most significant) travels at each wire position, per width.
# For 32 bits the vendor notation *is* the wire order; 16 and 64 bits follow the same rule.
WIRE_LETTERS = {
    1: {ByteOrder.ABCD: "AB", ByteOrder.CDAB: "AB", ByteOrder.BADC: "BA", ByteOrder.DCBA: "BA"},
    2: {o: o.value for o in ByteOrder},
    4: {ByteOrder.ABCD: "ABCDEFGH", ByteOrder.CDAB: "GHEFCDAB", ByteOrder.BADC: "BADCFEHG",
        ByteOrder.DCBA: "HGFEDCBA"},
}
STRUCT = {RegisterType.INT16: "h", RegisterType.UINT16: "H", RegisterType.INT32: "i", RegisterType.UINT32: "I",
          RegisterType.INT64: "q", RegisterType.FLOAT32: "f", RegisterType.FLOAT64: "d"}


def reference_raw(regs: list[int], reg_type: RegisterType, order: ByteOrder, bit: int) -> float:
    """Wire value of a register-table signal from its registers, the obvious way."""
    wire = b"".join(r.to_bytes(2, "big") for r in regs)
    letters = WIRE_LETTERS[len(regs)][order]
    value_be = bytearray(len(wire))
    for pos, letter in enumerate(letters):
        value_be[ord(letter) - ord("A")] = wire[pos]
    if reg_type is RegisterType.BOOL:
        return 1.0 if any(value_be) else 0.0
    if reg_type is RegisterType.BIT:
        return float((struct.unpack(">H", bytes(value_be))[0] >> bit) & 1)
    return float(struct.unpack(">" + STRUCT[reg_type], bytes(value_be))[0])


def build(sigs: list[tuple[int, int, RegisterType, ByteOrder, int, float, float]], max_gap: int = 3) -> Codec:
    """Codec for (table, address, type, order, bit, scale, offset) signals; signal i is row 1000 + i."""
    n = len(sigs)
    table = np.array([s[0] for s in sigs], dtype=np.uint8)
    reg_type = np.array([TYPE_ORDER.index(s[2]) for s in sigs], dtype=np.uint8)
    plan = plan_reads(np.arange(1000, 1000 + n, dtype=np.uint32), table,
                      np.array([s[1] for s in sigs], dtype=np.int32), reg_type, unit_id=1, max_gap=max_gap)
    return Codec(plan, table, reg_type, np.array([BYTE_ORDER_ORDER.index(s[3]) for s in sigs], dtype=np.uint8),
                 np.array([s[4] for s in sigs], dtype=np.uint8), np.array([s[5] for s in sigs]),
                 np.array([s[6] for s in sigs]))


def load_device(codec: Codec, registers: dict[int, dict[int, int]]) -> None:
    """Fill every block from a table -> address -> word map (bits as 0/1), as a server would answer."""
    for k, block in enumerate(codec.plan.blocks):
        words = registers.get(TABLE_ORDER.index(block.table), {})
        if block.is_bits:
            bits = [words.get(block.start + i, 0) for i in range(block.count)]
            payload = bytes(sum(b << j for j, b in enumerate(bits[i : i + 8])) for i in range(0, len(bits), 8))
        else:
            payload = b"".join(words.get(block.start + i, 0).to_bytes(2, "big") for i in range(block.count))
        assert codec.load(k, payload)


def reference_values(codec: Codec, sigs: list[tuple[int, int, RegisterType, ByteOrder, int, float, float]],
                     registers: dict[int, dict[int, int]]) -> np.ndarray:
    by_row = {}
    for i, (t, addr, rt, order, bit, scale, offset) in enumerate(sigs):
        words = registers.get(t, {})
        if t in (COIL, DI):
            raw = float(words.get(addr, 0))
        else:
            raw = reference_raw([words.get(addr + j, 0) for j in range(REGISTER_WIDTH[rt])], rt, order, bit)
        by_row[1000 + i] = raw * scale + offset
    return np.array([by_row[r] for r in codec.signals.tolist()])


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal values, NaN where NaN (NaN payloads may differ; -0.0 == 0.0)."""
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    ok = ~np.isnan(expected)
    np.testing.assert_array_equal(actual[ok], expected[ok])


REGISTER_TYPES = [t for t in RegisterType if t is not RegisterType.BIT]


@pytest.mark.parametrize("reg_type", list(RegisterType))
@pytest.mark.parametrize("order", list(ByteOrder))
def test_encode_then_decode_round_trips(reg_type: RegisterType, order: ByteOrder) -> None:
    samples: list[float | int] = {
        RegisterType.INT16: [-32768, -1, 0, 1, 12345, 32767],
        RegisterType.UINT16: [0, 1, 0x1234, 65535],
        RegisterType.INT32: [-(2**31), -2, 0, 0x12345678, 2**31 - 1],
        RegisterType.UINT32: [0, 0x12345678, 2**32 - 1],
        RegisterType.INT64: [-(2**63), -3, 0, 0x0102030405060708, 2**53],
        RegisterType.FLOAT32: [0.0, -0.0, 1.5, -2.25e-3, 3.0e38, math.inf, -math.inf, math.nan],
        RegisterType.FLOAT64: [0.0, -1e-300, 1.0000000000000002, 1e308, math.inf, -math.inf, math.nan],
        RegisterType.BOOL: [0, 1],
        RegisterType.BIT: [0, 1],
    }[reg_type]
    bits = list(range(16)) if reg_type is RegisterType.BIT else [0]
    sigs = []
    registers: dict[int, int] = {}
    addr = 0
    expected = []
    for raw in samples:
        for bit in bits:
            regs = encode_registers(raw, reg_type, order, bit)
            assert reference_raw(regs, reg_type, order, bit) == pytest.approx(raw, nan_ok=True)
            registers.update({addr + j: r for j, r in enumerate(regs)})
            sigs.append((HR, addr, reg_type, order, bit, 1.0, 0.0))
            expected.append(reference_raw(regs, reg_type, order, bit))  # float32 rounding included
            addr += len(regs)
    codec = build(sigs)
    load_device(codec, {HR: registers})
    values = codec.decode()
    by_row = dict(zip(codec.signals.tolist(), values.tolist(), strict=True))
    assert_same(np.array([by_row[1000 + i] for i in range(len(sigs))]), np.array(expected))


def test_known_wire_patterns() -> None:
    """Pinned bytes: 0x3FC00000 is 1.5 as a float32; 0x1234 words spell out each order."""
    cases = [
        (RegisterType.FLOAT32, ByteOrder.ABCD, [0x3FC0, 0x0000], 1.5),
        (RegisterType.FLOAT32, ByteOrder.CDAB, [0x0000, 0x3FC0], 1.5),
        (RegisterType.FLOAT32, ByteOrder.BADC, [0xC03F, 0x0000], 1.5),
        (RegisterType.FLOAT32, ByteOrder.DCBA, [0x0000, 0xC03F], 1.5),
        (RegisterType.UINT32, ByteOrder.CDAB, [0x5678, 0x1234], 0x12345678),
        (RegisterType.INT16, ByteOrder.DCBA, [0x3412], 0x1234),
        (RegisterType.INT16, ByteOrder.CDAB, [0xFFFE], -2),
        (RegisterType.INT64, ByteOrder.CDAB, [0x0708, 0x0506, 0x0304, 0x0102], 0x0102030405060708),
        (RegisterType.FLOAT64, ByteOrder.ABCD, [0x3FF8, 0, 0, 0], 1.5),
        (RegisterType.FLOAT64, ByteOrder.DCBA, [0, 0, 0, 0xF83F], 1.5),
    ]
    sigs, registers, addr = [], {}, 0
    for rt, order, regs, _ in cases:
        sigs.append((HR, addr, rt, order, 0, 1.0, 0.0))
        registers.update({addr + j: r for j, r in enumerate(regs)})
        assert encode_registers(_, rt, order) == regs
        addr += len(regs)
    codec = build(sigs)
    load_device(codec, {HR: registers})
    got = dict(zip(codec.signals.tolist(), codec.decode().tolist(), strict=True))
    assert [got[1000 + i] for i in range(len(cases))] == [float(c[3]) for c in cases]


signal_strategy = st.tuples(
    st.sampled_from([HR, IR, COIL, DI]),
    st.integers(0, 60),
    st.sampled_from(list(RegisterType)),
    st.sampled_from(list(ByteOrder)),
    st.integers(0, 15),
    st.sampled_from([1.0, 0.1, -2.5, 1e-3]),
    st.sampled_from([0.0, -40.0, 273.15]),
)
# Register contents biased towards IEEE special patterns (NaN, inf, -0, denormals) and sign bits.
word_strategy = st.one_of(
    st.integers(0, 0xFFFF),
    st.sampled_from([0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0x7FF0, 0xFFF0, 0x7FF8, 0x0001, 0xFFFF, 0x7FFF]),
)


def _decode_matches_struct_reference(sigs: list[tuple[int, int, RegisterType, ByteOrder, int, float, float]],
                                     words: list[int], bits: list[int]) -> None:
    registers = {HR: dict(enumerate(words)), IR: dict(enumerate(reversed(words))),
                 COIL: dict(enumerate(bits)), DI: dict(enumerate(reversed(bits)))}
    codec = build(sigs)
    load_device(codec, registers)
    assert_same(codec.decode(), reference_values(codec, sigs, registers))


test_decode_matches_struct_reference, test_decode_matches_struct_reference_full = quick_and_full(
    _decode_matches_struct_reference, quick=60, full=300,
    sigs=st.lists(signal_strategy, min_size=1, max_size=40),
    words=st.lists(word_strategy, min_size=70, max_size=70),
    bits=st.lists(st.integers(0, 1), min_size=70, max_size=70))


@pytest.mark.parametrize("reg_type", [RegisterType.FLOAT32, RegisterType.FLOAT64])
@pytest.mark.parametrize("order", list(ByteOrder))
def test_nan_and_inf_patterns(reg_type: RegisterType, order: ByteOrder) -> None:
    specials = [math.nan, math.inf, -math.inf, -0.0, 5e-324 if reg_type is RegisterType.FLOAT64 else 1e-45]
    sigs, registers, addr = [], {}, 0
    for v in specials:
        regs = encode_registers(v, reg_type, order)
        registers.update({addr + j: r for j, r in enumerate(regs)})
        sigs.append((HR, addr, reg_type, order, 0, 2.0, 1.0))
        addr += len(regs)
    # A signalling-NaN bit pattern too, straight on the wire.
    snan = [0x7F80, 0x0001] if reg_type is RegisterType.FLOAT32 else [0x7FF0, 0, 0, 1]
    swapped = [((w & 0xFF) << 8) | (w >> 8) for w in snan]
    wire = {ByteOrder.ABCD: snan, ByteOrder.CDAB: snan[::-1], ByteOrder.BADC: swapped,
            ByteOrder.DCBA: swapped[::-1]}[order]
    registers.update({addr + j: r for j, r in enumerate(wire)})
    sigs.append((HR, addr, reg_type, order, 0, 2.0, 1.0))
    codec = build(sigs)
    load_device(codec, {HR: registers})
    values = codec.decode()
    assert_same(values, reference_values(codec, sigs, {HR: registers}))
    got = dict(zip(codec.signals.tolist(), values.tolist(), strict=True))
    assert math.isnan(got[1000]) and got[1001] == math.inf and got[1002] == -math.inf and math.isnan(got[1005])


def test_wrong_payload_length_is_refused_and_image_kept() -> None:
    codec = build([(HR, 0, RegisterType.FLOAT32, ByteOrder.ABCD, 0, 1.0, 0.0)])
    assert codec.load(0, b"\x3f\xc0\x00\x00")
    assert not codec.load(0, b"\x00\x00")
    assert not codec.load(0, b"\x00" * 6)
    assert codec.decode()[0] == 1.5


def test_block_rows_point_at_the_signals_of_each_block() -> None:
    sigs = [(HR, 0, RegisterType.INT16, ByteOrder.ABCD, 0, 1.0, 0.0),
            (HR, 100, RegisterType.FLOAT32, ByteOrder.ABCD, 0, 1.0, 0.0),
            (COIL, 5, RegisterType.BOOL, ByteOrder.ABCD, 0, 1.0, 0.0),
            (HR, 1, RegisterType.FLOAT64, ByteOrder.ABCD, 0, 1.0, 0.0)]
    codec = build(sigs)
    members = {k: sorted(codec.signals[rows].tolist()) for k, rows in enumerate(codec.block_rows)}
    blocks = {(b.table, b.start): members[k] for k, b in enumerate(codec.plan.blocks)}
    assert blocks == {(Table.HOLDING, 0): [1000, 1003], (Table.HOLDING, 100): [1001], (Table.COIL, 5): [1002]}


def test_decode_reuses_its_buffers() -> None:
    codec = build([(HR, i, RegisterType.UINT16, ByteOrder.BADC, 0, 0.5, 1.0) for i in range(10)])
    load_device(codec, {HR: {i: i << 8 for i in range(10)}})
    first = codec.decode()
    assert first is codec.values
    out = np.empty(10)
    codec.decode(out)
    np.testing.assert_array_equal(out, first)
    np.testing.assert_array_equal(np.sort(first), np.arange(10) * 0.5 + 1.0)


def test_empty_plan() -> None:
    codec = Codec(ReadPlan(1, (), np.zeros(0, np.uint32), np.zeros(0, np.int32), np.zeros(0, np.int32)),
                  *(np.zeros(0) for _ in range(6)))
    assert len(codec) == 0 and codec.decode().shape == (0,)
