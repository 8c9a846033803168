"""Ahead-of-time kernels: the edge's analytics run from the pycc build without numba, bit for bit like JIT.

The build is real (numba.pycc + the C compiler): the one ``make test`` has just made in edge/_aot (what the
daemon loads) when it is current, else the test's own into a temporary directory; each mode runs in its own
process, since the mode is fixed when the first kernel module is imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT / "configs" / "dev" / "edge.yaml"

# Runs the dev plant's analytics (detector stack, alarms, health/RUL) over frames with NaN, inf, bad
# quality, a constant run and a gap, saves every output, and reports the kernel mode and imports.
WORKLOAD = r"""
import json, sys, time
import numpy as np
from pathlib import Path
from edge.config import load_edge
from edge.detectors.analytics import EdgeAnalytics
from edge.detectors.settings import HealthSettings
from edge.jit import STATS
from plantwire.plant import expand

path = Path(sys.argv[1])
cfg, plant = load_edge(path)
table = expand(plant)
extra = json.loads(sys.argv[3])  # every optional stage on: likelihood, health/RUL
settings = cfg.analytics.model_copy(update={
    "likelihood": cfg.analytics.likelihood.model_copy(update={"mode": extra["likelihood"]}), "settle_s": 0.0,
    "health": HealthSettings.model_validate(extra["health"])})
an = EdgeAnalytics.from_table(table, settings, state_dir=None, base_dir=path.parent)
n = len(table)
rng = np.random.default_rng(7)
sig = np.arange(n, dtype=np.uint32)  # edge.frames' dtype
out = {}
t0 = 1_790_000_000_000_000_000
for i in range(400):  # past warm-up and alarm_settle, so alarms open
    ts = np.full(n, t0 + i * 1_000_000_000 + (30_000_000_000 if i >= 380 else 0), dtype=np.int64)  # gap at 380
    value = rng.normal(size=n) + (8.0 if 340 <= i < 350 else 0.0) * (sig % 5 == 0)  # a step on every 5th signal
    value[::97] = np.nan
    value[5::211] = np.inf
    value[:50] = 1.0  # constant run
    q = np.zeros(n, dtype=np.uint8)
    q[::89] = 2
    r = an.process(ts, sig, value, q)
    out[f"score{i}"] = r.score.copy()
    out[f"kind{i}"] = r.kind.copy()
    out[f"mscore{i}"] = r.machine_score.copy()
    out[f"events{i}"] = r.events.copy()
    h = an.tick(1_790_000_000.0 + 3600.0 * (i + 1), int(ts[0]))
    if h is not None:
        out[f"health{i}"] = np.stack([h.health, h.rul, h.rul_low, h.rul_high])
np.savez(sys.argv[2], **out)
print(json.dumps({"mode": STATS.mode, "reason": STATS.reason, "fallbacks": STATS.jit_fallbacks,
                  "numba": "numba" in sys.modules, "llvmlite": "llvmlite" in sys.modules}))
"""


def _env(mode: str, aot_dir: Path) -> dict[str, str]:
    return {**os.environ, "PLANTWIRE_KERNELS": mode, "PLANTWIRE_AOT_DIR": str(aot_dir), "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def stages(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The workload's optional stages: the likelihood stage and a small health/RUL model on one machine."""
    from edge.config import load_edge
    from edge.kernelbuild import health_model_settings
    from plantwire.plant import expand

    _, plant = load_edge(DEV)
    health = health_model_settings(expand(plant), tmp_path_factory.mktemp("model"))
    assert health is not None
    return json.dumps({"likelihood": "max", "health": {**health, "model": str(health["model"])}})


def _current_build() -> Path | None:
    """``make test``'s own build in edge/_aot (``make kernels``), if it is for these sources and newer than
    every file that shapes it (the edge's and plantwire's code, the dev and demo configs), else None."""
    from edge.jit import ARG_SPECS_SUFFIX, DEFAULT_AOT_DIR, aot_module_name

    built = sorted(p for p in DEFAULT_AOT_DIR.glob(f"{aot_module_name()}.*") if not p.name.endswith(ARG_SPECS_SUFFIX))
    if not built or not (DEFAULT_AOT_DIR / f"{aot_module_name()}{ARG_SPECS_SUFFIX}").exists():
        return None
    inputs = [*(ROOT / "edge").rglob("*.py"), *(ROOT / "plantwire").rglob("*.py"),
              *(ROOT / "configs" / "dev").rglob("*"), *(ROOT / "configs" / "demo").rglob("*")]
    newest_input = max(p.stat().st_mtime for p in inputs if p.is_file())
    return built[0] if built[0].stat().st_mtime > newest_input else None


