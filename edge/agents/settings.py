"""The ``agents:`` section of the edge config: the runner's bounds, and one optional block per agent.

An agent runs when its block is present and ``enabled`` is true; leave the block out (or set
``enabled: false``) to turn it off. Each agent's own settings model lives in its module; this file only
lists them, so adding an agent is one field here and one line in ``edge.agents.registry``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from edge.agents.energy_settings import EnergySettings
from edge.agents.leaktest_settings import LeakTestSettings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgentsSettings(_Strict):
    frame_budget_ms: float = Field(
        default=200.0, gt=0,
        description="time one agent may take per frame; over it for overrun_frames frames in a row disables it")
    overrun_frames: int = Field(default=5, ge=1, description="consecutive frames over frame_budget_ms before disabling")
    max_samples_per_frame: int = Field(
        default=100_000, ge=1, description="derived samples one agent may emit per frame (more are dropped, counted)")
    checkpoint_interval_s: float = Field(default=300.0, gt=0, description="how often agent state is saved")
    energy: EnergySettings | None = Field(default=None, description="energy management agent (edge.agents.energy)")
    leak_test: LeakTestSettings | None = Field(default=None, description="leak-test agent (edge.agents.leaktest)")
