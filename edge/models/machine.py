"""Fitting, saving and packing per-machine PCA models (numpy only) for the kernel in ``edge.kernels.pca``.

Why here and numpy: the same code fits a model offline (``plantwire fit-machine`` / ``tools/fit_machine.py``
on exported history) and on the edge from its own first hours (``edge.detectors.machine``, on a worker
thread), so both produce identical arrays. A fit is one eigendecomposition per mode and fold: a few
milliseconds for a machine of 50 signals with two lags.

A model is fitted on **normal operation** only and then frozen: it never learns while it scores, so a
persistent fault is not absorbed; re-baselining is a refit, on purpose (``docs``: a confirmed change).

Fitting, per machine (every setting in ``FitSettings``, chosen a priori, not on a test set):
1. Operating modes: k-means (farthest-point seeding, deterministic) on the mode variables scaled by their
   spread; ``modes=0`` picks the number of modes from the data: the largest K <= ``max_modes`` whose
   within-mode scatter is at most ``mode_split`` of the scatter with K - 1 modes, every mode holding at
   least ``min_mode_rows`` rows (a load range the data barely visited gets no baseline of its own).
2. Per mode, dynamic PCA (Ku, Storer, Georgakis 1995): rows augmented with ``lags`` predecessors,
   autoscaled (scales floored so a constant signal cannot divide by zero), components kept up to
   ``variance`` of the total, eigenvalues floored at ``eig_floor`` of the largest (regularises T² on
   short training data: 500 rows for 156 lagged features leaves the small eigenvalues poorly known).
3. Limits without any fault data: blocked K-fold cross-validation on the training rows (``folds``
   contiguous blocks; each is scored by a model fitted on the others). The references ``t2_ref`` and
   ``spe_ref`` are the held-out medians of T² and SPE, the limit the ``quantile`` of the held-out,
   EWMA-smoothed combined statistic. Held-out statistics carry the overfitting that in-sample ones hide,
   which is why textbook limits (computed in-sample) raise too many false alarms on new normal data.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge.kernels import pca

MODEL_VERSION = 1
SCALE_FLOOR = 1e-9


class MachineModelError(Exception):
    """A model file that cannot be used (missing, another version, inconsistent arrays, other signals)."""


@dataclass(frozen=True)
class FitSettings:
    """How a machine model is fitted; the defaults and how they were chosen are in the module docstring.

    lags 2 (Ku et al. 1995 found two lags enough for the Tennessee Eastman process and most plants);
    variance 0.95 and EWMA weight 0.1 (Lowry et al. 1992: 0.1-0.2 for small persistent shifts) are the
    common textbook values; limit at the 99 % held-out quantile, i.e. ~1 % of normal ticks above it
    before the alarm layer's debounce (the process-monitoring convention TEP results are quoted at).
    ``margin`` stretches the limit away from the normal level, ``init + margin * (quantile - init)``:
    an extrapolation of the tail for plants that need far fewer than 1 % false ticks (the edge's
    ``machine.margin``); 1.0 is the plain quantile.
    """

    lags: int = 2
    variance: float = 0.95
    eig_floor: float = 1e-3
    ewma: float = 0.1
    quantile: float = 0.99
    margin: float = 1.0
    folds: int = 5
    modes: int = 1  # 0: choose from the data (up to max_modes)
    max_modes: int = 4
    mode_split: float = 0.25
    min_mode_rows: int = 50
    mode_signals: tuple[int, ...] = ()  # indices of the mode variables; empty: all signals


@dataclass(frozen=True)
class ModeModel:
    """One operating mode's PCA: arrays the kernel reads (see ``edge.kernels.pca``)."""

    mean: np.ndarray  # (p,)
    scale: np.ndarray  # (p,)
    centroid: np.ndarray  # (d,) mode centroid on the mode variables
    mode_scale: np.ndarray  # (d,) > 0 on mode variables, 0 elsewhere
    loadings: np.ndarray  # (p, k)
    eigenvalues: np.ndarray  # (k,)
    t2_ref: float
    spe_ref: float
    limit: float
    ewma: float
    init: float
    rows: int


