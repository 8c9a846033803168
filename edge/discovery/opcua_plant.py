"""A browsed OPC-UA server as a plant file: one device, a machine per folder, a signal per variable.

Choices, so the file reads unchanged by ``plantwire check`` and the edge, and stays right later:
- The device lists the server's whole NamespaceArray as ``namespaces``; node ids are written
  ``ns=<k>;...`` with k indexing that list, so the edge maps each URI to the server's index at every
  connect (a server that renumbers its namespaces is still read right). ``namespace`` is the URI
  most variables are in.
- A machine is the path of objects (folders) above a variable, below the browse root, joined with
  dots (``Line1.Press01``); variables right under the root go to machine ``root_machine``. Each
  machine gets a template of its own named like it: discovery cannot know which machines are
  alike; the engineer merges templates (and uses ``{i}`` in names and nodes) afterwards.
- Names keep the server's spelling where the plant allows it (``[A-Za-z0-9_:]`` for signals,
  plus ``-`` and ``.`` between levels for machines); other characters become ``_``, and a name
  taken twice in one machine gets ``_2``, ``_3``. The node id, not the name, says what is read;
  braces in it are doubled, since ``node`` is a template (``{i}``).
- ``type`` is the variable's data type in the plant's words (Double -> float64, Int32 -> int32,
  Boolean -> bool; Byte/SByte -> uint16/int16, UInt64 -> int64), Boolean variables are of
  ``kind: state``, ``unit`` is the EngineeringUnits display name, ``low``/``high`` the EURange.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from .opcua_browse import BrowseResult, FoundVariable, node_text

__all__ = ["plant_from_browse"]

_BAD_SIGNAL_CHARS = re.compile(r"[^A-Za-z0-9_:]+")
_BAD_MACHINE_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


def _clean(text: str, pattern: re.Pattern[str]) -> str:
    return pattern.sub("_", text).strip("_") or "x"


def plant_from_browse(result: BrowseResult, *, site: str, device: str, host: str, port: int, path: str,
                      root_machine: str = "root") -> dict[str, Any]:
    """The plant file's content (a dict ready for YAML) for one browsed server."""
    if not result.variables:
        raise ValueError("the server has no numeric or boolean variables below the browse root")
    used_ns = Counter(v.node.NamespaceIndex for v in result.variables)
    main_ns = used_ns.most_common(1)[0][0]
    by_machine: dict[str, list[FoundVariable]] = {}
    for v in result.variables:
        machine = ".".join(_clean(p, _BAD_MACHINE_CHARS) for p in v.path) or root_machine
        by_machine.setdefault(machine, []).append(v)
    templates: dict[str, Any] = {}
    machines: list[dict[str, Any]] = []
    for machine, variables in by_machine.items():
        taken: Counter[str] = Counter()
        signals = []
        for v in variables:
            name = _clean(v.name, _BAD_SIGNAL_CHARS)
            taken[name] += 1
            if taken[name] > 1:
                name = f"{name}_{taken[name]}"
            node = node_text(v.node).replace("{", "{{").replace("}", "}}")  # ``node`` is a template
            sig: dict[str, Any] = {"name": name, "node": node, "type": v.data_type}
            if v.data_type == "bool":
                sig["kind"] = "state"
            if v.unit:
                sig["unit"] = v.unit
            if v.low is not None and v.high is not None:
                sig["low"], sig["high"] = v.low, v.high
            signals.append(sig)
        templates[machine] = {"description": f"discovered under {'/'.join(variables[0].path) or 'the root'}",
                              "signals": signals}
        machines.append({"name": machine, "template": machine, "device": device})
    dev = {"name": device, "protocol": "opcua", "host": host, "port": port, "path": path,
           "namespace": result.namespaces[main_ns], "namespaces": list(result.namespaces)}
    return {"site": site, "devices": [dev], "templates": templates, "machines": machines}
