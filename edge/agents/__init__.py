"""Edge agents: plant logic beside detection (energy, leak test, ...). Start at ``docs/agents.md``.

Public surface: ``Agent`` (subclass it), ``AgentContext`` (what it is built from), ``DerivedSignal``,
``Emitter`` (where it writes), ``AgentSettings`` (base of its settings block) and ``AgentRunner`` (the
daemon's side). Modules: ``base`` (the interface), ``runner`` (isolation, timing, checkpoints),
``table`` (derived rows of the signal table), ``settings`` (the ``agents:`` config section),
``registry`` (config key -> class).
"""

from edge.agents.base import Agent, AgentContext, AgentSettings, DerivedSignal, Emitter

__all__ = ["Agent", "AgentContext", "AgentSettings", "DerivedSignal", "Emitter"]
