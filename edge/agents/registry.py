"""Which agents exist: the ``agents:`` config key of each, and its class.

An explicit table (no registration by import side effect): adding an agent is one line here and one
field in ``edge.agents.settings.AgentsSettings``. The runner builds agents in this order, which is also
the order of their derived signals in the gateway's signal table.
"""

from __future__ import annotations

from edge.agents.base import Agent


def agent_classes() -> dict[str, type[Agent]]:
    """Config key -> agent class (imported here, lazily, so the config loads without the kernels)."""
    from edge.agents.energy import EnergyAgent
    from edge.agents.leaktest import LeakTestAgent

    return {"energy": EnergyAgent, "leak_test": LeakTestAgent}
