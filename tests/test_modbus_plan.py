"""The Modbus read planner: block coalescing under gap and size limits, and the per-signal lookup arrays."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.sources.modbus_plan import Block, PlanError, ReadPlan, plan_device, plan_reads
from plantwire.configfile import load_plant
from plantwire.plant import REGISTER_WIDTH, TABLE_ORDER, TYPE_ORDER, Protocol, RegisterType, Table, expand

ROOT = Path(__file__).resolve().parent.parent
HR, IR, C, D = (TABLE_ORDER.index(t) for t in (Table.HOLDING, Table.INPUT, Table.COIL, Table.DISCRETE))
T = {t: TYPE_ORDER.index(t) for t in RegisterType}


def plan(sigs: list[tuple[int, int, RegisterType]], **kw: int) -> ReadPlan:
    """Plan (table, address, type) triples; signal i is SignalTable row 100 + i."""
    n = len(sigs)
    return plan_reads(
        np.arange(100, 100 + n, dtype=np.uint32),
        np.array([s[0] for s in sigs], dtype=np.uint8),
        np.array([s[1] for s in sigs], dtype=np.int32),
        np.array([T[s[2]] for s in sigs], dtype=np.uint8),
        unit_id=7,
        **kw,
    )


def test_empty_device_has_no_blocks() -> None:
    p = plan([])
    assert p.blocks == () and len(p) == 0


def test_contiguous_signals_make_one_block_with_offsets() -> None:
    p = plan([(HR, 10, RegisterType.FLOAT32), (HR, 12, RegisterType.INT16), (HR, 13, RegisterType.FLOAT64)])
    assert p.blocks == (Block(Table.HOLDING, 7, 10, 7),)
    assert p.signals.tolist() == [100, 101, 102]
    assert p.signal_block.tolist() == [0, 0, 0]
    assert p.signal_offset.tolist() == [0, 2, 3]


def test_gap_at_limit_merges_and_one_more_splits() -> None:
    merged = plan([(HR, 0, RegisterType.UINT16), (HR, 1 + 16, RegisterType.UINT16)], max_gap=16)
    assert merged.blocks == (Block(Table.HOLDING, 7, 0, 18),)
    split = plan([(HR, 0, RegisterType.UINT16), (HR, 1 + 17, RegisterType.UINT16)], max_gap=16)
    assert split.blocks == (Block(Table.HOLDING, 7, 0, 1), Block(Table.HOLDING, 7, 18, 1))
    assert split.signal_block.tolist() == [0, 1] and split.signal_offset.tolist() == [0, 0]


def test_zero_gap_only_merges_adjacent() -> None:
    p = plan([(HR, 0, RegisterType.FLOAT32), (HR, 2, RegisterType.FLOAT32), (HR, 5, RegisterType.INT16)], max_gap=0)
    assert [(b.start, b.count) for b in p.blocks] == [(0, 4), (5, 1)]


def test_block_limit_never_splits_a_value() -> None:
    # 70 contiguous float32 = 140 registers; 125 would cut the 63rd float in half, so 62 floats go first.
    p = plan([(HR, 2 * i, RegisterType.FLOAT32) for i in range(70)])
    assert [(b.start, b.count) for b in p.blocks] == [(0, 124), (124, 16)]
    assert np.all(p.signal_offset + 2 <= np.array([p.blocks[b].count for b in p.signal_block]))


def test_float64_at_block_edge_starts_the_next_block() -> None:
    sigs = [(HR, i, RegisterType.INT16) for i in range(122)] + [(HR, 122, RegisterType.FLOAT64)]
    p = plan(sigs)
    assert [(b.start, b.count) for b in p.blocks] == [(0, 122), (122, 4)]
    assert p.signal_block[-1] == 1 and p.signal_offset[-1] == 0
    # With a block limit that is no multiple of the width, the float64 still stays whole.
    p = plan([(HR, 4 * i, RegisterType.FLOAT64) for i in range(5)], max_block_registers=10)
    assert [(b.start, b.count) for b in p.blocks] == [(0, 8), (8, 8), (16, 4)]


def test_bits_sharing_a_register_share_the_read() -> None:
    status_word = [(HR, 40, RegisterType.BIT)] * 3
    p = plan([*status_word, (HR, 41, RegisterType.INT16)])
    assert p.blocks == (Block(Table.HOLDING, 7, 40, 2),)
    assert p.signal_offset.tolist() == [0, 0, 0, 1]


def test_tables_are_planned_separately() -> None:
    p = plan([(HR, 0, RegisterType.INT16), (IR, 0, RegisterType.INT16), (C, 0, RegisterType.BOOL),
              (D, 3, RegisterType.BOOL), (HR, 1, RegisterType.INT16)])
    assert {(b.table, b.start, b.count) for b in p.blocks} == {
        (Table.HOLDING, 0, 2), (Table.INPUT, 0, 1), (Table.COIL, 0, 1), (Table.DISCRETE, 3, 1)}
    for i, table in enumerate([Table.HOLDING, Table.INPUT, Table.COIL, Table.DISCRETE, Table.HOLDING]):
        assert p.blocks[p.signal_block[i]].table is table


def test_bit_tables_count_bits_up_to_their_own_limit() -> None:
    # Any declared type in a coil table is one bit wide.
    p = plan([(C, i, RegisterType.BOOL) for i in range(2500)] + [(C, 2500, RegisterType.FLOAT64)])
    assert [(b.start, b.count) for b in p.blocks] == [(0, 2000), (2000, 501)]
    assert p.blocks[0].nbytes == 250 and p.blocks[1].nbytes == 63
    p = plan([(D, 0, RegisterType.BOOL), (D, 20, RegisterType.BOOL)], max_gap=19, max_block_bits=100)
    assert [(b.start, b.count) for b in p.blocks] == [(0, 21)]


def test_signal_wider_than_a_block_is_a_plan_error() -> None:
    with pytest.raises(PlanError, match="do not fit"):
        plan([(HR, 0, RegisterType.FLOAT64)], max_block_registers=3)


def test_address_range_and_limits_are_checked() -> None:
    with pytest.raises(PlanError, match="outside"):
        plan([(HR, 65535, RegisterType.FLOAT32)])
    with pytest.raises(PlanError):
        plan([(HR, 0, RegisterType.INT16)], max_block_registers=126)
    with pytest.raises(PlanError):
        plan([(HR, 0, RegisterType.INT16)], max_gap=-1)


def test_unsorted_input_keeps_signal_rows() -> None:
    p = plan([(HR, 50, RegisterType.INT16), (HR, 10, RegisterType.INT16), (HR, 30, RegisterType.INT16)], max_gap=5)
    assert [b.start for b in p.blocks] == [10, 30, 50]
    assert p.signals.tolist() == [100, 101, 102]
    assert p.signal_block.tolist() == [2, 0, 1]


_reg_types = list(RegisterType)


@settings(max_examples=150, deadline=None)
@given(
    sigs=st.lists(
        st.tuples(st.sampled_from([HR, IR, C, D]), st.integers(0, 600), st.sampled_from(_reg_types)),
        max_size=120,
    ),
    max_regs=st.integers(4, 125),
    max_bits=st.integers(1, 2000),
    max_gap=st.integers(0, 30),
)
def test_plan_invariants(sigs: list[tuple[int, int, RegisterType]], max_regs: int, max_bits: int, max_gap: int) -> None:
    p = plan(sigs, max_block_registers=max_regs, max_block_bits=max_bits, max_gap=max_gap)
    widths = [1 if t in (C, D) else REGISTER_WIDTH[rt] for t, _, rt in sigs]
    # Every signal lies wholly inside its block, which is of its table.
    for i, (t, addr, _) in enumerate(sigs):
        b = p.blocks[p.signal_block[i]]
        assert b.table is TABLE_ORDER[t]
        assert b.start + p.signal_offset[i] == addr
        assert 0 <= p.signal_offset[i] and p.signal_offset[i] + widths[i] <= b.count
    by_table: dict[Table, list[Block]] = {}
    for b in p.blocks:
        assert 1 <= b.count <= (max_bits if b.is_bits else max_regs)
        by_table.setdefault(b.table, []).append(b)
    for table, blocks in by_table.items():
        blocks.sort(key=lambda b: b.start)
        limit = max_bits if blocks[0].is_bits else max_regs
        for a, b in itertools.pairwise(blocks):
            assert a.start + a.count <= b.start  # no overlap
            # Greedy packing: b was split off only because of the gap or the size limit, judged on the
            # first signal (in input order) at b's start address.
            a_end = a.start + a.count
            first = min(i for i, (t, addr, _) in enumerate(sigs) if TABLE_ORDER[t] is table and addr == b.start)
            first_end = b.start + widths[first]
            assert b.start - a_end > max_gap or max(a_end, first_end) - a.start > limit
        # Blocks start at a signal and end at a signal's end: no useless edges.
        for b in blocks:
            members = [i for i in range(len(sigs)) if p.blocks[p.signal_block[i]] is b]
            assert min(p.signal_offset[i] for i in members) == 0
            assert max(p.signal_offset[i] + widths[i] for i in members) == b.count


def test_demo_like_plant_plans_full_blocks() -> None:
    table = expand(load_plant(ROOT / "configs" / "dev" / "plant.yaml"))
    for dev in table.devices:
        if dev.protocol is not Protocol.MODBUS:
            continue
        p = plan_device(table, dev.index, max_gap=16)
        rows = table.signals_of(dev.index)
        assert sorted(p.signals.tolist()) == rows.tolist()
        assert p.unit_id == dev.unit_id
        assert all(b.count <= 125 for b in p.blocks)
        # Signals are laid out densely, so blocks are nearly full: few requests per poll.
        assert len(p.blocks) <= p.registers_read // 100 + 2
