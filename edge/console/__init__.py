"""The edge box's local web console: overview, signals, alarms and configuration pages, served by the
edge daemon itself (aiohttp, in a thread of its own), off the hot path, secure by default.

Public surface: :class:`ConsoleSettings` (the ``console:`` config section), :class:`ConsoleServer`,
:class:`GatewayFeed` (what the daemon hands it), :class:`SignalTap` (the one hot-path call),
:class:`ConsoleHooks` (where incidents, models and agents plug in). See docs/console.md.
"""

from edge.console.hooks import (
    ActionResult,
    AlarmBoard,
    ConsoleHooks,
    DetectorAlarmBoard,
    IncidentBoard,
    Outcome,
    agents_hook,
    models_hook,
)
from edge.console.settings import ConsoleSettings, ConsoleTls, Role
from edge.console.tap import SignalTap
from edge.console.view import GatewayFeed

__all__ = [
    "ActionResult",
    "AlarmBoard",
    "ConsoleHooks",
    "ConsoleSettings",
    "ConsoleTls",
    "DetectorAlarmBoard",
    "GatewayFeed",
    "IncidentBoard",
    "Outcome",
    "Role",
    "SignalTap",
    "agents_hook",
    "models_hook",
]
