"""The incident record and its document: what one machine's alarms are, rolled up, at one transition.

Words from ISA-18.2 / IEC 62682: an incident is *active* while one of its contributors (signal or machine
alarms) is open, *acknowledged* once an operator said so, *shelved* until a time, *out of service* for a
reason, *suppressed* by design (machine off, starting, in maintenance, or summarised into a flood).
The JSON document (contracts.md, ``type: incident``) is built here and nowhere else; docs/alarms.md
describes it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Priority(enum.IntEnum):
    """Ordered: a larger value is more urgent. The wire spells them in lower case."""

    LOW = 1
    HIGH = 2
    CRITICAL = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class Transition(enum.StrEnum):
    OPEN = "open"
    UPDATE = "update"
    CLEAR = "clear"
    ACK = "ack"
    SHELVE = "shelve"
    UNSHELVE = "unshelve"
    OOS = "oos"
    RETURN = "return"
    CHATTER = "chatter"
    FLOOD_OPEN = "flood_open"
    FLOOD_CLOSE = "flood_close"
    SUPPRESS = "suppress"
    UNSUPPRESS = "unsuppress"


@dataclass(slots=True)
class Contributor:
    """One alarm feeding an incident: a signal's alarm, a machine's multivariate alarm, or its health alarm."""

    key: str  # "s<signal index>", "m<machine index>", "h<machine index>": one alarm state in the detectors
    name: str  # the signal id (for machine alarms: the top contributing signal, else the machine id)
    kind: str
    peak: float
    active: bool
    start_ns: int
    end_ns: int | None = None


@dataclass(slots=True)
class Incident:
    id: str
    machine: str | None  # None for a flood incident
    area: str
    priority: Priority
    start_ns: int
    seq: int = 0
    end_ns: int | None = None
    active: bool = True
    acked: bool = False
    shelved_until_ns: int | None = None
    out_of_service: bool = False
    suppressed_by: str | None = None
    chattering: bool = False
    flood_count: int | None = None
    contributors: dict[str, Contributor] = field(default_factory=dict)
    kinds: list[str] = field(default_factory=list)  # every kind seen, in order of first appearance
    peak: float = 0.0
    clear_due_ns: int | None = None  # set while every contributor is closed and the clear delay runs
    announced: bool = False  # an open (not suppressed) document went out: it reached an operator

    @property
    def annunciated(self) -> bool:
        """Shown to an operator as an active alarm now."""
        return (self.active and self.suppressed_by is None and self.shelved_until_ns is None
                and not self.out_of_service)

    def signals(self, limit: int) -> list[str]:
        """Contributing signal ids, most important first (active before cleared, then by peak)."""
        order = sorted(self.contributors.values(), key=lambda c: (not c.active, -c.peak, c.name))
        out: list[str] = []
        for c in order:
            if c.name not in out:
                out.append(c.name)
            if len(out) >= limit:
                break
        return out

    def doc(self, transition: Transition, ts_ns: int, *, max_signals: int, actor: str | None = None,
            reason: str | None = None) -> dict[str, Any]:
        """The ``incident`` document for this transition; bumps ``seq`` (strictly increasing per incident)."""
        self.seq += 1
        return {
            "type": "incident",
            "id": self.id,
            "seq": self.seq,
            "ts_ns": int(ts_ns),
            "start_ns": int(self.start_ns),
            "end_ns": None if self.end_ns is None else int(self.end_ns),
            "transition": str(transition),
            "machine": self.machine,
            "area": self.area,
            "priority": self.priority.label,
            "active": self.active,
            "acked": self.acked,
            "shelved_until_ns": self.shelved_until_ns,
            "out_of_service": self.out_of_service,
            "suppressed_by": self.suppressed_by,
            "chattering": self.chattering,
            "flood_count": self.flood_count,
            "kinds": list(self.kinds),
            "signals": self.signals(max_signals),
            "peak": round(float(self.peak), 4),
            "actor": actor,
            "reason": reason,
        }

    # -- checkpoint --------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__slots__ if k not in ("contributors", "priority")}
        d["priority"] = int(self.priority)
        d["contributors"] = [[c.key, c.name, c.kind, c.peak, c.active, c.start_ns, c.end_ns]
                             for c in self.contributors.values()]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Incident:
        contributors = {row[0]: Contributor(*row) for row in d["contributors"]}
        rest = {k: v for k, v in d.items() if k not in ("contributors", "priority")}
        return cls(priority=Priority(int(d["priority"])), contributors=contributors, **rest)
