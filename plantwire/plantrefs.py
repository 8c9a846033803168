"""Cross-field checks of a plant file that work on the raw mapping, field errors or not.

Pydantic runs a model's cross-field checks only once every field validated, so an operator who
fixed the reported typos used to meet a second round of errors (unknown template, missing ``{i}``)
on the next try. These checks read the mapping as loaded from YAML, skip whatever is malformed
(the field validation reports that), and so run in the same pass: one report with everything.
``PlantConfig.semantic_errors`` runs them too, so a valid-looking plant gets them as well.

Devices of one group that resolve to the same PLC (``port_step: 0`` without a templated host or unit
id) are checked by ``plant._device_errors``, which resolves the templates.

Endpoint clashes: two device groups whose devices land on the same host and port would have the
edge read one device twice (and the simulator fail to bind). The one legitimate sharing is a
Modbus TCP gateway that serves several unit ids on one port: two Modbus groups on one port with
different ``unit_id`` values are allowed. Host names are compared as written (``localhost`` and
``127.0.0.1`` are not resolved: validation never touches the network).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["cross_errors"]

_DEFAULT_HOST = "127.0.0.1"
_DEFAULT_UNIT = 1


def _int(v: object, default: int | None = None) -> int | None:
    if v is None:
        return default
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _entries(data: Mapping[str, Any], key: str) -> list[tuple[int, Mapping[str, Any]]]:
    items = data.get(key)
    if not isinstance(items, list):
        return []
    return [(i, d) for i, d in enumerate(items) if isinstance(d, Mapping)]


def cross_errors(data: Mapping[str, Any]) -> list[str]:
    """References, ``{i}`` placeholders, port ranges and endpoint clashes; each error with its path."""
    errors: list[str] = []
    devices = _entries(data, "devices")
    templates = data.get("templates")
    groups = {d.get("name") for _, d in devices if isinstance(d.get("name"), str)}
    for i, g in devices:
        count = _int(g.get("count"), 1)
        port = _int(g.get("port"))
        step = _int(g.get("port_step"), 1)
        name = g.get("name")
        if count is not None and count > 1 and isinstance(name, str) and "{i" not in name:
            errors.append(f"devices[{i}].name: count is {count} but the name has no '{{i}}' placeholder")
        if (
            count is not None and port is not None and step is not None and 1 <= port <= 65535
        ) and port + (count - 1) * step > 65535:
            errors.append(f"devices[{i}].port: {count} devices from port {port} exceed 65535")
    for i, m in _entries(data, "machines"):
        template, device, name = m.get("template"), m.get("device"), m.get("name")
        count = _int(m.get("count"), 1)
        if isinstance(template, str) and isinstance(templates, Mapping) and template not in templates:
            errors.append(f"machines[{i}].template: unknown template {template!r}")
        if isinstance(device, str) and device not in groups:
            errors.append(f"machines[{i}].device: unknown device group {device!r}")
        if count is not None and count > 1 and isinstance(name, str) and "{i" not in name:
            errors.append(f"machines[{i}].name: count is {count} but the name has no '{{i}}' placeholder")
    errors += _endpoint_clashes(devices)
    return errors


def _endpoint_clashes(devices: list[tuple[int, Mapping[str, Any]]]) -> list[str]:
    """Pairs of groups sharing a host and port (Modbus groups with distinct unit ids excepted)."""
    spans: list[tuple[int, str, str, int, int, int, object]] = []  # index, name, host, first, last, step, unit
    for i, g in devices:
        port, count, step = _int(g.get("port")), _int(g.get("count"), 1), _int(g.get("port_step"), 1)
        host = g.get("host", _DEFAULT_HOST)
        if port is None or count is None or step is None or count < 1 or not isinstance(host, str):
            continue
        unit = _int(g.get("unit_id"), _DEFAULT_UNIT) if g.get("protocol") == "modbus" else None
        spans.append((i, str(g.get("name")), host, port, port + (count - 1) * step, step, unit))
    errors: list[str] = []
    for a_pos, (i, name_i, host_i, lo_i, hi_i, step_i, unit_i) in enumerate(spans):
        ports_i = _ports(lo_i, hi_i, step_i)
        for j, name_j, host_j, lo_j, hi_j, step_j, unit_j in spans[a_pos + 1 :]:
            if host_i != host_j or hi_i < lo_j or hi_j < lo_i:
                continue
            if unit_i is not None and unit_j is not None and unit_i != unit_j:
                continue  # one Modbus TCP gateway serving several unit ids
            shared = sorted(ports_i & _ports(lo_j, hi_j, step_j))
            if shared:
                errors.append(
                    f"devices[{j}].port: {name_j!r} and devices[{i}] {name_i!r} both use {host_j}:{shared[0]}"
                    + (f" (and {len(shared) - 1} more ports)" if len(shared) > 1 else "")
                )
    return errors


def _ports(lo: int, hi: int, step: int) -> set[int]:
    return {lo} if step == 0 else set(range(lo, hi + 1, step))