@dataclass(frozen=True)
class MachineModel:
    """A machine's fitted baseline: one ``ModeModel`` per operating mode, and what it is about."""

    signals: tuple[str, ...]
    lags: int
    modes: tuple[ModeModel, ...]
    settings: dict = field(default_factory=dict)
    name: str = ""
    data_hash: str = ""

    @property
    def d(self) -> int:
        return len(self.signals)


# -- fitting --------------------------------------------------------------------------------------


def lagged(x: np.ndarray, lags: int) -> np.ndarray:
    """Rows ``[x_t, x_{t-1}, ..., x_{t-lags}]`` for t = lags..n-1 (lag 0 first, as the kernel)."""
    n = x.shape[0]
    return np.hstack([x[lags - j: n - j] for j in range(lags + 1)])


def _pca(z: np.ndarray, variance: float, eig_floor: float) -> tuple[np.ndarray, np.ndarray]:
    cov = z.T @ z / max(z.shape[0] - 1, 1)
    w, v = np.linalg.eigh(cov)
    w, v = w[::-1], v[:, ::-1]
    w = np.maximum(w, 0.0)
    total = float(w.sum())
    if total <= 0.0:
        return v[:, :1].copy(), np.ones(1)
    k = int(np.searchsorted(np.cumsum(w) / total, variance) + 1)
    k = min(max(k, 1), z.shape[1])
    lam = np.maximum(w[:k], eig_floor * max(float(w[0]), 1e-12))
    return np.ascontiguousarray(v[:, :k]), lam


