"""Compile the edge's kernels ahead of time into one C extension, so the edge daemon never loads numba.

    plantwire kernels [--out DIR] [--config EDGE.yaml ...]     (= python -m edge.kernelbuild)

Why and how it is used: see ``edge/jit.py``. The build runs the edge's own analytics
(``EdgeAnalytics``: detector stack, alarms, health/RUL) in JIT mode over a few synthetic frames of
each given edge config's plant, so numba compiles every kernel with exactly the argument types the
daemon passes; then every compiled signature of every kernel is exported by ``numba.pycc`` into
``_plantwire_kernels_<source hash>``, compiled for this machine's CPU. The hash covers the kernel
sources, numba's and Python's versions and the CPU's model and flags: edit a kernel (or move the
build to another CPU) and the daemon uses JIT, and says so, until the next build.

The compile runs in ``--jobs`` processes (default: two, or one on a one-CPU machine): after the workload,
the exports are split into parts of about equal cost and each part is compiled, in a process forked
from the workload's (so the callees numba compiled there are reused, not compiled again), into an
extension of its own: ``_plantwire_kernels_<hash>`` and ``..._<hash>_part1`` ...; ``edge/jit.py``
loads them together. A signature that differs from another only by literal argument types (numba
compiles a helper once per constant a caller passes) is exported once: the exports take the plain
types, so the copies were the same code (8 of 48 signatures).

Needs a C compiler and Python's headers (Debian: gcc, python3-dev); ~1 minute on a quiet two-core box.
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = (ROOT / "configs" / "demo" / "edge.yaml", ROOT / "configs" / "dev" / "edge.yaml")


def _kernel_modules() -> list[Any]:
    from edge import jit as _jit

    names = sorted(p.stem for p in _jit.KERNEL_DIR.glob("*.py") if not p.stem.startswith("_"))
    return [importlib.import_module(f"edge.kernels.{n}") for n in names]


def health_model_settings(table: Any, folder: Path) -> dict[str, Any] | None:
    """A tiny RUL model fitted on synthetic runs, for the first machine with three signals (or None)."""
    import numpy as np

    sys.path.insert(0, str(ROOT))
    try:
        from tools.fit_rul import FitSettings, fit
    except ImportError:  # an installed package without tools/: the health kernel stays JIT-only
        return None
    for m, machine in enumerate(table.machine_ids):
        names = [sid[len(machine) + 1:] for sid, mm in zip(table.ids, table.machine.tolist(), strict=True) if mm == m]
        if len(names) >= 3:
            break
    else:
        return None
    rng = np.random.default_rng(0)
    runs = []
    for n in (60, 80, 100, 120):
        life = np.linspace(0.0, 1.0, n)
        load = rng.choice([0.0, 1.0], size=n)
        runs.append(np.column_stack([load, 50 + 10 * load + 8 * life**2, 1 + 2 * life**3]))
    model = fit(runs, ["load"], ["temp", "vib"], FitSettings(conditions=1, epochs=3, hidden=8))
    path = folder / "rul.npz"
    model.save(path)
    return {"model": path, "machines": [machine], "inputs": dict(zip(model.input_names(), names[:3], strict=True)),
            "period_s": 1.0}


def run_workload(configs: list[Path], frames: int = 6) -> None:
    """Drive the edge's analytics over each config's plant so numba compiles what the daemon calls.

    Each plant runs with its config's settings, then with every optional stage on (the likelihood
    stage, a health/RUL model on one machine), so a daemon that enables them stays AOT too.
    """
    import numpy as np

    from edge.config import load_edge
    from edge.detectors.analytics import EdgeAnalytics
    from edge.detectors.settings import HealthSettings, LikelihoodMode
    from edge.frames import FrameBuffer
    from plantwire.plant import Quality, expand

    for path in configs:
        cfg, plant = load_edge(path)
        table = expand(plant)
        with tempfile.TemporaryDirectory(prefix="plantwire-aot-model-") as tmp:
            variants = [cfg.analytics]
            health = health_model_settings(table, Path(tmp))
            likelihood = cfg.analytics.likelihood.model_copy(update={"mode": LikelihoodMode.MAX})
            # The optional stages a site may switch on (the likelihood stage, a health model, the at-rest
            # judgement, the slow trend): exported too, so switching one on keeps the daemon on AOT kernels.
            op = cfg.analytics.operating_state
            at_rest = op.model_copy(update={"at_rest": op.at_rest.model_copy(update={"enabled": True})})
            variants.append(cfg.analytics.model_copy(update={
                "likelihood": likelihood, "health": HealthSettings.model_validate(health) if health else None,
                "operating_state": at_rest, "trend": cfg.analytics.trend.model_copy(update={"enabled": True})}))
            for settings in variants:
                analytics = EdgeAnalytics.from_table(table, settings, state_dir=None, base_dir=path.parent)
                n = len(table)
                buffer = FrameBuffer(n)  # the daemon's own frames: same dtypes and layouts as in production
                rng = np.random.default_rng(0)
                t0 = time.time_ns()
                for i in range(frames):
                    value = rng.normal(size=n)
                    value[::97] = np.nan  # bad samples take their own paths through the kernels
                    quality = np.zeros(n, dtype=np.uint8)
                    quality[::89] = int(Quality.BAD)
                    buffer.append(t0 + i * 100_000_000, np.arange(n, dtype=np.uint32), value, quality)
                    frame = buffer.drain()
                    analytics.process(frame.ts_ns, frame.signal, frame.value, frame.quality)
                    analytics.tick(time.time() + 3600.0 * (i + 1), t0 + i * 100_000_000)
                # Then a frame after a silence without half the signals: the SILENT judgement's own alarm call runs.
                late = t0 + int((settings.quality.silent_s + 10.0) * 1e9)
                half = np.arange(0, n, 2, dtype=np.uint32)
                buffer.append(late, half, rng.normal(size=half.size), np.zeros(half.size, dtype=np.uint8))
                frame = buffer.drain()
                analytics.process(frame.ts_ns, frame.signal, frame.value, frame.quality)
                # And a machine stage on its own, as a shadow model's runs (edge.modelstore.shadow): the stack
                # gathers its latest values in its own pass, a stage alone calls pca.update_last.
                analytics.stack.machine_stage.process(frame.signal, frame.value, frame.quality, late)
                analytics.close()
            _run_agents(table, plant, frames)


def _all_agents_settings() -> Any:
    """The ``agents:`` section with every registered agent on, at its default settings."""
    import typing

    from edge.agents.registry import agent_classes
    from edge.agents.settings import AgentsSettings

    on: dict[str, Any] = {}
    for key in agent_classes():
        hint = AgentsSettings.model_fields[key].annotation
        klass = next(a for a in typing.get_args(hint) if a is not type(None))
        on[key] = klass()
    return AgentsSettings(**on)


def _run_agents(table: Any, plant: Any, frames: int) -> None:
    """Every agent over the plant's frames (a minute apart, so intervals close): their kernels compile too."""
    import numpy as np

    from edge.agents.runner import AgentRunner
    from edge.frames import FrameBuffer
    from plantwire.plant import Quality

    runner = AgentRunner.build(table, plant, _all_agents_settings(), None)
    n = len(table)
    buffer = FrameBuffer(n)
    rng = np.random.default_rng(1)
    t0 = time.time_ns()
    for i in range(frames):
        value = np.abs(rng.normal(size=n)) + i
        value[::97] = np.nan
        quality = np.zeros(n, dtype=np.uint8)
        quality[::89] = int(Quality.BAD)
        buffer.append(t0 + i * 60_000_000_000, np.arange(n, dtype=np.uint32), value, quality)
        runner.run(buffer.drain())
        runner.take()


