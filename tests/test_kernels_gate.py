"""subspace.gate_machines: a machine's multivariate stage opens when its members are warm, or a dead one waited out."""

from __future__ import annotations

import numpy as np

from edge.kernels import subspace


def _setup():
    machine_of = np.array([0, 0, 0, 1, 1, -1], dtype=np.int64)
    m_ptr = np.array([0, 3, 5], dtype=np.int64)
    m_sig = np.array([0, 1, 2, 3, 4], dtype=np.int64)
    level = np.zeros((6, 3))  # column 2 = samples learned
    gate = np.zeros((2, 2))
    live_of = np.full(6, -1, dtype=np.int64)
    return machine_of, m_ptr, m_sig, level, gate, live_of


def test_opens_when_every_member_is_past_warmup():
    machine_of, m_ptr, m_sig, level, gate, live_of = _setup()
    frame = np.array([0, 1, 2, 5], dtype=np.uint32)
    level[[0, 1], 2] = 30.0
    level[2, 2] = 29.0
    assert subspace.gate_machines(frame, machine_of, m_ptr, m_sig, level, 2, 30.0, gate, live_of) == 0
    assert (live_of == -1).all() and gate[0, 0] == 0.0 and gate[1, 1] == 0.0  # machine 1 untouched
    level[2, 2] = 30.0
    assert subspace.gate_machines(frame, machine_of, m_ptr, m_sig, level, 2, 30.0, gate, live_of) == 1
    assert list(live_of) == [0, 0, 0, -1, -1, -1] and gate[0, 0] == 1.0
    assert subspace.gate_machines(frame, machine_of, m_ptr, m_sig, level, 2, 30.0, gate, live_of) == 0  # stays open


def test_a_dead_member_cannot_keep_the_machine_closed_forever():
    machine_of, m_ptr, m_sig, level, gate, live_of = _setup()
    level[3, 2] = 100.0  # signal 4 never delivers a good sample
    frame = np.array([3], dtype=np.uint32)
    limit = 10 * 5 * 2  # 10 x warmup x members, counted in the machine's samples
    opened = [subspace.gate_machines(frame, machine_of, m_ptr, m_sig, level, 2, 5.0, gate, live_of)
              for _ in range(limit)]
    assert sum(opened) == 1 and opened[-1] == 1 and list(live_of[3:5]) == [1, 1]
