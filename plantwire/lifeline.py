"""Child processes that never outlive the harness that started them.

The demo, the pipeline harness, the simulator and the bench scripts start servers and daemons in
sessions of their own (``start_new_session=True``, so a Ctrl-C in a terminal or a killed process
group elsewhere does not take them down half-way: shared/MEASURED.md trap 13). The price is that
nothing stops them when their parent goes: ``bench/simulator.py`` stopped with SIGTERM left
``plantwire sim`` and its three OPC-UA servers running. Three mechanisms close that, each for a
different way of dying:

- :func:`stop_on_signals`: SIGTERM, SIGINT and SIGHUP raise :class:`Stopped` in the main thread
  (a ``SystemExit``), so the ``finally`` blocks that stop the children run. Python's default for
  SIGTERM and SIGHUP is to die on the spot, without them.
- :func:`die_with_parent`: a ``preexec_fn`` that asks the kernel to send the child SIGTERM when
  its parent dies (``prctl(PR_SET_PDEATHSIG)``, Linux), which covers SIGKILL and crashes, where no
  handler runs. The kernel's "parent" is the *thread* that forked the child, so it is only set when
  the child is started from the main thread (a worker thread that ends would take its children
  with it); elsewhere it is a no-op and the next mechanism is the safety net.
- :func:`watch_parent`: for children of our own (``multiprocessing`` workers, the simulator's
  OPC-UA servers), a daemon thread that notices the parent's pid changed (re-parented to init or a
  subreaper) and calls back, within ``period_s``.

:func:`stop_process` is the one way to stop a child: SIGTERM by pid, SIGKILL after a timeout.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType

__all__ = ["STOP_SIGNALS", "Stopped", "die_with_parent", "stop_on_signals", "stop_process", "watch_parent"]

#: The signals a harness treats as "stop now, and stop your children".
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

_PR_SET_PDEATHSIG = 1


class Stopped(SystemExit):
    """Raised in the main thread by :func:`stop_on_signals`; exit status 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    fn: Callable[..., int] = libc.prctl
    return fn


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``sig`` when this process dies.

    None (start the child without it) off Linux, or when not called from the main thread (see the
    module docstring). libc is resolved here, in the parent, so the child only makes one call
    between fork and exec.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl: no signal will come
            os._exit(1)

    return preexec


def watch_parent(on_gone: Callable[[], None], *, period_s: float = 0.5) -> threading.Thread:
    """Call ``on_gone`` once, from a daemon thread, when this process's parent has gone."""
    parent = os.getppid()

    def run() -> None:
        stop = threading.Event()
        while not stop.wait(period_s):
            if os.getppid() != parent:
                on_gone()
                return

    t = threading.Thread(target=run, name="watch-parent", daemon=True)
    t.start()
    return t


@contextlib.contextmanager
def stop_on_signals(signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Inside the block, each of ``signals`` raises :class:`Stopped` in the main thread.

    A second signal while the first is being handled (children being stopped) is ignored, so a
    hurried operator pressing Ctrl-C twice does not cut the clean-up short. The previous handlers
    come back on exit.
    """
    stopping: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        if stopping:
            return
        stopping.append(signum)
        raise Stopped(signum)

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def stop_process(proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout_s: float = 10.0) -> int | None:
    """SIGTERM by pid, SIGKILL after ``timeout_s``; returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return proc.returncode
