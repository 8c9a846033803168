"""Alarm management on the edge (issue 16): incidents per machine, priority and area, state suppression,
ISA-18.2 lifecycle with operator commands, flood and chattering control, checkpointed across restarts.

Modules, one job each: ``settings`` (the config section), ``facts`` (area, criticality, state signal per
machine from the plant file), ``priority`` (the priority matrix), ``model`` (the incident and its document),
``commands`` (operator command validation), ``engine`` (the state machine), ``store`` (its checkpoint),
``service`` (wiring into the daemon: lanes, topics, commands, metrics). docs/alarms.md documents the JSON.
"""