def exports() -> list[tuple[str, Any, Any]]:
    """(export name, signature, dispatcher) for every compiled signature of every kernel in edge/kernels.

    Signatures equal once literal types are made plain are exported once (the plain types are what an
    export takes, so the copies would be the same code under other names)."""
    from numba import types
    from numba.core.dispatcher import Dispatcher

    from edge.jit import export_name

    out: list[tuple[str, Any, Any]] = []
    for module in _kernel_modules():
        for attr, obj in sorted(vars(module).items()):
            if not isinstance(obj, Dispatcher) or obj.py_func.__module__ != module.__name__:
                continue
            variant = 0
            seen: set[tuple[Any, ...]] = set()
            for sig in obj.nopython_signatures:
                if any(isinstance(a, types.Omitted) for a in sig.args):
                    continue  # a defaulted argument left out: pycc exports positional signatures only
                args = tuple(types.unliteral(a) for a in sig.args)
                if args in seen:
                    continue
                seen.add(args)
                out.append((export_name(module.__name__, attr, variant), sig.return_type(*args), obj))
                variant += 1
    return out


def _cost(dispatcher: Any) -> int:
    """A rough compile cost of one export: its own bytecode size plus a fixed share (measured: ~0.2 s for the
    smallest, ~4 s for the largest). Callees do not count: they are linked from the workload's compile."""
    return len(dispatcher.py_func.__code__.co_code) + 300


def split(table: list[tuple[str, Any, Any]], jobs: int) -> list[list[tuple[str, Any, Any]]]:
    """The exports in ``jobs`` parts of about equal cost (largest first, each to the lightest part)."""
    parts: list[list[tuple[str, Any, Any]]] = [[] for _ in range(max(1, min(jobs, len(table))))]
    load = [0] * len(parts)
    for entry in sorted(table, key=lambda e: (-_cost(e[2]), e[0])):
        i = load.index(min(load))
        parts[i].append(entry)
        load[i] += _cost(entry[2])
    return [p for p in parts if p]


