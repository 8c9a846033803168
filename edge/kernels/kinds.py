"""Anomaly kinds: the code carried in scores and events, and the per-signal enable bits.

Kept in a module of its own (plain ints, no numba) so kernels, detectors, the score CLI and the
cloud side can agree on the numbers; the values are part of the event format and never change.
"""

from __future__ import annotations

import enum


class Kind(enum.IntEnum):
    NONE = 0
    LEVEL = 1  # robust z-score of the value (spike, outlier)
    CHANGE = 2  # CUSUM: level shift or drift
    STUCK = 3  # flat line / frozen sensor
    RATE = 4  # robust z-score of the slope
    RANGE = 5  # outside the plausible range of the plant file
    MACHINE = 6  # several signals of one machine together (fitted PCA: T², SPE)
    HEALTH = 7  # predictive maintenance: health index / remaining useful life
    # Data quality: the measurement, not the process, is at fault. Never suppressed (DESIGN.md section 8).
    BAD = 8  # the signal's samples have been bad (or non-finite) for longer than configured
    SILENT = 9  # no sample of the signal at all for longer than configured
    DEVICE = 10  # no good poll from a whole device (PLC, server) for longer than configured; scope DEVICE
    # A switched-off machine's process signal outside the band a machine at rest stays in (``atrest``): current
    # flowing, pressure held, a temperature rising on a stopped machine. Not suppressed by the off state it is about.
    AT_REST = 11


# Enable bits per signal (uint8 mask): which per-signal detectors run, and whether the signal
# takes part in its machine's multivariate score.
EN_LEVEL = 1
EN_CHANGE = 2
EN_STUCK = 4
EN_RATE = 8
EN_RANGE = 16
EN_MACHINE = 32
EN_ALL = 63

# Status words, counters and setpoints: only limits apply (a counter's slope or a setpoint's steps
# are not anomalies, and a status word is constant by design).
EN_STATE = EN_RANGE
# Totalisers (run hours, strokes, parts, energy): they climb by design, so a level, a CUSUM or a
# multivariate score on the raw count only says "time passed" (on the simulated dev plant counters
# were the largest group of change alarms); range and the counting rate remain meaningful (a counter
# that races, or jumps by thousands, is a fault).
EN_COUNTER = EN_RANGE | EN_RATE
# A value measured once per part or batch (a part's temperature or weight as it enters a test): it steps
# from one part to the next by design, so its slope says nothing; its level, shifts, flat lines and its
# place in the machine's multivariate picture still do. (On the simulated leak testers, a rate stage on
# `part_temp` fired at every part change: ~10,000 one-second alarms a day on the dev plant.)
EN_PER_PART = EN_ALL & ~EN_RATE


DATA_QUALITY = (Kind.BAD, Kind.SILENT, Kind.DEVICE)


def mask_for(signal_kind: str) -> int:
    """Default enable mask for a plant-file signal ``kind``: ``state``, ``counter``, ``per_part``, else all."""
    if signal_kind == "state":
        return EN_STATE
    if signal_kind == "counter":
        return EN_COUNTER
    if signal_kind == "per_part":
        return EN_PER_PART
    return EN_ALL