@pytest.fixture(scope="module")
def aot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The AOT build under test: ``make test`` has just built it (the kernels target, a ~1-2 min pycc build)
    and the daemon loads exactly that file, so a current one is tested as is (copied); otherwise (a tree edited
    since, or no build) the test builds its own, as the daemon's build would run."""
    out = tmp_path_factory.mktemp("aot")
    current = _current_build()
    if current is not None:
        from edge.jit import aot_module_name

        for f in current.parent.glob(f"{aot_module_name()}*"):  # its other parts and the exports' argument table
            shutil.copy2(f, out / f.name)
        return out
    proc = subprocess.run([sys.executable, "-m", "edge.kernelbuild", "--out", str(out), "--config", str(DEV)],
                          cwd=ROOT, env=_env("jit", out), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(out.glob("_plantwire_kernels_*")), proc.stdout
    return out


def _run(mode: str, aot_dir: Path, tmp_path: Path, stages: str) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    npz = tmp_path / f"{mode}.npz"
    proc = subprocess.run([sys.executable, "-c", WORKLOAD, str(DEV), str(npz), stages], cwd=ROOT,
                          env=_env(mode, aot_dir), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    with np.load(npz) as z:
        return info, {k: z[k] for k in z.files}


def test_aot_analytics_run_without_numba_and_match_jit(aot_dir: Path, tmp_path: Path, stages: str) -> None:
    aot_info, aot = _run("aot", aot_dir, tmp_path, stages)
    jit_info, jit = _run("jit", aot_dir, tmp_path, stages)
    assert aot_info == {"mode": "aot", "reason": "", "fallbacks": 0, "numba": False, "llvmlite": False}
    assert jit_info["mode"] == "jit" and jit_info["numba"] is True
    assert aot.keys() == jit.keys()
    assert any(k.startswith("health") for k in aot)  # the health/RUL kernel ran too
    assert sum(len(v) for k, v in aot.items() if k.startswith("events")) > 0  # and alarms opened
    for key in jit:
        np.testing.assert_array_equal(aot[key], jit[key], err_msg=key)  # same code, same bits


def test_uncovered_call_switches_to_jit_once_and_answers_right(aot_dir: Path) -> None:
    """A kernel with no export (or a call with other types) is not an error: JIT takes over, counted."""
    script = r"""
import json, sys
import numpy as np
from edge.kernels import limits
from edge import jit as _jit
x = np.array([0.5, 2.5, np.nan, -1.0])
sig = np.arange(4, dtype=np.int64)
before = _jit.STATS.mode
low = np.zeros(4); high = np.ones(4); out = np.zeros(4, dtype=np.float32)  # float32 out: no export takes it
try:
    limits.limits_chunk(sig, x, low, high, 0.1, out)
    err = ""
except Exception as exc:  # the JIT's own answer to these types, whatever it is
    err = type(exc).__name__
print(json.dumps({"before": before, "after": _jit.STATS.mode, "fallbacks": _jit.STATS.jit_fallbacks,
                  "reason": _jit.STATS.reason, "out": [float(v) for v in out], "err": err}))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=_env("aot", aot_dir), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["before"] == "aot" and info["after"] == "jit" and info["fallbacks"] == 1
    assert "limits.limits_chunk" in info["reason"]
    assert info["err"] == "" and info["out"][0] == 0.0 and info["out"][1] > 0.0 and info["out"][2] == 0.0
    assert "switched to JIT" in proc.stderr  # logged with the kernel's name


def test_an_array_of_another_dtype_is_never_given_to_an_export(aot_dir: Path) -> None:
    """pycc's exports read any array's buffer as their own dtype (a uint32 index column given to an int64 export
    read past its end and crashed the process; the other way round it writes the wrong signals): the dispatcher
    checks dtypes against the build's table, so the call goes to JIT and answers right."""
    assert list(aot_dir.glob("_plantwire_kernels_*.args.json"))
    script = r"""
import json
import numpy as np
from edge.kernels import pca
from edge import jit as _jit
n = 4000
sig = np.arange(n, dtype=np.int64)  # the export takes the frame's uint32 index column
value = np.arange(n, dtype=np.float64) + 0.5
x_last = np.zeros(n); seen = np.zeros(1, dtype=np.uint8)
before = _jit.STATS.mode
pca.update_last(sig, value, np.zeros(n, dtype=np.uint8), x_last, np.full(n, -1, dtype=np.int64), seen)
print(json.dumps({"before": before, "after": _jit.STATS.mode, "reason": _jit.STATS.reason,
                  "right": bool(np.array_equal(x_last, value))}))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=_env("aot", aot_dir), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["before"] == "aot" and info["after"] == "jit" and "int64" in info["reason"], info
    assert info["right"]  # read as uint32, the int64 indices would have written the wrong signals


def test_build_for_other_sources_is_not_used(tmp_path: Path) -> None:
    """An AOT file from other kernel sources never loads: auto falls back to JIT and says why."""
    (tmp_path / "_plantwire_kernels_0000000000000000.so").write_bytes(b"not this build")
    script = "import json; from edge import jit as _jit; print(json.dumps([_jit.STATS.mode, _jit.STATS.reason]))"
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=_env("auto", tmp_path), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    mode, reason = json.loads(proc.stdout)
    assert mode == "jit" and "no AOT kernels for these sources" in reason


def test_a_build_with_a_part_missing_is_not_used(aot_dir: Path, tmp_path: Path) -> None:
    """The build compiles in parallel into several extensions listed in its table: one missing means JIT, said why."""
    from edge.jit import ARG_SPECS_SUFFIX, PARTS_KEY, aot_module_name

    specs = json.loads((aot_dir / f"{aot_module_name()}{ARG_SPECS_SUFFIX}").read_text())
    assert specs[PARTS_KEY], "the build made one extension only: nothing to test"
    for f in aot_dir.iterdir():
        if not f.name.startswith(specs[PARTS_KEY][-1]):
            shutil.copy2(f, tmp_path / f.name)
    script = "import json; from edge import jit as _jit; print(json.dumps([_jit.STATS.mode, _jit.STATS.reason]))"
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=_env("auto", tmp_path), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    mode, reason = json.loads(proc.stdout)
    assert mode == "jit" and f"its part {specs[PARTS_KEY][-1]} is missing" in reason, reason
