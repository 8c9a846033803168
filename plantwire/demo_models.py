"""The demo's shipped models: one ``machine_pca`` bundle per template, fitted on simulated history, cached.

Why: without a model the machine stage scores nothing until an engineer fits one (``machine.self_fit`` is
off by default: a first-day self-fit raised too many false alarms, bench/RESULTS.md), so a demo would show
multivariate detection only after hours. Here the demo starts as a gateway does after the model loop has run
once: a bundle per template sits in the edge's model store as the active version, and the edge loads it
(re-verifying the signature) before the first frame.

How the bundles are made, with the project's own functions: the simulator's generator
(``SignalModel.step``, stateless in the tick, as ``simulators/influx_history.py`` uses it) produces the
24 hours before now (every shift and duty cycle), fault-free and without wear, for up to
``MACHINES_PER_TEMPLATE`` evenly spread machines of each template, one row per ``PERIOD_S`` -- the rows
``plantwire models fit`` reads from InfluxDB -- pooled machine by machine (as the cloud's fit pools a
template), then ``edge.models.machine.fit`` with the edge's ``MachineSettings`` (as ``cloud/models/fit.py``),
signed with a demo key (``cloud.models.keys``) into a bundle (``cloud.models.store.make``). Everything is
cached under ``STATE_DIR/demo-models`` after the first run (key, bundles, list).

Why 16 machines and 60 s rows (chosen on simulated data, not on a demo run): pooled from 4 machines, the
leak-test and energy-meter models judged other instances of their template abnormal for 14-33 % of the
ticks of the next hour (instances differ in their operating points; 76 false machine alarms in the first
4 minutes of a demo); pooled from 16, 0 % on six machines left out of the fit, with 60 s or 10 s rows
alike (lags 0: no lag structure depends on the row period), and 60 s rows over a day cost a sixth.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from cloud.models import keys, store
from edge.detectors.settings import MachineSettings
from edge.detectors.stack import DetectorStack
from edge.models import machine as mm
from edge.modelstore.compat import PlantView
from edge.modelstore.store import BundleStore
from plantwire import bundle
from plantwire.configfile import load_plant
from simulators.runtime import SimOptions, build_world

log = logging.getLogger(__name__)

HISTORY_S = 86_400
PERIOD_S = 60.0
MACHINES_PER_TEMPLATE = 16
CACHE = "demo-models"


def _fit_bundles(plant_path: Path, seed: int, cache: Path) -> list[dict[str, str]]:
    plant = load_plant(plant_path)
    world = build_world(SimOptions(plant=plant_path, seed=seed, anomaly_rate_per_h=0.0, wear_fraction=0.0), plant)
    table = world.table
    stack = DetectorStack.from_table(table)
    view = PlantView.build(plant, table, stack.m_ptr, stack.m_sig)
    priv, _, _ = keys.generate(cache / "signing.key", cache / "signing.pub")
    key = bundle.load_private_key(priv)
    ms = MachineSettings()
    settings = mm.FitSettings(lags=ms.lags, variance=ms.variance, ewma=ms.ewma, quantile=ms.quantile,
                              margin=ms.margin, modes=ms.modes)
    end_s = int(time.time()) // int(PERIOD_S) * int(PERIOD_S)
    ticks = np.arange(end_s - HISTORY_S, end_s, PERIOD_S)
    out = []
    for template, machines in view.machines.items():
        members = view.members[template]
        if machines.size == 0 or len(members) < 2:
            continue
        chosen = machines[np.linspace(0, machines.size - 1, min(MACHINES_PER_TEMPLATE, machines.size)).astype(int)]
        rows = np.concatenate([stack.m_sig[stack.m_ptr[m]:stack.m_ptr[m + 1]] for m in chosen.tolist()])
        model = world.model(rows, seed)
        x = np.empty((ticks.shape[0], rows.shape[0]))
        for i, t in enumerate(ticks.tolist()):
            x[i] = model.step(int(t), float(t))
        d = len(members)
        pooled = np.vstack([x[:, j * d:(j + 1) * d] for j in range(chosen.size)])  # machine by machine
        fitted = mm.fit(pooled, members, settings, name=template)
        arrays = {f"m{j}_{a}": getattr(mo, a) for j, mo in enumerate(fitted.modes)
                  for a in ("mean", "scale", "centroid", "mode_scale", "loadings", "eigenvalues")}
        modes = [{"t2_ref": mo.t2_ref, "spe_ref": mo.spe_ref, "limit": mo.limit, "ewma": mo.ewma, "init": mo.init,
                  "rows": int(mo.rows), "components": int(mo.eigenvalues.shape[0])} for mo in fitted.modes]
        data, manifest = store.make(
            "machine_pca", template, members, arrays, {"modes": modes, "lags": fitted.lags, "period_s": PERIOD_S},
            fitted_from_ns=int(ticks[0] * 1e9), fitted_to_ns=int(end_s * 1e9), rows=int(pooled.shape[0]),
            data_sha256=fitted.data_hash, validation={"note": "simulated fault-free history, no hold-out"}, key=key)
        path = store.write(cache / "bundles", data, manifest)
        out.append({"template": template, "version": manifest["version"], "file": str(path)})
    (cache / "bundles.json").write_text(json.dumps({"params": _params(seed), "bundles": out}, indent=1))
    return out


def _params(seed: int) -> dict[str, float | int]:
    """What the cached bundles were made with: a change (or another seed) fits again."""
    return {"seed": seed, "history_s": HISTORY_S, "period_s": PERIOD_S, "machines": MACHINES_PER_TEMPLATE}


def install(plant_path: Path, state_dir: Path, edge_state_dir: Path, seed: int = 0) -> tuple[Path, list[str]]:
    """Fit (first run, or other parameters) or reuse the cached bundles, and make each the active version of its
    slot in the edge's model store. Returns the public key and ``template@version`` per bundle."""
    cache = state_dir / CACHE
    listing = cache / "bundles.json"
    cached = json.loads(listing.read_text()) if listing.exists() and (cache / "signing.pub").exists() else None
    if isinstance(cached, dict) and cached.get("params") == _params(seed):
        made = cached["bundles"]
    else:
        cache.mkdir(parents=True, exist_ok=True)
        for stale in ("signing.key", "signing.pub"):
            (cache / stale).unlink(missing_ok=True)
        t0 = time.monotonic()
        made = _fit_bundles(plant_path, seed, cache)
        log.info("demo: %d machine models fitted on a simulated day in %.1f s", len(made), time.monotonic() - t0)
    bs = BundleStore(edge_state_dir)
    bs.load_slots()
    for b in made:
        st = bs.slot(f"machine_pca/{b['template']}")
        if st.active != b["version"]:  # a first run, or a refit: the demo's bundle is the active one
            bs.save_bundle("machine_pca", b["template"], b["version"], Path(b["file"]).read_bytes())
            st.previous, st.active = st.active, b["version"]
    bs.save_slots()
    return cache / "signing.pub", [f"{b['template']}@{b['version']}" for b in made]
