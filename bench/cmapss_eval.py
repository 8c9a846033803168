"""C-MAPSS FD001-FD004: RMSE and the PHM08 score of the edge RUL estimator at each test unit's last cycle.

Protocol (datasets README): fit on ``train_FD00x`` with the training RUL capped at 125 (``tools/fit_rul.py``,
numpy only), then run every test unit through ``edge.pdm.rul.RulEstimator`` -- the numba kernel the edge
runs, one tick per cycle, online (a cycle's estimate uses only earlier cycles) -- and compare the
estimate at its last cycle with ``RUL_FD00x``. Figures against the uncapped truth (as most papers
tabulate) and against the truth capped at 125; band coverage = share of units whose true (capped) RUL
lies in the 10-90 % band. Same settings for all four subsets except the number of operating conditions
(1 for FD001/FD003, 6 for FD002/FD004, as the dataset documents). Data: NASA Ames PCoE, Saxena et al.,
PHM 2008.

    python bench/cmapss_eval.py [FD001 ...] [--epochs N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.pdm.rul import RulEstimator  # noqa: E402
from tools.fit_rul import FitSettings, cmapss_runs, fit, read_cmapss  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets" / "cmapss"
CONDITIONS = {"FD001": 1, "FD002": 6, "FD003": 1, "FD004": 6}
PUBLISHED = {  # RMSE, as tabulated in later papers (datasets README)
    "LSTM (Zheng 2017)": (16.14, 24.49, 16.18, 28.17),
    "DCNN (Li 2018)": (12.61, 22.36, 12.64, 23.31),
    "CNN (Babu 2016)": (18.45, 30.29, 19.82, 29.16),
}


def phm08(d: np.ndarray) -> float:
    """Asymmetric score: late predictions (d = predicted - true > 0) cost more."""
    return float(np.sum(np.where(d < 0, np.exp(-d / 13.0) - 1.0, np.exp(d / 10.0) - 1.0)))


def evaluate(fd: str, data: Path, epochs: int) -> dict[str, float]:
    t0 = time.monotonic()
    runs, ops, sens = cmapss_runs(read_cmapss(data / f"train_{fd}.txt.gz"))
    model = fit(runs, ops, sens, FitSettings(conditions=CONDITIONS[fd], epochs=epochs))
    t_fit = time.monotonic() - t0
    test_runs, _, _ = cmapss_runs(read_cmapss(data / f"test_{fd}.txt.gz"))
    truth = np.loadtxt(data / f"RUL_{fd}.txt.gz", ndmin=1)
    est = RulEstimator(model, 1, np.arange(model.n_inputs, dtype=np.int64)[None, :])
    est.run_rows(test_runs[0][:2])  # compile outside the timed loop
    pred, lo, hi = np.empty(len(test_runs)), np.empty(len(test_runs)), np.empty(len(test_runs))
    t1 = time.monotonic()
    ticks = 0
    for i, x in enumerate(test_runs):
        est.reset()
        _, r, rl, rh = est.run_rows(x)
        pred[i], lo[i], hi[i] = r[-1], rl[-1], rh[-1]
        ticks += x.shape[0]
    t_run = time.monotonic() - t1
    d = pred - truth
    capped = np.minimum(truth, model.cap)
    dc = pred - capped
    return {"rmse": float(np.sqrt(np.mean(d**2))), "score": phm08(d),
            "rmse_capped": float(np.sqrt(np.mean(dc**2))), "score_capped": phm08(dc),
            "coverage": float(np.mean((capped >= lo) & (capped <= hi))), "width": float(np.mean(hi - lo)),
            "fit_s": t_fit, "ns_per_tick": 1e9 * t_run / ticks}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("subsets", nargs="*", default=list(CONDITIONS))
    ap.add_argument("--epochs", type=int, default=FitSettings().epochs)
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args(argv)
    print("C-MAPSS, edge RUL estimator (tools/fit_rul.py + edge.kernels.health), RUL at each test unit's last cycle")
    print(f"{'subset':7} {'RMSE':>6} {'score':>8} | {'RMSE@cap':>8} {'score@cap':>9} | {'cover80':>7} {'width':>6} "
          f"| {'fit s':>5} {'ns/tick':>7}")
    rmse = {}
    for fd in args.subsets:
        r = evaluate(fd, args.data, args.epochs)
        rmse[fd] = r["rmse"]
        print(f"{fd:7} {r['rmse']:6.2f} {r['score']:8.0f} | {r['rmse_capped']:8.2f} {r['score_capped']:9.0f} | "
              f"{r['coverage']:7.2f} {r['width']:6.1f} | {r['fit_s']:5.0f} {r['ns_per_tick']:7.0f}", flush=True)
    print("RMSE / score: against the uncapped test truth; @cap: truth capped at 125 (as training).")
    for name, vals in PUBLISHED.items():
        row = " ".join(f"{fd}={vals[list(CONDITIONS).index(fd)]:.2f}" for fd in args.subsets)
        print(f"published {name}: {row}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
