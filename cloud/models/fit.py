"""Fitting a site's models per machine template from its stored history: ``plantwire models fit``.

Per template (every machine of the plant file built from it), from ``[start, end)`` of the history:

- the time range is split: the first ``1 - holdout`` is for fitting, the later ``holdout`` (20 % by
  default) is held back and only scored, so every validation figure is out of sample *and* later in time,
  as a shipped model meets the plant;
- rows are the edge's machine ticks (``cloud.models.history``), with alarm episodes and declared periods
  left out (``cloud.models.exclude``) and bad samples missing;
- **machine_pca**: the edge's own numpy fitter (``edge.models.machine.fit``) with the edge's machine
  settings (``MachineSettings``: lags, variance, EWMA, quantile, margin, modes found from the data), on the
  rows of every instance pooled, thinned evenly to at most ``max_rows``. Members are the template's signals
  that take part in the edge's machine score (not ``state`` or ``counter`` kinds). Validation: each of up to
  ``validation_machines`` instances' held-back rows through the edge's scoring kernel
  (``machine.score_table``): the fraction of ticks over the limit and alarm openings per machine-day;
- **signal_baseline**: per template signal (every kind but ``state``), statistics of the kept rows pooled over
  instances (count, mean, std, min, max exactly; quantiles and MAD from the thinned rows) and suggested
  limits ``low``/``high`` = the ``q_low``/``q_high`` quantiles widened by ``margin`` of their span.
  Validation: the fraction of held-back ticks outside [low, high];
- **rul**: needs run-to-failure labels (when each machine failed or was repaired). The history InfluxDB holds
  has none (no failure or maintenance records in the schema; the simulator's wear plan is not published),
  so no RUL model is fitted from it; ``tools/fit_rul.py`` fits one from labelled history offline and
  ``cloud.models.bundles.rul_bundle`` ships its ``.npz`` as a bundle.

Reading is bounded per template, not per plant: the range is read in windows of ``window_s`` (an hour)
per machine, and when a template's machines hold more than ``read_ticks`` ticks in all, each machine reads
only every k-th window, staggered so the template's machines together still cover every hour of every day
(100 compressors over a week at 10 s: 6 M ticks, k = 61). A PCA of 30-40 signals is settled by ~10^4-10^5
rows; reading all 6 M ticks would only cost InfluxDB time (``bench/model_fit.py``: InfluxDB's aggregation
is what bounds the fit). The report says the stride.

Memory: one machine's rows for the whole range at a time (``ticks x members x 8`` bytes: a week at 10 s for
40 signals is 19 MB), plus the thinned pool per template (``max_rows x members x 8``) and the held-back rows
of the validation machines. Nothing scales with the number of samples.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cloud.models.exclude import Declared, keep_rows
from cloud.models.history import NS_PER_S, History, MachineRows
from edge.detectors.settings import MachineSettings
from edge.kernels.kinds import EN_MACHINE, mask_for
from edge.models import machine as mm
from plantwire.plant import PlantConfig


@dataclass(frozen=True)
class FitOptions:
    """What ``fit_site`` does; defaults chosen a priori (documented in docs/models.md), not on test data."""

    period_s: int = 10  # the edge's machine.period_s: one row per tick
    holdout: float = 0.2  # later fraction of the range held back for validation
    max_rows: int = 50_000  # PCA/baseline rows per template after even thinning
    validation_machines: int = 10  # instances per template whose held-back rows are scored
    pad_s: int = 120  # alarm episodes widened by this on both sides
    lookback_s: int = 86_400  # episodes that started this long before the range may still cover it
    instances: int = 0  # read at most this many instances per template (evenly chosen); 0 = all
    read_ticks: int = 100_000  # ticks read per template at most (about): beyond, machines read every k-th window
    window_s: int = 3600  # one read window (and InfluxDB query) per machine
    parallel: int = 2  # InfluxDB queries in flight (the box's second core works for InfluxDB meanwhile)
    q_low: float = 0.001
    q_high: float = 0.999
    margin: float = 0.1
    machine: MachineSettings = field(default_factory=MachineSettings)
    templates: tuple[str, ...] = ()  # empty: every template with machines


@dataclass
class Fitted:
    """One fitted model of one template, ready to be signed into a bundle (``cloud.models.bundles``)."""

    kind: str
    template: str
    signals: list[str]
    arrays: dict[str, np.ndarray]
    manifest: dict[str, Any]  # kind-specific manifest keys (modes, machine_model, baseline, ...)
    rows: int
    data_sha256: str
    validation: dict[str, float | int | str]


@dataclass
class TemplateReport:
    template: str
    machines: int
    machines_read: int
    samples: int  # raw samples InfluxDB aggregated into the rows read
    ticks: int  # rows read (all instances)
    ticks_kept: int  # rows of the fitting part left after exclusions
    stride: int = 1  # each machine read every stride-th window (1: everything)
    fitted: list[Fitted] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # kind -> why not fitted


@dataclass
class SiteFit:
    site: str
    start_ns: int
    split_ns: int
    end_ns: int
    templates: list[TemplateReport]
    seconds: float
    queries: int
    bytes_read: int
    query_s: float  # of ``seconds``, waiting for InfluxDB


def template_machines(plant: PlantConfig) -> dict[str, list[str]]:
    """Machine ids per template, in plant order (as ``plantwire.plant.expand`` names them)."""
    out: dict[str, list[str]] = {}
    for mg in plant.machines:
        names = [mg.name.format(i=k + 1) if mg.count > 1 else mg.name for k in range(mg.count)]
        out.setdefault(mg.template, []).extend(names)
    return out


def _evenly(items: list[str], n: int) -> list[str]:
    if n <= 0 or n >= len(items):
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def _stride(start_ns: int, end_ns: int, machines: int, o: FitOptions) -> int:
    """Read every ``stride``-th window of a machine: the template's ticks read stay near ``o.read_ticks``."""
    ticks = machines * max((end_ns - start_ns) // (o.period_s * NS_PER_S), 1)
    return max(1, -(-int(ticks) // max(o.read_ticks, 1)))


def _windows(start_ns: int, end_ns: int, machines: int, o: FitOptions) -> list[list[tuple[int, int]]]:
    """Per machine, the ``[a, b)`` windows (``o.window_s`` long) it reads.

    With a stride k > 1 machine i reads windows i, i + k, i + 2k, ...: each machine a k-th of the range, the
    template's machines together every window (every hour of every day) when there are k or more of them;
    both the fitting and the held-back part are sampled alike.
    """
    k = _stride(start_ns, end_ns, machines, o)
    step = o.window_s * NS_PER_S
    edges = list(range(start_ns, end_ns, step))
    return [[(a, min(a + step, end_ns)) for c, a in enumerate(edges) if k == 1 or c % k == i % k]
            for i in range(machines)]


def _prefetched(history: History, site: str, names: tuple[str, ...], jobs: list[tuple[str, int, int]],
                o: FitOptions) -> Iterator[tuple[str, MachineRows]]:
    """``history.machine_rows`` of every (machine, start, end) job, in order, ``o.parallel`` in flight.

    Why: a fit waits for InfluxDB's aggregation almost all the time (bench/model_fit.py); a second query
    in flight lets InfluxDB use the second core while this process handles the previous answer. At most
    ``parallel`` answers are held, so memory stays one machine-window per query.
    """
    if o.parallel <= 1:
        for machine, a, b in jobs:
            yield machine, history.machine_rows(site, machine, names, a, b, o.period_s)
        return
    with ThreadPoolExecutor(max_workers=o.parallel, thread_name_prefix="models-fit-read") as ex:
        pending: deque[tuple[str, Future[MachineRows]]] = deque()
        it = iter(jobs)
        for machine, a, b in it:
            pending.append((machine, ex.submit(history.machine_rows, site, machine, names, a, b, o.period_s)))
            if len(pending) >= o.parallel:
                break
        while pending:
            machine, fut = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt[0], ex.submit(history.machine_rows, site, nxt[0], names, nxt[1], nxt[2],
                                                  o.period_s)))
            yield machine, fut.result()


def _thin(x: np.ndarray, n: int) -> np.ndarray:
    if x.shape[0] <= n:
        return x
    return x[np.linspace(0, x.shape[0] - 1, n).round().astype(np.int64)]


def _json_num(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def fit_site(history: History, plant: PlantConfig, start_ns: int, end_ns: int, options: FitOptions | None = None,
             declared: list[Declared] | None = None) -> SiteFit:
    """Fit every template's models from ``[start_ns, end_ns)`` of ``plant.site``'s history."""
    o = options or FitOptions()
    declared = declared or []
    t0 = time.monotonic()
    period_ns = o.period_s * NS_PER_S
    split_ns = start_ns + int((end_ns - start_ns) * (1.0 - o.holdout)) // period_ns * period_ns
    episodes = history.episodes(plant.site, start_ns, end_ns, o.lookback_s)
    reports = []
    for template, machines in template_machines(plant).items():
        if o.templates and template not in o.templates:
            continue
        reports.append(_fit_template(history, plant, template, machines, start_ns, split_ns, end_ns, o, episodes,
                                     declared))
    return SiteFit(plant.site, start_ns, split_ns, end_ns, reports, time.monotonic() - t0,
                   int(getattr(history, "queries", 0)), int(getattr(history, "bytes_read", 0)),
                   float(getattr(history, "query_s", 0.0)))


def _fit_template(history: History, plant: PlantConfig, template: str, machines: list[str], start_ns: int,
                  split_ns: int, end_ns: int, o: FitOptions, episodes: Any, declared: list[Declared]) -> TemplateReport:
    tpl = plant.templates[template]
    expanded = tpl.expanded()
    names = tuple(n for n, _ in expanded)
    kinds = [s.kind for _, s in expanded]
    pca_cols = np.array([j for j, k in enumerate(kinds) if mask_for(k) & EN_MACHINE], dtype=np.int64)
    base_cols = np.array([j for j, k in enumerate(kinds) if k != "state"], dtype=np.int64)
    chosen = _evenly(machines, o.instances)
    validate = set(_evenly(chosen, o.validation_machines))
    per_machine_rows = max(1, o.max_rows // max(len(chosen), 1))
    rep = TemplateReport(template, len(machines), len(chosen), 0, 0, 0)
    pool: list[np.ndarray] = []
    held: list[np.ndarray] = []
    digest = hashlib.sha256()
    d = len(names)
    count = np.zeros(d, dtype=np.int64)
    total = np.zeros(d)
    total_sq = np.zeros(d)
    lo = np.full(d, np.inf)
    hi = np.full(d, -np.inf)
    windows = _windows(start_ns, end_ns, len(chosen), o)
    rep.stride = _stride(start_ns, end_ns, len(chosen), o)
    xs: list[np.ndarray] = []
    current: str | None = None
    held_machines: set[str] = set()

    def done_with_machine() -> None:  # thinned per machine, so every machine weighs alike in the pool
        pool.append(_thin(np.vstack(xs) if xs else np.zeros((0, d)), per_machine_rows))
        xs.clear()

    jobs = [(machine, a, b) for mi, machine in enumerate(chosen) for a, b in windows[mi]]
    for machine, r in _prefetched(history, plant.site, names, jobs, o):
        if machine != current:
            if current is not None:
                done_with_machine()
            current = machine
        rep.samples += r.samples
        rep.ticks += r.ts_ns.shape[0]
        keep = keep_rows(r.ts_ns, o.period_s, machine, episodes, declared, o.pad_s)
        train = keep & (r.ts_ns < split_ns) & np.any(np.isfinite(r.values), axis=1)
        x = r.values[train]
        rep.ticks_kept += x.shape[0]
        digest.update(np.ascontiguousarray(x).tobytes())
        fin = np.isfinite(x)
        count += fin.sum(axis=0)
        xz = np.where(fin, x, 0.0)
        total += xz.sum(axis=0)
        total_sq += (xz * xz).sum(axis=0)
        if x.shape[0]:
            lo = np.fmin(lo, np.nanmin(np.where(fin, x, np.inf), axis=0))
            hi = np.fmax(hi, np.nanmax(np.where(fin, x, -np.inf), axis=0))
        xs.append(x)
        if machine in validate and np.any(r.ts_ns >= split_ns):
            h = r.values[r.ts_ns >= split_ns].copy()
            h[~keep[r.ts_ns >= split_ns]] = np.nan  # excluded ticks: all missing, the kernel scores them 0
            held.append(h)
            held_machines.add(machine)
    if current is not None:
        done_with_machine()
    x_pool = np.vstack(pool) if pool else np.zeros((0, d))
    data_sha = digest.hexdigest()
    if pca_cols.size >= 2:
        _fit_pca(rep, template, [names[j] for j in pca_cols], x_pool[:, pca_cols], [h[:, pca_cols] for h in held],
                 o, data_sha, len(held_machines))
    else:
        rep.skipped["machine_pca"] = f"{pca_cols.size} member signal(s): a multivariate model needs two or more"
    if base_cols.size:
        _fit_baseline(rep, template, [names[j] for j in base_cols], x_pool[:, base_cols],
                      [h[:, base_cols] for h in held], count[base_cols], total[base_cols], total_sq[base_cols],
                      lo[base_cols], hi[base_cols], o, data_sha)
    rep.skipped["rul"] = ("no run-to-failure labels in the history (InfluxDB holds no failure or maintenance "
                          "records); fit offline with tools/fit_rul.py and ship with `plantwire models bundle-rul`")
    return rep


def _fit_pca(rep: TemplateReport, template: str, signals: list[str], x: np.ndarray, held: list[np.ndarray],
             o: FitOptions, data_sha: str, held_machines: int) -> None:
    ms = o.machine
    settings = mm.FitSettings(lags=ms.lags, variance=ms.variance, ewma=ms.ewma, quantile=ms.quantile,
                              margin=ms.margin, modes=ms.modes)
    try:
        model = mm.fit(x, signals, settings, name=template)
    except ValueError as exc:
        rep.skipped["machine_pca"] = f"not fitted: {exc}"
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.npz"
        man = mm.save(model, path)
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        doc = json.loads(man.read_text())
    over = 0
    ticks = 0
    openings = 0
    machine_days = 0.0
    for h in held:  # one contiguous block (a read window) of one machine each: the EWMA starts afresh per block
        if h.shape[0] == 0:
            continue
        score, _, _ = mm.score_table(model, h)
        scored = np.any(np.isfinite(h), axis=1)
        alarm = (score >= 0.5) & scored
        over += int(alarm.sum())
        ticks += int(scored.sum())
        openings += int(np.sum(alarm[1:] & ~alarm[:-1]) + (1 if alarm.size and alarm[0] else 0))
        machine_days += scored.sum() * o.period_s / 86_400.0
    validation: dict[str, float | int | str] = {
        "holdout_ticks": ticks,
        "holdout_over_limit_fraction": round(over / ticks, 6) if ticks else -1.0,
        "holdout_alarm_openings_per_machine_day": round(float(openings / machine_days), 4) if machine_days else -1.0,
        "holdout_machines": held_machines,
        "holdout_blocks": len(held),
        "note": "held-back later part of the range, excluded ticks not scored; edge scoring kernel",
    }
    rep.fitted.append(Fitted(
        "machine_pca", template, list(signals), arrays,
        {"modes": doc["modes"], "machine_model": doc, "period_s": o.period_s},
        int(x.shape[0]), data_sha, validation))


def _fit_baseline(rep: TemplateReport, template: str, signals: list[str], x: np.ndarray, held: list[np.ndarray],
                  count: np.ndarray, total: np.ndarray, total_sq: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                  o: FitOptions, data_sha: str) -> None:
    n = np.maximum(count, 1)
    mean = np.where(count > 0, total / n, np.nan)
    var = np.where(count > 1, (total_sq - n * mean * mean) / np.maximum(n - 1, 1), np.nan)
    std = np.sqrt(np.maximum(var, 0.0))
    if x.shape[0]:
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: a signal never seen
                q = np.nanquantile(x, [o.q_low, 0.5, o.q_high], axis=0)
                mad = np.nanmedian(np.abs(x - q[1]), axis=0)
    else:
        q = np.full((3, len(signals)), np.nan)
        mad = np.full(len(signals), np.nan)
    span = q[2] - q[0]
    low = q[0] - o.margin * span
    high = q[2] + o.margin * span
    outside = 0
    ticks = 0
    for h in held:
        fin = np.isfinite(h)
        ticks += int(fin.sum())
        with np.errstate(invalid="ignore"):
            outside += int((fin & ((h < low) | (h > high))).sum())
    arrays = {"count": count.astype(np.int64), "mean": mean, "std": std, "min": np.where(count > 0, lo, np.nan),
              "max": np.where(count > 0, hi, np.nan), "q_low": q[0], "median": q[1], "q_high": q[2], "mad": mad,
              "low": low, "high": high}
    validation: dict[str, float | int | str] = {
        "holdout_values": ticks,
        "holdout_outside_fraction": round(outside / ticks, 6) if ticks else -1.0,
        "signals_without_data": int((count == 0).sum()),
    }
    rep.fitted.append(Fitted(
        "signal_baseline", template, list(signals), arrays,
        {"baseline": {"period_s": o.period_s, "statistic": "last value per tick", "q_low": o.q_low,
                      "q_high": o.q_high, "margin": o.margin}},
        int(x.shape[0]), data_sha, validation))
