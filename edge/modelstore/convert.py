"""Bundle arrays -> the model objects the edge's kernels run (no fitting code, numpy only).

``machine_pca``: the arrays are those of ``edge.models.machine.save`` (``m{j}_{mean,scale,centroid,
mode_scale,loadings,eigenvalues}`` per mode j); the per-mode scalars (``t2_ref, spe_ref, limit, ewma,
init, rows``) are the ``modes`` list of the manifest, as in the model's own ``.json``. ``lags`` is taken
from the manifest when present and must agree with the arrays' shapes (features = signals x (lags + 1)).
``rul``: the arrays are those of ``edge.pdm.rul.RulModel.save``. ``signal_baseline``: the per-signal
``low``/``high`` suggested limits (docs/models.md), one entry per manifest signal.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.models import machine as mm
from edge.modelstore.reader import Bundle
from edge.modelstore.reasons import BundleRefused, Refusal
from edge.pdm.rul import RulModel, RulModelError

_MODE_ARRAYS = ("mean", "scale", "centroid", "mode_scale", "loadings", "eigenvalues")
_MODE_SCALARS = ("t2_ref", "spe_ref", "limit", "ewma", "init", "rows")


def _mode_docs(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    modes = manifest.get("modes")
    if not isinstance(modes, list) or not modes:
        model = manifest.get("model")
        modes = model.get("modes") if isinstance(model, dict) else None
    if not isinstance(modes, list) or not modes or not all(isinstance(m, dict) for m in modes):
        raise BundleRefused(Refusal.BAD_MANIFEST, "manifest.modes: a list of per-mode objects expected")
    return modes


def machine_model(bundle: Bundle) -> mm.MachineModel:
    """The machine model a ``machine_pca`` bundle holds; raises ``BundleRefused`` if the arrays do not fit."""
    docs = _mode_docs(bundle.manifest)
    d = len(bundle.signals)
    a = bundle.arrays
    if "m0_mean" not in a or d == 0:
        raise BundleRefused(Refusal.BAD_ARRAYS, "arrays.npz: no m0_mean (not a machine model's arrays)")
    p = int(a["m0_mean"].shape[0]) if a["m0_mean"].ndim == 1 else -1
    if p <= 0 or p % d:
        raise BundleRefused(Refusal.BAD_ARRAYS, f"m0_mean has {p} features, not a multiple of {d} signals")
    lags = p // d - 1
    declared = bundle.manifest.get("lags")
    if declared is not None and declared != lags:
        raise BundleRefused(Refusal.BAD_ARRAYS, f"manifest.lags {declared} but the arrays have {lags}")
    modes = []
    for j, sc in enumerate(docs):
        try:
            arr = {k: np.asarray(a[f"m{j}_{k}"], dtype=np.float64) for k in _MODE_ARRAYS}
            scal = {k: (int(sc[k]) if k == "rows" else float(sc[k])) for k in _MODE_SCALARS}
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleRefused(Refusal.BAD_ARRAYS, f"mode {j}: {exc!r} missing or not a number") from None
        k = arr["eigenvalues"].shape[0] if arr["eigenvalues"].ndim == 1 else -1
        if (k <= 0 or arr["mean"].shape != (p,) or arr["scale"].shape != (p,) or arr["loadings"].shape != (p, k)
                or arr["centroid"].shape != (d,) or arr["mode_scale"].shape != (d,)):
            raise BundleRefused(Refusal.BAD_ARRAYS, f"mode {j}: arrays do not fit {d} signals with {lags} lags")
        if not (all(np.isfinite(arr[x]).all() for x in ("mean", "centroid", "mode_scale", "loadings", "eigenvalues"))
                and np.all(arr["scale"] > 0) and np.all(arr["eigenvalues"] > 0)
                and all(np.isfinite(v) for v in scal.values()) and scal["limit"] > 0):
            raise BundleRefused(Refusal.BAD_ARRAYS, f"mode {j}: non-finite values or non-positive scales/limit")
        modes.append(mm.ModeModel(**arr, **scal))
    return mm.MachineModel(tuple(bundle.signals), lags, tuple(modes), {}, f"{bundle.template}@{bundle.version}",
                           str(bundle.manifest.get("data_sha256", "")))


def rul_model(bundle: Bundle) -> RulModel:
    """The RUL model a ``rul`` bundle holds; raises ``BundleRefused`` if its arrays are inconsistent."""
    try:
        return RulModel.from_arrays(bundle.arrays, f"bundle {bundle.version}")
    except RulModelError as exc:
        raise BundleRefused(Refusal.BAD_ARRAYS, str(exc)) from None


def baseline_limits(bundle: Bundle) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) per manifest signal of a ``signal_baseline`` bundle (NaN: no limit for that signal)."""
    n = len(bundle.signals)
    try:
        low = np.asarray(bundle.arrays["low"], dtype=np.float64)
        high = np.asarray(bundle.arrays["high"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleRefused(Refusal.BAD_ARRAYS, f"signal_baseline: arrays low/high unusable ({exc!r})") from None
    if low.shape != (n,) or high.shape != (n,):
        raise BundleRefused(Refusal.BAD_ARRAYS, f"signal_baseline: low/high must have {n} entries, one per signal")
    if np.any(np.isfinite(low) & np.isfinite(high) & (low > high)):
        raise BundleRefused(Refusal.BAD_ARRAYS, "signal_baseline: a low limit above its high limit")
    return low, high
