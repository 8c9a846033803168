"""The one decorator every kernel uses: numba's JIT, or the same kernels compiled ahead of time.

Why: JIT on the edge box costs memory, not speed. ``import numba`` maps LLVM (~40 MB resident) and
loading the cached kernels adds ~80 MB more (LLVM's code pages, the typing machinery, MCJIT's copies
of every module): ~145 MB of a 215 MB edge daemon, for code that never changes while it runs. The
same kernels compiled once by ``plantwire kernels`` (``edge/kernelbuild.py``, numba's ``pycc``, a C extension that
does not import numba) run in a ~70 MB daemon.

Mode, read once from ``PLANTWIRE_KERNELS`` before the first kernel module is imported:

- ``jit`` (the default for libraries, tests and ``plantwire score``): plain ``numba.njit``.
- ``auto`` (the edge daemon's default, set by ``plantwire edge``): the AOT module if one built from
  exactly these kernel sources exists, else JIT, with the reason logged.
- ``aot``: like ``auto``, but say loudly (warning) when it falls back.

An AOT module exports each kernel with the argument types recorded while the build ran a
representative workload; the build writes them beside it (``*.args.json``). The build compiles in parallel
into several extensions (``<name>``, ``<name>_part1``, ... listed in that table), loaded here as one.
pycc's exports do not check an array's dtype (they read its buffer as the exported type: a uint32 column
given to an int64 export crashed the process), so this dispatcher checks every array argument's dtype,
dimensions and layout against the table before it calls. A call whose types no export covers, or a kernel
with no export at all, never fails: the first such call switches every kernel to JIT for the rest of the
process (counted in ``STATS.jit_fallbacks``, logged with the kernel's name), trading the memory back for correctness.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

EDGE_DIR = Path(__file__).resolve().parent
KERNEL_DIR = EDGE_DIR / "kernels"  # the pure kernels; this dispatcher and the build sit beside them
DEFAULT_AOT_DIR = EDGE_DIR / "_aot"
ENV_MODE = "PLANTWIRE_KERNELS"
ENV_DIR = "PLANTWIRE_AOT_DIR"
MODES = ("jit", "auto", "aot")
ARG_SPECS_SUFFIX = ".args.json"  # beside the extension: each export's array argument types
PARTS_KEY = "__parts__"  # in that table: the other extensions of the same build (it compiles in parallel)


@dataclass
class KernelStats:
    """What the kernels run as; exported by the edge as metrics."""

    mode: str = "jit"  # what is in use now: "jit" or "aot"
    reason: str = ""  # why JIT, when AOT was asked for
    module: str = ""  # the AOT module's file
    jit_fallbacks: int = 0  # AOT -> JIT switches (0 or 1 per process)


STATS = KernelStats()


def cpu_fingerprint() -> bytes:
    """This CPU's model and instruction-set flags: the AOT build targets the host CPU (as JIT does).

    A build copied to, or a VM migrated onto, a CPU with other flags then never loads (it could
    execute instructions that CPU lacks); JIT runs instead. Read from /proc/cpuinfo, no LLVM needed.
    """
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        import platform

        return f"{platform.machine()} {platform.processor()}".encode()
    first = text.split("\n\n", 1)[0]
    keep = [line for line in first.splitlines() if line.split(":", 1)[0].strip() in ("model name", "flags")]
    return "\n".join(keep).encode()


def source_hash() -> str:
    """Hash of the kernel sources, numba's and Python's versions and the CPU: an AOT build matches only these."""
    h = hashlib.sha256()
    h.update(cpu_fingerprint())
    for path in sorted(KERNEL_DIR.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    h.update(sys.version.split()[0].encode())
    try:
        from importlib.metadata import version

        h.update(version("numba").encode())
    except Exception:
        pass
    return h.hexdigest()[:16]


def aot_module_name() -> str:
    """The AOT module built from these sources on this CPU."""
    return f"_plantwire_kernels_{source_hash()}"


def part_module_name(name: str, part: int) -> str:
    """The extension holding part ``part`` of the build ``name`` (part 0 is ``name`` itself)."""
    return name if part == 0 else f"{name}_part{part}"


def aot_dir() -> Path:
    return Path(os.environ.get(ENV_DIR) or DEFAULT_AOT_DIR)


def export_name(module: str, func: str, variant: int) -> str:
    """Name of one exported signature: unique across kernel modules."""
    return f"{module.rsplit('.', 1)[-1]}__{func}__{variant}"


@dataclass(frozen=True)
class _ArgSpec:
    """What an export takes at one argument position: an array of this dtype and ndim, or (None) anything."""

    dtype: np.dtype | None
    ndim: int = 0
    c_contiguous: bool = False

    @classmethod
    def of(cls, raw: list[Any] | None) -> _ArgSpec:
        if raw is None:
            return cls(None)
        descr, ndim, contiguous = raw
        return cls(np.lib.format.descr_to_dtype(descr if isinstance(descr, str) else [tuple(f) for f in descr]),
                   int(ndim), bool(contiguous))


ARG_SPECS: dict[str, list[_ArgSpec]] = {}  # export name -> its arguments, from the build's table


def _load_extension(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_aot() -> ModuleType | None:
    """Import the AOT build for these sources (its main extension, with the other parts' exports set on it),
    or None (reason in STATS.reason)."""
    name = aot_module_name()
    folder = aot_dir()
    suffixes = importlib.machinery.EXTENSION_SUFFIXES

    def find(module_name: str) -> Path | None:
        return next((folder / f"{module_name}{s}" for s in suffixes if (folder / f"{module_name}{s}").exists()), None)

    path = find(name)
    if path is None:
        STATS.reason = f"no AOT kernels for these sources in {folder} (build: plantwire kernels)"
        return None
    specs_path = folder / f"{name}{ARG_SPECS_SUFFIX}"
    try:
        specs = json.loads(specs_path.read_text())
        parts = [str(p) for p in specs.pop(PARTS_KEY, [])]
        ARG_SPECS.update({k: [_ArgSpec.of(a) for a in v] for k, v in specs.items()})
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        STATS.reason = f"AOT kernels at {path} have no usable argument table {specs_path.name}: {exc}"
        return None
    try:
        module = _load_extension(name, path)
        for part in parts:
            part_path = find(part)
            if part_path is None:
                raise FileNotFoundError(f"its part {part} is missing")
            extension = _load_extension(part, part_path)
            for export in ARG_SPECS:
                if hasattr(extension, export):
                    setattr(module, export, getattr(extension, export))
    except Exception as exc:
        STATS.reason = f"AOT kernels at {path} failed to load: {exc}"
        return None
    STATS.module = str(path)
    return module


def _resolve_mode() -> tuple[str, ModuleType | None]:
    wanted = os.environ.get(ENV_MODE, "jit").strip().lower() or "jit"
    if wanted not in MODES:
        log.warning("%s=%r is not one of %s; using jit", ENV_MODE, wanted, "/".join(MODES))
        wanted = "jit"
    if wanted == "jit":
        return "jit", None
    module = _load_aot()
    if module is None:
        (log.warning if wanted == "aot" else log.info)("kernels: JIT (%s)", STATS.reason)
        return "jit", None
    log.info("kernels: AOT from %s", STATS.module)
    return "aot", module


_MODE, _AOT = _resolve_mode()
STATS.mode = _MODE
_LOCK = threading.Lock()
# Every kernel decorated while in AOT mode: (module name, function name, python function, njit kwargs).
_REGISTRY: list[tuple[str, str, Callable[..., Any], dict[str, Any]]] = []


def switch_to_jit(why: str) -> None:
    """Replace every AOT kernel in its module by a numba dispatcher (numba resolves globals lazily)."""
    global _MODE
    with _LOCK:
        if _MODE == "jit":
            return
        import numba

        for module_name, func_name, py_func, kwargs in _REGISTRY:
            setattr(sys.modules[module_name], func_name, numba.njit(**kwargs)(py_func))
        _MODE = "jit"
        STATS.mode = "jit"
        STATS.jit_fallbacks += 1
        STATS.reason = why
    log.warning("kernels: switched to JIT for the rest of this process: %s", why)


def _arrays_fit(arrays: tuple[tuple[int, Any, int, bool], ...], args: tuple[Any, ...]) -> bool:
    """Every array argument has the export's dtype, ndim and (if asked) C layout. Per kernel call, not per
    sample: a plain loop (~0.1 us an argument), since the edge makes a few dozen kernel calls per frame."""
    try:
        for i, dtype, ndim, contiguous in arrays:
            a = args[i]
            if a.dtype != dtype or a.ndim != ndim or (contiguous and not a.flags.c_contiguous):
                return False
    except AttributeError:  # not an array where the export takes one
        return False
    return True


class _AotKernel:
    """One kernel's AOT exports; a call no export takes switches the process to JIT and retries."""


    def __init__(self, module_name: str, func_name: str, py_func: Callable[..., Any],
                 variants: list[tuple[Any, list[_ArgSpec]]]) -> None:
        self.module_name = module_name
        self.func_name = func_name
        # per export: (function, argument count, (position, dtype, ndim, C-contiguous) of each array argument)
        self.variants = [(fn, len(specs), tuple((i, sp.dtype, sp.ndim, sp.c_contiguous)
                                                  for i, sp in enumerate(specs) if sp.dtype is not None))
                         for fn, specs in variants]
        self.__wrapped__ = py_func
        self.__doc__ = py_func.__doc__

    def __call__(self, *args: Any) -> Any:
        for fn, n_args, arrays in self.variants:
            if len(args) != n_args or not _arrays_fit(arrays, args):
                continue  # an array of another dtype would be read as this export's: never call it
            try:
                return fn(*args)
            except TypeError:  # the export's argument conversion refused these types: nothing ran
                continue
        where = f"{self.module_name}.{self.func_name}"
        types = ", ".join(type(a).__name__ + (f"[{a.dtype}]" if hasattr(a, "dtype") else "") for a in args)
        why = f"{where} has no AOT export for ({types})" if self.variants else f"{where} has no AOT export"
        switch_to_jit(why)
        return getattr(sys.modules[self.module_name], self.func_name)(*args)


def njit(**kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
    """``numba.njit(**kwargs)`` in JIT mode; the function's AOT exports in AOT mode."""

    def decorate(fn: Callable[..., Any]) -> Any:
        if _MODE == "jit":
            import numba

            return numba.njit(**kwargs)(fn)
        _REGISTRY.append((fn.__module__, fn.__name__, fn, kwargs))
        variants = []
        i = 0
        while (c := getattr(_AOT, name := export_name(fn.__module__, fn.__name__, i), None)) is not None:
            if name in ARG_SPECS:  # an export the table does not describe is never called
                variants.append((c, ARG_SPECS[name]))
            i += 1
        return _AotKernel(fn.__module__, fn.__name__, fn, variants)

    return decorate
