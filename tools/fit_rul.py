"""Offline fitter of the edge RUL model from run-to-failure history (numpy only), shipped as an .npz of arrays.

Why offline and numpy: fitting needs whole histories and a few seconds of CPU, which a gateway should
not spend; the result is ~20 k floats that ``edge.pdm.rul.RulModel.load`` reads and the numba kernel
``edge.kernels.health`` runs. The features are computed by that same kernel (``feature_rows``), so the
model is trained on exactly what the edge will feed it.

Steps: (1) operating conditions: k-means (deterministic seeding) on the operating settings scaled by
their spread; (2) per condition, mean and spread of each sensor; (3) features of every training tick
through the edge kernel; (4) target = remaining ticks to failure capped at ``cap`` (piecewise linear,
the usual protocol); (5) a one-hidden-layer ReLU network fitted with Adam on squared error;
(6) the uncertainty band: a second network is fitted on 80 % of the machines and its errors on the
other 20 % give, in bins of predicted RUL, the ``band_quantiles`` of (true - predicted).

Command line::

    python tools/fit_rul.py TRAIN.txt[.gz] -o model.npz [--conditions K]

reads the C-MAPSS layout (unit, cycle, 3 operating settings, 21 sensors, whitespace separated).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge.kernels import health  # noqa: E402
from edge.pdm.rul import RulModel  # noqa: E402

# C-MAPSS: sensors that carry degradation (the others are constant in at least one subset).
CMAPSS_SENSORS = (2, 3, 4, 7, 8, 9, 11, 12, 13, 14, 15, 17, 20, 21)
CMAPSS_OPS = ("op_setting_1", "op_setting_2", "op_setting_3")


@dataclass(frozen=True)
class FitSettings:
    conditions: int = 1
    cap: float = 125.0
    alpha: float = 0.1
    age_scale: float = 100.0
    hidden: int = 64
    epochs: int = 60
    batch: int = 256
    lr: float = 3e-3
    l2: float = 1e-4
    seed: int = 0
    calib_fraction: float = 0.2
    band_quantiles: tuple[float, float] = (0.1, 0.9)
    band_bins: int = 6


def read_cmapss(path: Path) -> np.ndarray:
    """A C-MAPSS table as float64 (rows x 26 columns: unit, cycle, 3 settings, 21 sensors)."""
    return np.loadtxt(path, dtype=np.float64, ndmin=2)


def cmapss_runs(table: np.ndarray) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Split a C-MAPSS table into per-unit input matrices (ops then selected sensors) in cycle order."""
    cols = [2, 3, 4] + [4 + s for s in CMAPSS_SENSORS]
    runs = []
    for u in np.unique(table[:, 0]):
        rows = table[table[:, 0] == u]
        rows = rows[np.argsort(rows[:, 1], kind="stable")]
        runs.append(np.ascontiguousarray(rows[:, cols]))
    return runs, list(CMAPSS_OPS), [f"sensor_{s}" for s in CMAPSS_SENSORS]


