"""Simulated plant: OPC-UA and Modbus TCP servers serving plausible signals with injected faults.

``plantwire sim PLANT.yaml`` (``simulators.app.main``) serves every device of a plant file: the
Modbus slaves from this process, each OPC-UA server from its own process. Modules:

- ``runtime``: options shared by every process, the tick clock, ``build_world`` (plant, physics,
  schedule: what every process must agree on).
- ``signals``: vectorised values per tick (base shape, noise, anomalies), deterministic per seed.
- ``physics``: per-template coupling (shifts, load -> current -> temperature, counters, leak-test
  cycles) and wear to failure.
- ``faults``: random anomalies drawn per window from the seed, and the labels (ground truth) file.
- ``schedule``: the ``--faults`` YAML (anomalies, wear, transport faults), validated with paths.
- ``encoding``: engineering values -> register images, the mirror of the edge's Modbus codec.
- ``modbus_server``: pymodbus slaves answering reads by slicing the images; misbehaviour modes.
- ``opcua_server``: one asyncua server (folders, EngineeringUnits, history, security, faults).
- ``history``: numpy ring-buffer history storage for the OPC-UA servers.
- ``control``: the loopback HTTP control API (status, faults on command).
"""