def _arg_specs(sig: Any) -> list[list[Any] | None]:
    """Per argument: [dtype descr, ndim, C-contiguous required] for an array, None for anything else."""
    from numba import types
    from numba.np.numpy_support import as_dtype

    out: list[list[Any] | None] = []
    for a in sig.args:
        if isinstance(a, types.Array):
            out.append([np.lib.format.dtype_to_descr(as_dtype(a.dtype)), a.ndim, a.layout == "C"])
        else:
            out.append(None)
    return out


def _compile_part(name: str, entries: list[tuple[str, Any, Any]], folder: str) -> None:
    """pycc-compile these exports into the extension ``name`` in ``folder``, for this machine's CPU."""
    import llvmlite.binding as llvm
    from numba.pycc import CC

    cc = CC(name)
    cc.verbose = False
    # The host's CPU, as numba's JIT would use: generic x86-64 code ran the stack ~7 % slower
    # (49.9 vs 46.8 ns/sample). The source hash includes the CPU, so the build never runs elsewhere.
    cc.target_cpu = llvm.get_host_cpu_name()
    for export, sig, dispatcher in entries:
        cc.export(export, sig)(dispatcher)
    cc.output_dir = folder
    cc.compile()


def _compile_parts(names: list[str], parts: list[list[tuple[str, Any, Any]]], folder: str) -> None:
    """Part 0 here, every other part at the same time in a child forked now: a fork inherits the dispatchers the
    workload compiled (their callees are linked into the exports, not compiled again), which spawning could not."""
    ctx = multiprocessing.get_context("fork")
    children = [ctx.Process(target=_compile_part, args=(n, p, folder), name=f"kernelbuild-{n}")
                for n, p in zip(names[1:], parts[1:], strict=True)]
    for child in children:
        child.start()
    try:
        _compile_part(names[0], parts[0], folder)
    finally:
        for child in children:
            child.join()
    failed = [c.name for c in children if c.exitcode != 0]
    if failed:
        raise SystemExit(f"edge.kernelbuild: compiling {', '.join(failed)} failed (its error is above)")


def build(out_dir: Path, configs: list[Path], jobs: int = 2) -> Path:
    """Run the workload, export every signature, compile in ``jobs`` processes; returns the main extension's path."""
    if os.environ.get("PLANTWIRE_KERNELS", "jit") != "jit":
        raise SystemExit("edge.kernelbuild: run with PLANTWIRE_KERNELS=jit (the build needs numba's dispatchers)")
    from edge.jit import ARG_SPECS_SUFFIX, PARTS_KEY, aot_module_name, part_module_name

    t0 = time.monotonic()
    run_workload(configs)
    table = exports()
    t_workload = time.monotonic() - t0
    name = aot_module_name()
    parts = split(table, jobs)
    names = [part_module_name(name, i) for i in range(len(parts))]
    arg_specs: dict[str, Any] = {export: _arg_specs(sig) for export, sig, _ in table}
    arg_specs[PARTS_KEY] = names[1:]
    with tempfile.TemporaryDirectory(prefix="plantwire-aot-") as tmp:
        _compile_parts(names, parts, tmp)
        built = {n: next(Path(tmp).glob(f"{n}.*")) for n in names}
        out_dir.mkdir(parents=True, exist_ok=True)
        for old in out_dir.glob("_plantwire_kernels_*"):
            old.unlink()  # builds of older sources can never load again
        for n in names[1:]:
            shutil.move(str(built[n]), out_dir / built[n].name)
        # The exports' array argument types, for the dispatcher's check (pycc's argument conversion reads any
        # array's buffer as the exported dtype: a uint32 column given to an int64 export crashed the process),
        # and the other parts' names.
        specs_tmp = out_dir / f".{name}{ARG_SPECS_SUFFIX}.tmp"
        specs_tmp.write_text(json.dumps(arg_specs, sort_keys=True))
        specs_tmp.replace(out_dir / f"{name}{ARG_SPECS_SUFFIX}")
        target = out_dir / built[name].name
        shutil.move(str(built[name]), target)  # last: the main extension present means its table and parts are too
    took = time.monotonic() - t0
    print(f"edge.kernelbuild: {len(table)} signatures in {len(parts)} parts -> {target} "
          f"({took:.0f} s: workload {t_workload:.0f} s, compile {took - t_workload:.0f} s)")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="plantwire kernels", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: $PLANTWIRE_AOT_DIR "
                        "or edge/_aot)")
    parser.add_argument("--config", type=Path, action="append", default=None,
                        help="edge config whose plant and analytics the workload runs (repeatable)")
    parser.add_argument("--jobs", type=int, default=min(2, len(os.sched_getaffinity(0))),
                        help="compile in this many processes, one extension each (default: 2, or 1 on one CPU)")
    args = parser.parse_args(argv)
    os.environ.setdefault("PLANTWIRE_KERNELS", "jit")
    from edge.jit import aot_dir

    configs = args.config or [p for p in DEFAULT_CONFIGS if p.exists()]
    build(args.out or aot_dir(), configs, jobs=max(1, args.jobs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
