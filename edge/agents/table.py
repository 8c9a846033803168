"""The gateway's signal table with the agents' derived signals appended after the plant's.

Derived rows have no device (``device = -1``: no source reads them; ``SignalTable.signals_of`` never
returns them), kind ``"derived"``, no quantisation (``scale`` NaN: the wire codes them as plain numbers)
and no plausible range. Owners that are not machines of the plant (a line, an area) become new
``machine_ids`` after the plant's, so the cloud stores them under that ``machine`` tag. Plant rows keep
their indices, so everything sized from the plant (detectors, sources, Sparkplug) is unchanged.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edge.agents.base import DerivedSignal
from plantwire.plant import SignalTable

DERIVED_KIND = "derived"


def with_derived(table: SignalTable, derived: list[DerivedSignal]) -> SignalTable:
    """``table`` plus one row per derived signal (ids must be new); the plant's rows are unchanged."""
    if not derived:
        return table
    seen = set(table.ids)
    machine_ids = list(table.machine_ids)
    index = {m: i for i, m in enumerate(machine_ids)}
    ids: list[str] = []
    owners: list[int] = []
    for d in derived:
        if d.id in seen:
            raise ValueError(f"derived signal {d.id!r} clashes with an existing signal id")
        seen.add(d.id)
        ids.append(d.id)
        if d.owner not in index:
            index[d.owner] = len(machine_ids)
            machine_ids.append(d.owner)
        owners.append(index[d.owner])
    k = len(derived)

    def grow(col: np.ndarray, fill: float | int) -> np.ndarray:
        return np.concatenate([col, np.full(k, fill, dtype=col.dtype)])

    return dataclasses.replace(
        table,
        ids=table.ids + ids,
        machine_ids=machine_ids,
        units=table.units + [d.unit for d in derived],
        kinds=table.kinds + [DERIVED_KIND] * k,
        device=grow(table.device, -1),
        machine=np.concatenate([table.machine, np.asarray(owners, dtype=table.machine.dtype)]),
        table=grow(table.table, 0),
        address=grow(table.address, -1),
        reg_type=grow(table.reg_type, 0),
        bit=grow(table.bit, 0),
        byte_order=grow(table.byte_order, 0),
        scale=grow(table.scale, np.nan),
        value_offset=grow(table.value_offset, np.nan),
        base=grow(table.base, 0.0),
        amplitude=grow(table.amplitude, 0.0),
        period_s=grow(table.period_s, 0.0),
        noise=grow(table.noise, 0.0),
        low=grow(table.low, np.nan),
        high=grow(table.high, np.nan),
        nodes=(table.nodes + [""] * k) if table.nodes else [],
    )
