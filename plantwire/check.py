"""``plantwire check FILE``: validate a plant, edge or ingestor config without touching the network.

What a file is, is never guessed from its keys (an edge config missing ``gateway_id`` used to be
checked as an ingestor config and reported as ``plant: unknown field``). In this order:

1. ``--kind plant|edge|ingestor`` on the command line;
2. the file's own top-level ``kind:``;
3. its name: ``plant*.yaml``, ``edge*.yaml``, ``cloud*.yaml`` / ``ingest*.yaml`` (the names the
   shipped configs and ``plantwire install`` use);
4. otherwise every kind is tried: if exactly one accepts the file, that is it (and the summary
   says it was inferred); if none does, the report says so for each kind, with its errors, and how
   to name the kind.

Every error is printed with its path, cross-field errors together with the field errors, and the
exit status is 2 when there is any, so scripts and systemd ``ExecStartPre`` can use it. An edge
config's plant file is checked even when the edge config itself has errors.
"""

from __future__ import annotations

import sys
from pathlib import Path

from plantwire.configfile import ConfigError, ConfigKind, declared_kind, load_plant, read_yaml

__all__ = ["check_file", "kind_from_name", "main"]

_NAME_PREFIXES = (
    ("plant", ConfigKind.PLANT),
    ("edge", ConfigKind.EDGE),
    ("cloud", ConfigKind.INGESTOR),
    ("ingest", ConfigKind.INGESTOR),
)
#: Errors shown per kind when no kind accepts a file whose kind is unknown.
_TRIED_ERRORS = 3


def kind_from_name(path: Path) -> ConfigKind | None:
    """The kind a file's name says (``edge.yaml``, ``cloud-prod.yaml``), or None."""
    stem = path.name.lower()
    for prefix, kind in _NAME_PREFIXES:
        if stem.startswith(prefix):
            return kind
    return None


def check_file(path: Path, kind: ConfigKind | None = None) -> str:
    """Validate ``path``; return a one-line summary, or raise ConfigError with every problem."""
    declared, _ = declared_kind(path)
    if kind is not None and declared is not None and kind != declared:
        raise ConfigError(str(path), [f"kind: the file says {declared.value!r}, but --kind is {kind.value!r}"])
    kind = kind or declared or kind_from_name(path)
    if kind is not None:
        return _check_as(path, kind)
    failures: dict[ConfigKind, ConfigError] = {}
    for k in ConfigKind:
        try:
            summary = _check_as(path, k)
        except ConfigError as exc:
            failures[k] = exc
            continue
        return f"{summary} (kind inferred: add 'kind: {k.value}' to say so)"
    lines = ["(top level): kind unknown (no 'kind:' field, --kind or telling file name); tried every kind:"]
    for k, exc in failures.items():
        shown = exc.errors[:_TRIED_ERRORS]
        more = len(exc.errors) - len(shown)
        lines.append(f"  as {k.value}: " + "; ".join(shown) + (f"; and {more} more" if more > 0 else ""))
    lines.append("  say which it is with 'kind: plant|edge|ingestor' in the file or plantwire check --kind")
    raise ConfigError(str(path), lines)


def _check_as(path: Path, kind: ConfigKind) -> str:
    if kind is ConfigKind.PLANT:
        from plantwire.plant import expand

        plant = load_plant(path)
        table = expand(plant)
        n_dev = len(table.devices)
        summary = (f"{path}: plant {plant.site!r}: {len(table)} signals, {len(table.machine_ids)} machines, "
                   f"{n_dev} devices")
        return "\n".join([summary, *(f"{path}: warning: {w}" for w in plant.semantic_warnings())])
    if kind is ConfigKind.EDGE:
        return _check_edge(path)
    from cloud.config import load_cloud

    ccfg = load_cloud(path)
    return f"{path}: ingestor writing to {ccfg.influx.url} ({ccfg.influx.api.value})"


def _check_edge(path: Path) -> str:
    from edge.config import load_edge
    from plantwire.plant import expand

    data = read_yaml(path, kind=ConfigKind.EDGE)
    try:
        cfg, plant = load_edge(path)
    except ConfigError as exc:
        errors = list(exc.errors)
        ref = data.get("plant")
        if isinstance(ref, str) and not any(e.startswith("plant") for e in errors):
            plant_path = Path(ref) if Path(ref).is_absolute() else path.parent / ref
            try:
                load_plant(plant_path)
            except ConfigError as pexc:  # the plant's own errors in the same report
                errors += [f"plant: {e}" for e in pexc.report().splitlines()]
        raise ConfigError(str(path), errors) from None
    summary = f"{path}: edge gateway {cfg.gateway_id!r} reading {len(expand(plant))} signals"
    return "\n".join([summary, *(f"{path}: warning: plant {w}" for w in plant.semantic_warnings())])


def main(paths: list[Path], kind: ConfigKind | None = None) -> int:
    status = 0
    for path in paths:
        try:
            print(check_file(path, kind))
        except ConfigError as exc:
            print(exc.report(), file=sys.stderr)
            status = 2
    return status
