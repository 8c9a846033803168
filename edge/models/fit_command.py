"""``plantwire fit-machine HISTORY.csv -o MODEL.npz``: fit a machine's baseline from its normal operation.

Why a command: re-baselining is a deliberate act (a confirmed change, a repaired machine, a new
operating regime), never something the edge drifts into. An engineer exports the machine's history,
fits here, and points the edge's ``machine.models`` at the result (a SIGHUP or restart loads it; the edge
also refits by itself when a machine has no model). The CSV is read exactly as ``plantwire score``
reads it (timestamp column, value columns, unreadable values as missing); ``--rows A:B`` picks the
normal part. Writes ``MODEL.npz`` (plain arrays) and ``MODEL.json`` (the manifest: signals in order,
lags, per mode the limits and component count, fit settings, a hash of the data).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge.detectors.settings import MachineSettings
from edge.models import machine


def build_parser() -> argparse.ArgumentParser:
    d = machine.FitSettings()
    p = argparse.ArgumentParser(prog="plantwire fit-machine", description=__doc__.split("\n")[0])
    p.add_argument("input", type=Path, help="CSV with a header, a timestamp column and the machine's signals")
    p.add_argument("-o", "--output", type=Path, required=True, help="model file (.npz; the manifest goes beside it)")
    p.add_argument("--timestamp-column", help="name of the timestamp column (default: timestamp, else the first)")
    p.add_argument("--columns", nargs="+", help="the machine's signals (default: all value columns)")
    p.add_argument("--time-unit", default="s", help="unit of numeric timestamps (as plantwire score)")
    p.add_argument("--rows", default=":", help="rows of normal operation, python slice A:B (default: all)")
    p.add_argument("--name", default="", help="machine or template the model is for (manifest only)")
    p.add_argument("--lags", type=int, default=d.lags)
    p.add_argument("--variance", type=float, default=d.variance)
    p.add_argument("--ewma", type=float, default=d.ewma)
    p.add_argument("--quantile", type=float, default=d.quantile)
    p.add_argument("--margin", type=float, default=MachineSettings().margin,
                   help="limit = normal + margin x (quantile - normal); the edge's default (machine.margin)")
    p.add_argument("--modes", type=int, default=d.modes, help="operating modes (0: found from the data)")
    p.add_argument("--mode-columns", nargs="+", default=[], help="mode variables (default: all signals)")
    return p


def read_table(path: Path, timestamp_column: str | None, columns: Sequence[str] | None,
               time_unit: str) -> tuple[list[str], np.ndarray]:
    """(signal names, rows x signals with NaN for unusable values) via ``plantwire score``'s reader."""
    from edge.score import CsvSource, InputProblems

    with open(path, newline="") as f:
        src = CsvSource(f, timestamp_column=timestamp_column, columns=columns, time_unit=time_unit,
                        unit_column=None, problems=InputProblems())
        parts = [np.where(ch.quality == 2, np.nan, ch.values) for ch in src.chunks()]
    return list(src.names), np.vstack(parts) if parts else np.zeros((0, len(src.names)))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    try:
        names, x = read_table(args.input, args.timestamp_column, args.columns, args.time_unit)
        a, _, b = args.rows.partition(":")
        x = x[int(a) if a else None:int(b) if b else None]
        unknown = [c for c in args.mode_columns if c not in names]
        if unknown:
            raise ValueError(f"--mode-columns: not among the signals: {unknown}")
        s = machine.FitSettings(lags=args.lags, variance=args.variance, ewma=args.ewma, quantile=args.quantile,
                                margin=args.margin, modes=args.modes,
                                mode_signals=tuple(names.index(c) for c in args.mode_columns))
        model = machine.fit(x, names, s, name=args.name)
    except (OSError, ValueError) as exc:
        print(f"plantwire fit-machine: {exc}", file=sys.stderr)
        return 2
    man = machine.save(model, args.output)
    modes = ", ".join(f"{mo.eigenvalues.shape[0]} components, limit {mo.limit:.3g} ({mo.rows} rows)"
                      for mo in model.modes)
    print(f"plantwire fit-machine: {len(names)} signals, {len(model.modes)} mode(s): {modes}; wrote {args.output} "
          f"and {man}", file=sys.stderr)
    return 0