def _kmeans(z: np.ndarray, k: int, iters: int = 50) -> np.ndarray:
    # Farthest-point seeding: deterministic, and it finds well-separated operating points at once.
    c = [z[0]]
    for _ in range(1, k):
        d = np.min(((z[:, None, :] - np.array(c)[None]) ** 2).sum(-1), axis=1)
        c.append(z[int(np.argmax(d))])
    centres = np.array(c)
    for _ in range(iters):
        lab = ((z[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
        new = np.array([z[lab == j].mean(0) if np.any(lab == j) else centres[j] for j in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    return centres


def _conditions(x_all: np.ndarray, n_op: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ops = x_all[:, :n_op]
    scale = ops.std(0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    z = ops / scale
    centres = _kmeans(z, k) if k > 1 else z.mean(0, keepdims=True)
    lab = ((z[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    return centres, scale, lab


def _features(runs: list[np.ndarray], model_arrays: dict[str, np.ndarray], d: int) -> list[np.ndarray]:
    out = []
    for x in runs:
        st = np.zeros((1, health.state_width(d)))
        f = np.empty((x.shape[0], health.n_features(d)))
        health.feature_rows(x, st, model_arrays["cond"], model_arrays["op_scale"], model_arrays["norm"],
                            model_arrays["p"], f)
        out.append(f)
    return out


def _targets(runs: list[np.ndarray], cap: float) -> list[np.ndarray]:
    return [np.minimum(np.arange(x.shape[0] - 1, -1, -1, dtype=np.float64), cap) for x in runs]


def _train_mlp(a: np.ndarray, y: np.ndarray, s: FitSettings, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Adam on squared error with a cosine learning-rate schedule; returns (w1 with bias row, w2 with bias)."""
    rng = np.random.default_rng(seed)
    n_f, h = a.shape[1], s.hidden
    w1 = rng.normal(size=(n_f, h)) * np.sqrt(2.0 / n_f)
    b1 = np.zeros(h)
    w2 = rng.normal(size=h) * np.sqrt(1.0 / h)
    b2 = np.array([y.mean()])
    params = [w1, b1, w2, b2]
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    t = 0
    for ep in range(s.epochs):
        perm = rng.permutation(a.shape[0])
        lr = s.lr * 0.5 * (1.0 + np.cos(np.pi * ep / s.epochs)) + 1e-4
        for lo in range(0, a.shape[0], s.batch):
            ib = perm[lo : lo + s.batch]
            x = a[ib]
            pre = x @ w1 + b1
            act = np.maximum(pre, 0.0)
            g = (act @ w2 + b2[0] - y[ib]) / ib.shape[0]
            gr = np.outer(g, w2) * (pre > 0)
            grads = [x.T @ gr + s.l2 * w1, gr.sum(0), act.T @ g, np.array([g.sum()])]
            t += 1
            for p, gp, mm, vv in zip(params, grads, m1, m2, strict=True):
                mm *= 0.9
                mm += 0.1 * gp
                vv *= 0.999
                vv += 0.001 * gp * gp
                p -= lr * (mm / (1 - 0.9**t)) / (np.sqrt(vv / (1 - 0.999**t)) + 1e-8)
    return np.vstack([w1, b1]), np.concatenate([w2, b2])


def _predict(f: np.ndarray, fnorm: np.ndarray, w1: np.ndarray, w2: np.ndarray, cap: float) -> np.ndarray:
    a = (f - fnorm[0]) / fnorm[1]
    return np.clip(np.maximum(a @ w1[:-1] + w1[-1], 0.0) @ w2[:-1] + w2[-1], 0.0, cap)


def _stack(feats: list[np.ndarray], ys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    f = np.concatenate(feats)
    y = np.concatenate(ys)
    ok = np.all(np.isfinite(f), axis=1)
    return f[ok], y[ok]


def fit(runs: list[np.ndarray], op_names: list[str], sensor_names: list[str], s: FitSettings | None = None,
        log: bool = False) -> RulModel:
    """Fit a model from run-to-failure ``runs`` (each ticks x inputs, ops first, the last tick = failure)."""
    s = s or FitSettings()
    t0 = time.monotonic()
    n_op, d = len(op_names), len(sensor_names)
    x_all = np.concatenate(runs)
    ok = np.all(np.isfinite(x_all), axis=1)
    centres, op_scale, lab = _conditions(x_all[ok], n_op, s.conditions)
    sens = x_all[ok][:, n_op:]
    k = centres.shape[0]
    norm = np.empty((2, k, d))
    for j in range(k):
        rows = sens[lab == j]
        norm[0, j] = rows.mean(0)
        sd = rows.std(0)
        norm[1, j] = np.where(sd > 1e-9, sd, 1.0)
    arrays = {"cond": centres, "op_scale": op_scale, "norm": norm, "p": health.make_params(s.alpha, s.age_scale, s.cap)}
    feats = _features(runs, arrays, d)
    ys = _targets(runs, s.cap)
    f, y = _stack(feats, ys)
    fmu, fsd = f.mean(0), f.std(0)
    fnorm = np.stack([fmu, np.where(fsd > 1e-12, fsd, 1.0)])
    a = (f - fnorm[0]) / fnorm[1]
    w1, w2 = _train_mlp(a, y, s, s.seed)
    if log:
        print(f"fit: {len(runs)} runs, {a.shape[0]} ticks, {k} conditions, {time.monotonic() - t0:.1f} s",
              file=sys.stderr)
    # Band: errors of a model that did not see the machines it is judged on.
    rng = np.random.default_rng(s.seed + 1)
    held = rng.random(len(runs)) < s.calib_fraction
    if held.sum() == 0 or held.sum() == len(runs):
        held = np.arange(len(runs)) % 5 == 0
    ft, yt = _stack([feats[i] for i in np.flatnonzero(~held)], [ys[i] for i in np.flatnonzero(~held)])
    fc, yc = _stack([feats[i] for i in np.flatnonzero(held)], [ys[i] for i in np.flatnonzero(held)])
    cw1, cw2 = _train_mlp((ft - fnorm[0]) / fnorm[1], yt, s, s.seed + 2)
    pc = _predict(fc, fnorm, cw1, cw2, s.cap)
    band = _band(pc, yc - pc, s)
    if log:
        print(f"fit: band from {int(held.sum())} held-out runs, {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return RulModel(op_names=np.array(op_names), sensor_names=np.array(sensor_names), cond=centres,
                    op_scale=op_scale, norm=norm, fnorm=fnorm, w1=w1, w2=w2, band=band, p=arrays["p"],
                    band_quantiles=np.array(s.band_quantiles, dtype=np.float64))


def _band(pred: np.ndarray, resid: np.ndarray, s: FitSettings) -> np.ndarray:
    """Bins of predicted RUL with equal counts; per bin the quantiles of the residual."""
    edges = np.quantile(pred, np.linspace(0, 1, s.band_bins + 1)[1:])
    edges[-1] = np.inf
    lab = np.searchsorted(edges, pred, side="left")
    band = np.empty((3, s.band_bins))
    band[0] = edges
    qlo, qhi = s.band_quantiles
    for b in range(s.band_bins):
        r = resid[lab == b]
        if r.shape[0] == 0:
            r = resid
        # Widened to contain the estimate itself: a band that excludes the point it surrounds reads as a bug.
        band[1, b] = min(float(np.quantile(r, qlo)), 0.0)
        band[2, b] = max(float(np.quantile(r, qhi)), 0.0)
    band[0, -1] = np.finfo(np.float64).max
    return band


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fit_rul", description=__doc__.split("\n\n")[0])
    ap.add_argument("train", type=Path, help="C-MAPSS training file (unit, cycle, 3 settings, 21 sensors)")
    ap.add_argument("-o", "--output", type=Path, required=True, help="model .npz to write")
    ap.add_argument("--conditions", type=int, default=1, help="operating conditions (1 for FD001/3, 6 for FD002/4)")
    ap.add_argument("--cap", type=float, default=125.0)
    ap.add_argument("--epochs", type=int, default=60)
    args = ap.parse_args(argv)
    runs, ops, sens = cmapss_runs(read_cmapss(args.train))
    model = fit(runs, ops, sens, FitSettings(conditions=args.conditions, cap=args.cap, epochs=args.epochs), log=True)
    model.save(args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