def _stats(z: np.ndarray, load: np.ndarray, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = z @ load
    r = z - t @ load.T
    return (t * t / lam).sum(axis=1), (r * r).sum(axis=1)


def _standardise(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = rows.mean(axis=0)
    scale = rows.std(axis=0, ddof=1) if rows.shape[0] > 1 else np.ones(rows.shape[1])
    # A constant feature (a setpoint, a dead or never-seen signal imputed at 0) carries no co-variation:
    # scale inf makes it a standardised 0 whatever it later reads, so its changes are left to the
    # per-signal stage instead of dividing by ~0 here.
    spread = np.maximum(np.abs(mean), 1.0)
    scale = np.where(np.isfinite(scale) & (scale > SCALE_FLOOR * spread), scale, np.inf)
    return mean, scale


def ewma(x: np.ndarray, lam: float, init: float) -> np.ndarray:
    """The kernel's smoothing, in numpy (for fitting limits on held-out statistics)."""
    out = np.empty_like(x)
    e = init
    for i, v in enumerate(x):
        e = lam * v + (1.0 - lam) * e
        out[i] = e
    return out


def _fit_mode(blocks: list[np.ndarray], centroid: np.ndarray, mode_scale: np.ndarray, s: FitSettings) -> ModeModel:
    """One mode from its contiguous runs of rows (each run is lagged on its own: no lag crosses a gap)."""
    runs = [lagged(b, s.lags) for b in blocks if b.shape[0] > s.lags]
    rows = np.vstack(runs)
    mean, scale = _standardise(rows)
    load, lam = _pca((rows - mean) / scale, s.variance, s.eig_floor)
    # Cross-validated references and limit: contiguous folds over the concatenated lagged rows.
    n = rows.shape[0]
    folds = max(2, min(s.folds, n // max(4 * (s.lags + 1), 10)))
    held_t2, held_spe = [], []
    for f in range(folds):
        lo, hi = f * n // folds, (f + 1) * n // folds
        train = np.vstack([rows[:lo], rows[hi:]])
        mu, sd = _standardise(train)
        ld, lm = _pca((train - mu) / sd, s.variance, s.eig_floor)
        t2, spe = _stats((rows[lo:hi] - mu) / sd, ld, lm)
        held_t2.append(t2)
        held_spe.append(spe)
    t2_ref = max(float(np.median(np.concatenate(held_t2))), 1e-12)
    spe_ref = max(float(np.median(np.concatenate(held_spe))), 1e-12)
    comb = [np.maximum(a / t2_ref, b / spe_ref) for a, b in zip(held_t2, held_spe, strict=True)]
    init = float(np.mean(np.concatenate(comb)))
    smoothed = np.concatenate([ewma(c, s.ewma, init) for c in comb])
    limit = init + s.margin * (float(np.quantile(smoothed, s.quantile)) - init)
    return ModeModel(mean, scale, centroid, mode_scale, load, lam, t2_ref, spe_ref, max(limit, 1e-12), s.ewma, init,
                     int(n))


def _kmeans(u: np.ndarray, k: int, iters: int = 50) -> tuple[np.ndarray, np.ndarray]:
    centres = [u[0]]
    for _ in range(1, k):
        dist = np.min([((u - c) ** 2).sum(axis=1) for c in centres], axis=0)
        centres.append(u[int(np.argmax(dist))])
    c = np.array(centres)
    lab = np.zeros(u.shape[0], dtype=np.int64)
    for _ in range(iters):
        lab = np.argmin(((u[:, None, :] - c[None]) ** 2).sum(axis=2), axis=1)
        new = np.array([u[lab == j].mean(axis=0) if np.any(lab == j) else c[j] for j in range(k)])
        if np.allclose(new, c):
            break
        c = new
    return c, lab


def find_modes(x: np.ndarray, s: FitSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centroids (K, d) in engineering units, mode scale (d,), label per row) of the operating modes."""
    d = x.shape[1]
    cols = np.array(s.mode_signals if s.mode_signals else range(d), dtype=np.int64)
    spread = x[:, cols].std(axis=0)
    spread = np.where(spread > SCALE_FLOOR, spread, 1.0)
    mode_scale = np.zeros(d)
    mode_scale[cols] = spread
    u = (x[:, cols] - x[:, cols].mean(axis=0)) / spread
    best_k, best_c, best_lab = 1, u.mean(axis=0, keepdims=True), np.zeros(x.shape[0], dtype=np.int64)
    ks = [s.modes] if s.modes >= 1 else list(range(2, s.max_modes + 1))
    prev_scatter = float(((u - u.mean(axis=0)) ** 2).sum())
    for k in ks:
        if k == 1:
            break
        c, lab = _kmeans(u, k)
        counts = np.bincount(lab, minlength=k)
        scatter = float(((u - c[lab]) ** 2).sum())
        if s.modes >= 1 or (counts.min() >= s.min_mode_rows and scatter <= s.mode_split * prev_scatter):
            best_k, best_c, best_lab = k, c, lab
            prev_scatter = scatter
        else:
            break
    centroids = np.tile(x.mean(axis=0), (best_k, 1))
    centroids[:, cols] = best_c * spread + x[:, cols].mean(axis=0)
    return centroids, mode_scale, best_lab


def _runs(lab: np.ndarray, mode: int) -> list[tuple[int, int]]:
    idx = np.flatnonzero(lab == mode)
    if idx.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(idx) > 1)
    starts = np.concatenate([[idx[0]], idx[cuts + 1]])
    ends = np.concatenate([idx[cuts], [idx[-1]]]) + 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def fit(x: np.ndarray, signals: list[str] | tuple[str, ...], settings: FitSettings | None = None, *,
        name: str = "") -> MachineModel:
    """Fit a machine model on normal-operation rows ``x`` (n x d, time order, NaN = missing)."""
    s = settings or FitSettings()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(signals):
        raise ValueError(f"x must be rows x {len(signals)} signals")
    # A signal that was mostly missing while the baseline was recorded is left out of it (imputed at 0,
    # hence constant, hence scale inf); rows missing any other signal are dropped.
    x = x.copy()
    absent = np.mean(np.isfinite(x), axis=0) < 0.5
    x[:, absent] = 0.0
    keep = np.all(np.isfinite(x), axis=1)
    if keep.sum() < 4 * (s.lags + 1) + s.folds:
        raise ValueError(f"too few complete rows to fit ({int(keep.sum())})")
    centroids, mode_scale, lab_ok = find_modes(x[keep], s)
    lab = np.full(x.shape[0], -1, dtype=np.int64)
    lab[keep] = lab_ok
    modes = []
    for mo in range(centroids.shape[0]):
        blocks = [x[a:b] for a, b in _runs(lab, mo)]
        modes.append(_fit_mode(blocks, centroids[mo], mode_scale, s))
    digest = hashlib.blake2b(np.ascontiguousarray(x).tobytes(), digest_size=8).hexdigest()
    settings_doc = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(s).items()}
    return MachineModel(tuple(signals), s.lags, tuple(modes), settings_doc, name, digest)


# -- files ----------------------------------------------------------------------------------------

_MODE_ARRAYS = ("mean", "scale", "centroid", "mode_scale", "loadings", "eigenvalues")
_MODE_SCALARS = ("t2_ref", "spe_ref", "limit", "ewma", "init", "rows")


def save(model: MachineModel, path: Path) -> Path:
    """Write ``path`` (.npz, plain arrays) and ``path`` with ``.json`` (the manifest); returns the manifest."""
    path = Path(path)
    arrays = {f"m{j}_{a}": getattr(mo, a) for j, mo in enumerate(model.modes) for a in _MODE_ARRAYS}
    np.savez(path, **arrays)
    manifest = {
        "kind": "machine-pca", "version": MODEL_VERSION, "name": model.name, "signals": list(model.signals),
        "lags": model.lags, "data_hash": model.data_hash, "settings": model.settings,
        "modes": [{a: (int(getattr(mo, a)) if a == "rows" else float(getattr(mo, a))) for a in _MODE_SCALARS}
                  | {"components": int(mo.eigenvalues.shape[0])} for mo in model.modes],
    }
    man = path.with_suffix(".json")
    man.write_text(json.dumps(manifest, indent=1) + "\n")
    return man


def load(path: Path) -> MachineModel:
    """Read a model written by ``save`` (``path`` is the .npz or the .json)."""
    path = Path(path)
    npz, man = path.with_suffix(".npz"), path.with_suffix(".json")
    try:
        doc = json.loads(man.read_text())
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise MachineModelError(f"{path}: unreadable ({exc})") from exc
    if doc.get("kind") != "machine-pca" or doc.get("version") != MODEL_VERSION:
        raise MachineModelError(f"{man}: not a machine-pca model of version {MODEL_VERSION}")
    d, lags = len(doc["signals"]), int(doc["lags"])
    p = d * (lags + 1)
    modes = []
    for j, sc in enumerate(doc["modes"]):
        a = {k: np.asarray(arrays[f"m{j}_{k}"], dtype=np.float64) for k in _MODE_ARRAYS}
        k = a["eigenvalues"].shape[0]
        if (a["mean"].shape != (p,) or a["scale"].shape != (p,) or a["loadings"].shape != (p, k)
                or a["centroid"].shape != (d,) or a["mode_scale"].shape != (d,)):
            raise MachineModelError(f"{npz}: mode {j} arrays do not fit {d} signals with {lags} lags")
        modes.append(ModeModel(**a, **{s: sc[s] for s in _MODE_SCALARS}))
    return MachineModel(tuple(doc["signals"]), lags, tuple(modes), doc.get("settings", {}), doc.get("name", ""),
                        doc.get("data_hash", ""))


# -- packing for the kernel -----------------------------------------------------------------------


@dataclass
class Bank:
    """The kernel's arrays for a set of machines (``edge.kernels.pca`` layout); machines without a model score 0."""

    mach_i: np.ndarray
    mach_f: np.ndarray
    hist: np.ndarray
    mdl_i: np.ndarray
    mdl_f: np.ndarray
    mdl_vec: np.ndarray


def pack(models: list[MachineModel | None], sizes: np.ndarray) -> Bank:
    """Kernel arrays for machines with ``sizes[m]`` members each; ``models[m]`` None = not (yet) fitted."""
    n = len(models)
    mach_i = np.zeros((n, pca.MI_WIDTH), dtype=np.int64)
    mach_i[:, pca.MI_MODE] = -1
    mdl_i_rows, mdl_f_rows, vecs = [], [], []
    off = 0
    hist_off = 0
    for m, model in enumerate(models):
        d = int(sizes[m])
        lags = model.lags if model is not None else 0
        mach_i[m, pca.MI_LAGS] = lags
        mach_i[m, pca.MI_HIST] = hist_off
        mach_i[m, pca.MI_POS] = lags  # the first push lands at slot 0
        hist_off += (lags + 1) * d
        if model is None:
            continue
        if model.d != d:
            raise MachineModelError(f"model {model.name!r} has {model.d} signals, the machine {d}")
        mach_i[m, pca.MI_MODEL0] = len(mdl_i_rows)
        mach_i[m, pca.MI_MODES] = len(model.modes)
        for mo in model.modes:
            p, k = mo.loadings.shape
            mdl_i_rows.append([d, k, p, off])
            mdl_f_rows.append([mo.t2_ref, mo.spe_ref, mo.limit, mo.ewma, mo.init])
            v = np.concatenate([mo.mean, mo.scale, mo.centroid, mo.mode_scale, mo.loadings.ravel(), mo.eigenvalues])
            vecs.append(v)
            off += v.shape[0]
    mdl_i = np.array(mdl_i_rows, dtype=np.int64).reshape(-1, pca.DI_WIDTH)
    mdl_f = np.array(mdl_f_rows, dtype=np.float64).reshape(-1, pca.DF_WIDTH)
    mdl_vec = np.concatenate(vecs) if vecs else np.zeros(0)
    mach_f = np.zeros((n, pca.MF_WIDTH), dtype=np.float64)
    hist = np.full(max(hist_off, 1), np.nan)
    return Bank(mach_i, mach_f, hist, mdl_i, mdl_f, np.ascontiguousarray(mdl_vec, dtype=np.float64))


def score_table(model: MachineModel, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(score, combined statistic, top-3 column indices) per row: the edge's own kernels, one tick per row.

    Exactly what the edge runs per frame (``pca.update_last`` then ``pca.machine_tick``), so an offline
    figure (``bench/tep_eval.py``, tests) is a figure of the edge. NaN in ``rows`` is a missing value.
    """
    rows = np.ascontiguousarray(rows, dtype=np.float64)
    n, d = rows.shape
    bank = pack([model], np.array([d]))
    machine_of = np.zeros(d, dtype=np.int64)
    m_ptr = np.array([0, d], dtype=np.int64)
    m_sig = np.arange(d, dtype=np.int64)
    sig = np.arange(d, dtype=np.uint32)
    good = np.zeros(d, dtype=np.uint8)
    x_last = np.full(d, np.nan)
    touched = np.zeros(1, dtype=np.uint8)
    tick_m = np.zeros(1, dtype=np.int64)
    tick_s = np.zeros(1)
    tick_top = np.zeros((1, pca.N_TOP), dtype=np.int64)
    score = np.zeros(n)
    stat = np.zeros(n)
    top = np.full((n, pca.N_TOP), -1, dtype=np.int64)
    for r in range(n):
        pca.update_last(sig, rows[r], good, x_last, machine_of, touched)
        touched[0] = 0
        pca.machine_tick(sig[:1], machine_of, m_ptr, m_sig, x_last, bank.mach_i, bank.mach_f, bank.hist, bank.mdl_i,
                         bank.mdl_f, bank.mdl_vec, touched, tick_m, tick_s, tick_top)
        score[r] = tick_s[0]
        stat[r] = bank.mach_f[0, pca.MF_STAT]
        top[r] = tick_top[0]
    return score, stat, top


def unpack(bank: Bank, sizes: np.ndarray) -> list[MachineModel | None]:
    """The models packed in ``bank`` (inverse of ``pack``; names and fit settings are not kept there)."""
    out: list[MachineModel | None] = []
    for m in range(bank.mach_i.shape[0]):
        n_modes = int(bank.mach_i[m, pca.MI_MODES])
        if n_modes <= 0:
            out.append(None)
            continue
        d, lags, j0 = int(sizes[m]), int(bank.mach_i[m, pca.MI_LAGS]), int(bank.mach_i[m, pca.MI_MODEL0])
        modes = []
        for j in range(j0, j0 + n_modes):
            _, k, p, off = (int(v) for v in bank.mdl_i[j])
            v = bank.mdl_vec
            o_load = off + 2 * p + 2 * d
            f = bank.mdl_f[j]
            modes.append(ModeModel(v[off:off + p].copy(), v[off + p:off + 2 * p].copy(),
                                   v[off + 2 * p:off + 2 * p + d].copy(), v[off + 2 * p + d:o_load].copy(),
                                   v[o_load:o_load + p * k].reshape(p, k).copy(),
                                   v[o_load + p * k:o_load + p * k + k].copy(),
                                   float(f[pca.DF_T2_REF]), float(f[pca.DF_SPE_REF]), float(f[pca.DF_LIMIT]),
                                   float(f[pca.DF_LAMBDA]), float(f[pca.DF_INIT]), 0))
        out.append(MachineModel(tuple(str(i) for i in range(d)), lags, tuple(modes)))
    return out
