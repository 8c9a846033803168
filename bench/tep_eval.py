"""Tennessee Eastman process: the machine stage's PCA model, fitted on d00.dat only, scored on every test run.

Protocol (``../shared/datasets/README.md``, tep/): the model is fitted on ``d00.dat`` (500 normal rows)
with ``edge.models.machine.fit`` and its defaults (``FitSettings``: what ``plantwire fit-machine`` ships,
dynamic PCA with 2 lags, margin 1), limits from blocked cross-validation on d00.dat, no test label seen.
Every ``dXX_te.dat`` (960 rows, fault after row 160) is then scored online through the edge's own numba
kernels (``edge.models.machine.score_table``: ``pca.update_last`` and ``pca.machine_tick`` once per row,
as the edge calls them per frame; a row uses only itself and earlier rows); a row is flagged when its
score reaches 0.5 (the statistic is over the fitted limit). ``--edge`` fits instead with the edge's
self-fit defaults (``MachineSettings``: static PCA, margin 2), i.e. what a gateway fits by itself.

Reported: per fault, the detection rate (rows 161-960 flagged) and the delay to the first flag after
the onset (minutes, 3 min per row); false-alarm rates on d00_te.dat and on rows 1-160 of every test file;
the mean detection rate over the 18 detectable faults (all but 3, 9, 15).

``--sweep`` also prints a sensitivity table (lags, EWMA weight, variance) around the defaults, to show
how much the figure depends on them. It is a sensitivity check printed after the fact, not how the
defaults were chosen (they are textbook values, see ``edge.models.machine.FitSettings``).

Data: Russell, Chiang and Braatz (2001), files distributed by Prof. R. D. Braatz's group; the process is
Downs and Vogel (1993).

    python bench/tep_eval.py [--data ../shared/datasets/tep] [--sweep]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge.models import machine  # noqa: E402

ONSET_ROW = 160  # rows 0..159 are normal in every test file
MIN_PER_ROW = 3.0
UNDETECTABLE = (3, 9, 15)
FAULTS = tuple(range(1, 22))


def default_data() -> Path:
    for base in (ROOT.parent / "shared" / "datasets" / "tep", Path("/work/shared/datasets/tep")):
        if base.exists():
            return base
    return ROOT.parent / "shared" / "datasets" / "tep"


def load(data: Path) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    train = np.loadtxt(data / "d00.dat.gz").T  # stored transposed: 52 x 500
    tests = {k: np.loadtxt(data / f"d{k:02d}_te.dat.gz") for k in (0, *FAULTS)}
    return train, tests


def evaluate(train: np.ndarray, tests: dict[int, np.ndarray], settings: machine.FitSettings) -> dict[str, object]:
    names = [f"xmeas_{i + 1}" for i in range(41)] + [f"xmv_{i + 1}" for i in range(11)]
    model = machine.fit(train, names, settings, name="tep")
    flags = {k: machine.score_table(model, x)[0] >= 0.5 for k, x in tests.items()}
    per_fault = {}
    for k in FAULTS:
        f = flags[k][ONSET_ROW:]
        hit = np.flatnonzero(f)
        delay = (hit[0] + 1) * MIN_PER_ROW if hit.size else float("nan")
        per_fault[k] = (float(f.mean()), delay)
    detectable = [k for k in FAULTS if k not in UNDETECTABLE]
    return {
        "model": model,
        "per_fault": per_fault,
        "mean_dr": float(np.mean([per_fault[k][0] for k in detectable])),
        "fa_d00te": float(flags[0].mean()),
        "fa_first160": float(np.mean([flags[k][:ONSET_ROW].mean() for k in FAULTS])),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=default_data())
    ap.add_argument("--sweep", action="store_true", help="also print the sensitivity table")
    ap.add_argument("--edge", action="store_true", help="the edge's self-fit defaults (MachineSettings)")
    args = ap.parse_args(argv)
    train, tests = load(args.data)
    s = machine.FitSettings()
    if args.edge:
        from edge.detectors.settings import MachineSettings

        e = MachineSettings()
        s = machine.FitSettings(lags=e.lags, variance=e.variance, ewma=e.ewma, quantile=e.quantile, margin=e.margin,
                                modes=e.modes)
    t0 = time.perf_counter()
    r = evaluate(train, tests, s)
    dt = time.perf_counter() - t0
    model = r["model"]
    mo = model.modes[0]
    print(f"TEP, model from d00.dat only ({'edge self-fit' if args.edge else 'fit-machine'} defaults, "
          f"{len(model.modes)} mode(s), margin {s.margin}): lags {s.lags}, "
          f"{mo.eigenvalues.shape[0]} of {mo.loadings.shape[0]} "
          f"components ({s.variance:.0%} variance), EWMA {s.ewma}, limit = {s.quantile:.0%} quantile of "
          f"{s.folds}-fold held-out d00 ({dt:.1f} s fit + score)")
    print(f"{'fault':>5} {'detection':>9} {'delay_min':>9}")
    for k, (dr, delay) in r["per_fault"].items():
        mark = " (undetectable)" if k in UNDETECTABLE else ""
        print(f"{k:5d} {dr:9.3f} {delay:9.0f}{mark}")
    print(f"mean detection rate over the 18 detectable faults: {r['mean_dr']:.3f}")
    print(f"false alarms: d00_te.dat {r['fa_d00te']:.3%}, rows 1-160 of the 21 test files {r['fa_first160']:.3%}")
    if args.sweep:
        print("\nsensitivity (not used to choose): lags ewma variance -> mean DR, FA d00_te, FA rows 1-160")
        for lags in (0, 1, 2, 3):
            for lam in (1.0, 0.3, 0.1):
                for var in (0.9, 0.95):
                    q = evaluate(train, tests, replace(s, lags=lags, ewma=lam, variance=var))
                    print(f"  {lags} {lam:4.1f} {var:4.2f} -> {q['mean_dr']:.3f} {q['fa_d00te']:6.2%} "
                          f"{q['fa_first160']:6.2%}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
