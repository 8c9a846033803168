"""``plantwire rebaseline``: accept a confirmed change (a new setpoint, a replaced sensor, a new part fitted).

    plantwire rebaseline EDGE.yaml SIGNAL_PATTERN... [--dry-run]     signals, in the checkpoint (edge stopped)
    plantwire rebaseline --state-dir DIR MACHINE_PATTERN...          machines, through a running edge's state dir

Signals (``EDGE.yaml`` first): the level baselines learn slowly while a signal is anomalous (guarded learning,
``analytics.level.guard``), so a persistent fault stays an alarm -- and so does a wanted change until an
engineer confirms it. This loads the gateway's checkpoint (``state_dir/detectors.npz``), re-baselines the
signals whose ids match any of the fnmatch patterns (``DetectorStack.rebaseline``) and saves it. Run it while
the edge is stopped (``systemctl stop``, then start): a running edge would overwrite the file at its next
checkpoint.

Machines (``--state-dir``): the machine stage's fitted PCA baselines never learn while they score, so a
confirmed change reaches them as a request file in the edge's state directory
(``edge.detectors.machine.request_rebaseline``); the running edge picks it up on its next analytics tick and
the matching machines drop their baseline, record afresh and refit (see ``edge/detectors/machine.py``).
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="plantwire rebaseline",
        usage="plantwire rebaseline CONFIG SIGNAL_PATTERN... [--dry-run]\n"
              "       plantwire rebaseline --state-dir DIR MACHINE_PATTERN...",
        description="accept a confirmed change: signals' baselines learn afresh "
        "(CONFIG PATTERN...: in the checkpoint, edge stopped) or machines refit theirs (--state-dir DIR PATTERN...: "
        "through a running edge)")
    p.add_argument("--state-dir", type=Path,
                   help="machines: the running edge's state directory; the patterns are machine ids")
    p.add_argument("args", nargs="+", metavar="CONFIG PATTERN",
                   help="signals: the edge's config file, then signal ids or fnmatch patterns (line1.press07.*); "
                        "with --state-dir: machine ids or patterns (line1.press0*)")
    p.add_argument("--dry-run", action="store_true", help="signals: list the matching signals, change nothing")
    ns = p.parse_args(list(argv) if argv is not None else None)
    if ns.state_dir is not None:
        if ns.dry_run:
            p.error("--dry-run is for signals (CONFIG PATTERN...), not with --state-dir")
        return _machines(ns.state_dir, ns.args)
    if len(ns.args) < 2:
        p.error("signals: CONFIG and at least one PATTERN are required (machines: --state-dir DIR PATTERN...)")
    return _signals(Path(ns.args[0]), ns.args[1:], ns.dry_run)


def _machines(state_dir: Path, patterns: list[str]) -> int:
    """Ask a running edge to re-baseline the machines matching ``patterns`` (a request file in its state dir)."""
    from edge.detectors.machine import request_rebaseline

    print(f"plantwire rebaseline: requested in {request_rebaseline(state_dir, patterns)}")
    return 0


def _signals(config: Path, patterns: list[str], dry_run: bool) -> int:
    """Re-baseline the matching signals in the stopped edge's checkpoint."""
    from edge.config import load_edge
    from edge.detectors.analytics import DETECTORS_FILE, AnalyticsConfigError, EdgeAnalytics
    from plantwire.configfile import ConfigError
    from plantwire.plant import expand

    try:
        cfg, plant = load_edge(config)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    table = expand(plant)
    rows = np.array([i for i, sid in enumerate(table.ids) if any(fnmatch.fnmatchcase(sid, pat)
                                                                  for pat in patterns)], dtype=np.int64)
    if rows.size == 0:
        print(f"plantwire rebaseline: no signal matches {patterns}", file=sys.stderr)
        return 2
    path = cfg.state_dir / DETECTORS_FILE
    try:
        an = EdgeAnalytics.from_table(table, cfg.analytics.model_copy(update={"health": None}),
                                      state_dir=cfg.state_dir, base_dir=config.parent)
    except AnalyticsConfigError as exc:  # e.g. a machine model file that cannot be read
        print(f"plantwire rebaseline: {config}: {exc}", file=sys.stderr)
        return 2
    if not path.exists() or any("detectors start cold" in r for r in an.cold_reasons):
        print(f"plantwire rebaseline: {path}: no usable checkpoint ({'; '.join(an.cold_reasons)})", file=sys.stderr)
        return 2
    for r in rows.tolist()[:20]:
        print(f"  {table.ids[r]}")
    if rows.size > 20:
        print(f"  ... {rows.size - 20} more")
    if dry_run:
        print(f"{rows.size} signals would be re-baselined (dry run)")
        return 0
    an.stack.rebaseline(rows)
    an.stack.save(path)
    print(f"{rows.size} signals re-baselined in {path}")
    return 0
