"""Priority of an alarm contribution: kind x severity x machine criticality (an ISA-18.2 priority matrix).

Severity is *major* for a value outside its plausible range, a machine's multivariate alarm (several signals
moving together), a health alarm (a failure is near), or any contribution scoring at least ``major_peak``;
otherwise *minor*. Data-quality kinds (the measurement is at fault, not the process) are low: a maintenance
job, not an operator response.

    criticality   major      minor
    high          critical   high
    medium        high       low
    low           low        low
"""

from __future__ import annotations

from edge.alarms.model import Priority
from edge.kernels.kinds import DATA_QUALITY, Kind
from plantwire.plant import Criticality

MAJOR_KINDS = (Kind.RANGE, Kind.MACHINE, Kind.HEALTH)
_MATRIX: dict[Criticality, tuple[Priority, Priority]] = {
    Criticality.HIGH: (Priority.CRITICAL, Priority.HIGH),
    Criticality.MEDIUM: (Priority.HIGH, Priority.LOW),
    Criticality.LOW: (Priority.LOW, Priority.LOW),
}


def contribution_priority(kind: Kind, peak: float, criticality: Criticality, major_peak: float) -> Priority:
    if kind in DATA_QUALITY or kind is Kind.STUCK:
        return Priority.LOW
    major = kind in MAJOR_KINDS or peak >= major_peak
    return _MATRIX[criticality][0 if major else 1]


def parse_priority(label: str) -> Priority:
    return Priority[label.upper()]
