"""``plantwire check FILE``: validate a plant, edge or ingestor config without touching the network.

The kind of file is recognised by its keys (``templates`` -> plant, ``gateway_id`` -> edge,
``influx`` or ``mqtt`` without ``gateway_id`` -> ingestor). Every error is printed with its path,
and the exit status is 2 when there is any, so scripts and systemd ``ExecStartPre`` can use it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from plantwire.configfile import ConfigError, load_plant, read_yaml


def check_file(path: Path) -> str:
    """Validate ``path``; return a one-line summary, or raise ConfigError with every problem."""
    data = read_yaml(path)
    if "templates" in data or "machines" in data or "imports" in data:
        from plantwire.plant import expand

        plant = load_plant(path)
        table = expand(plant)
        n_dev = len(table.devices)
        summary = (f"{path}: plant {plant.site!r}: {len(table)} signals, {len(table.machine_ids)} machines, "
                   f"{n_dev} devices")
        return "\n".join([summary, *(f"{path}: warning: {w}" for w in plant.semantic_warnings())])
    if "gateway_id" in data:
        from edge.config import load_edge
        from plantwire.plant import expand

        cfg, plant = load_edge(path)
        summary = f"{path}: edge gateway {cfg.gateway_id!r} reading {len(expand(plant))} signals"
        return "\n".join([summary, *(f"{path}: warning: plant {w}" for w in plant.semantic_warnings())])
    if "influx" in data or "mqtt" in data:
        from cloud.config import load_cloud

        ccfg = load_cloud(path)
        return f"{path}: ingestor writing to {ccfg.influx.url} ({ccfg.influx.api.value})"
    raise ConfigError(
        str(path), ["(top level): not a plant (templates), edge (gateway_id) or ingestor (influx) config"]
    )


def main(paths: list[Path]) -> int:
    status = 0
    for path in paths:
        try:
            print(check_file(path))
        except ConfigError as exc:
            print(exc.report(), file=sys.stderr)
            status = 2
    return status
