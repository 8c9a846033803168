"""``plantwire rebaseline EDGE.yaml PATTERN...``: accept a confirmed change in the edge's saved detector state.

Why a command on the checkpoint: the level baselines learn slowly while a signal is anomalous (guarded
learning, ``analytics.level.guard``), so a persistent fault stays an alarm -- and so does a wanted change (a new
setpoint, a replaced sensor) until an engineer confirms it. This loads the gateway's checkpoint
(``state_dir/detectors.npz``), re-baselines the signals whose ids match any of the fnmatch patterns
(``DetectorStack.rebaseline``) and saves it. Run it while the edge is stopped (``systemctl stop``, then start):
a running edge would overwrite the file at its next checkpoint.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="plantwire rebaseline", description=__doc__.split("\n\n")[0])
    p.add_argument("config", type=Path, help="the edge's config file")
    p.add_argument("patterns", nargs="+", help="signal ids or fnmatch patterns (line1.press07.*)")
    p.add_argument("--dry-run", action="store_true", help="list the matching signals, change nothing")
    args = p.parse_args(list(argv) if argv is not None else None)
    from edge.config import load_edge
    from edge.detectors.analytics import DETECTORS_FILE, EdgeAnalytics
    from plantwire.configfile import ConfigError
    from plantwire.plant import expand

    try:
        cfg, plant = load_edge(args.config)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    table = expand(plant)
    rows = np.array([i for i, sid in enumerate(table.ids) if any(fnmatch.fnmatchcase(sid, pat)
                                                                  for pat in args.patterns)], dtype=np.int64)
    if rows.size == 0:
        print(f"plantwire rebaseline: no signal matches {args.patterns}", file=sys.stderr)
        return 2
    path = cfg.state_dir / DETECTORS_FILE
    an = EdgeAnalytics.from_table(table, cfg.analytics.model_copy(update={"health": None}), state_dir=cfg.state_dir,
                                  base_dir=args.config.parent)
    if not path.exists() or any("detectors start cold" in r for r in an.cold_reasons):
        print(f"plantwire rebaseline: {path}: no usable checkpoint ({'; '.join(an.cold_reasons)})", file=sys.stderr)
        return 2
    for r in rows.tolist()[:20]:
        print(f"  {table.ids[r]}")
    if rows.size > 20:
        print(f"  ... {rows.size - 20} more")
    if args.dry_run:
        print(f"{rows.size} signals would be re-baselined (dry run)")
        return 0
    an.stack.rebaseline(rows)
    an.stack.save(path)
    print(f"{rows.size} signals re-baselined in {path}")
    return 0
