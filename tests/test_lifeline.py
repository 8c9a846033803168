"""Harness hygiene: no child outlives the harness that started it (plantwire.lifeline).

Each test starts a real harness (``plantwire sim`` with its OPC-UA server processes, a bench
script, ``plantwire demo``), records its whole process tree from /proc, stops the harness with a
signal (SIGTERM, SIGINT, SIGHUP, or SIGKILL where no handler can run) and asserts every recorded
process is gone within a deadline. The children run in sessions of their own, so a process-group
kill would not reach them: only the harness's own clean-up, the kernel's parent-death signal and
the children's parent watch can.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from plantwire.configfile import load_plant
from plantwire.lifeline import die_with_parent, stop_process
from plantwire.plant import relocate_ports
from plantwire.ports import free_port_block

ROOT = Path(__file__).resolve().parents[1]
#: One Modbus slave (served in the simulator's process) and two OPC-UA servers (child processes).
TINY_PLANT = {
    "site": "lifeline",
    "templates": {"m": {"signals": [{"name": "a"}, {"name": "b", "type": "int16"}]}},
    "devices": [
        {"name": "plc", "protocol": "modbus", "port": 15020},
        {"name": "opc{i}", "protocol": "opcua", "count": 2, "port": 14840},
    ],
    "machines": [
        {"name": "x{i}", "template": "m", "count": 2, "device": "plc"},
        {"name": "y{i}", "template": "m", "count": 2, "device": "opc{i}"},
    ],
}
N_OPCUA = 2
GONE_S = 20.0  # clean stops take a few seconds on a loaded box; SIGKILL paths much less
#: An edge whose broker vanished stops after its shutdown timeouts (edge/app.py: 5 s drain, 30 s acks).
EDGE_STOP_S = 60.0


def _stat(pid: int) -> tuple[int, str] | None:
    """(ppid, state) of a live process, None if it is gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[1]), fields[0]) if fields[0] != "Z" else None


def tree(root: int) -> set[int]:
    """Every live descendant of ``root`` (sessions do not matter, parent links do)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            parents[int(entry)] = st[0]
    out: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - out
        out |= frontier
    return out


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def wait_until(cond, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def assert_all_gone(pids: set[int], timeout_s: float = GONE_S) -> float:
    t0 = time.monotonic()
    try:
        wait_until(lambda: all(_stat(p) is None for p in pids), timeout_s, "every child to exit")
    except AssertionError:
        left = {p: " ".join(cmdline(p))[:160] for p in pids if _stat(p) is not None}
        for p in left:  # do not leave them behind for the next test
            os.kill(p, signal.SIGKILL)
        raise AssertionError(f"survivors after {timeout_s:.0f} s: {left}") from None
    return time.monotonic() - t0


def opcua_children(pids: set[int]) -> list[int]:
    return [p for p in pids if "simulators.opcua_server" in cmdline(p)]


_HARNESS = """
import subprocess, sys, time
from plantwire.lifeline import die_with_parent, stop_on_signals, stop_process
with stop_on_signals():
    child = subprocess.Popen(["sleep", "600"], start_new_session=True, preexec_fn=die_with_parent())
    print(child.pid, flush=True)
    try:
        time.sleep(600)
    finally:
        stop_process(child)
"""


def _harness() -> tuple[subprocess.Popen[str], int]:
    """A minimal harness (the pattern the bench scripts follow) and the pid of its child."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HARNESS], stdout=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_harness_stops_its_child_on_a_signal(sig: signal.Signals) -> None:
    proc, child = _harness()
    try:
        os.kill(proc.pid, sig)
        assert proc.wait(GONE_S) == 128 + sig  # the clean-up ran, then the exit says which signal
        assert_all_gone({child}, 5.0)
    finally:
        stop_process(proc)


def test_child_gets_sigterm_when_its_harness_is_killed() -> None:
    proc, child = _harness()
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert_all_gone({child}, 5.0)  # no handler ran: only the kernel's parent-death signal
    finally:
        stop_process(proc)


def test_die_with_parent_is_not_set_from_a_worker_thread() -> None:
    """The kernel's "parent" is the forking thread: a child started from a worker thread would die with it."""
    import threading

    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(die_with_parent()))
    t.start()
    t.join()
    assert got == [None]
    assert die_with_parent() is not None  # the main thread, on Linux


@pytest.fixture
def plant_file(tmp_path: Path) -> Path:
    src = tmp_path / "tiny.yaml"
    src.write_text(yaml.safe_dump(TINY_PLANT))
    plant = relocate_ports(load_plant(src), free_port_block)
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(plant.model_dump(mode="json"), sort_keys=False))
    return path


@pytest.fixture
def sim(tmp_path: Path, plant_file: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``plantwire sim`` on the dev plant, started from the test's main thread, ready."""
    ready = tmp_path / "sim.ready"
    log = open(tmp_path / "sim.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "plantwire.cli", "sim", str(plant_file), "--ready-file", str(ready)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT,
    )
    log.close()
    try:
        wait_until(lambda: ready.exists() or proc.poll() is not None, 120, "simulator ready")
        assert proc.poll() is None, (tmp_path / "sim.log").read_text()[-3000:]
        yield proc
    finally:
        stop_process(proc)


@pytest.mark.slow  # ~15 s each, mostly the simulator's start; the default run has the SIGKILL and bench cases
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_sim_stops_its_opcua_servers_on_a_signal(sim: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    kids = tree(sim.pid)
    assert len(opcua_children(kids)) == N_OPCUA, {p: cmdline(p) for p in kids}
    os.kill(sim.pid, sig)
    assert sim.wait(GONE_S) == 0  # a clean stop, not death by the signal
    assert_all_gone(kids)


@pytest.mark.slow  # the default run has the bench case, which stops the simulator the same way
def test_sim_killed_takes_its_opcua_servers_along(sim: subprocess.Popen[bytes]) -> None:
    kids = tree(sim.pid)
    assert len(opcua_children(kids)) == N_OPCUA
    os.kill(sim.pid, signal.SIGKILL)
    sim.wait(10)
    took_s = assert_all_gone(kids, 10.0)
    print(f"OPC-UA servers gone {took_s:.1f} s after the simulator was killed")


def _bench_simulator(tmp_path: Path, plant_file: Path) -> tuple[subprocess.Popen[bytes], int, set[int]]:
    """bench/simulator.py measuring for ten minutes; returns it, its ``plantwire sim`` and their tree, ready."""
    log = open(tmp_path / "bench.log", "wb")
    bench = subprocess.Popen(
        [sys.executable, "bench/simulator.py", "--plant", str(plant_file), "--rates", "1", "--duration", "600",
         "--settle", "0.1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT, preexec_fn=die_with_parent(),
    )
    log.close()

    def sim_ready() -> bool:
        for p in tree(bench.pid):
            args = cmdline(p)
            if "sim" in args and "--ready-file" in args and Path(args[args.index("--ready-file") + 1]).exists():
                return True
        assert bench.poll() is None, (tmp_path / "bench.log").read_text()[-3000:]
        return False

    wait_until(sim_ready, 120, "bench's simulator ready")
    kids = tree(bench.pid)
    sims = [p for p in kids if "sim" in cmdline(p) and "plantwire.cli" in cmdline(p)]
    assert len(sims) == 1 and len(opcua_children(kids)) == N_OPCUA, {p: cmdline(p) for p in kids}
    return bench, sims[0], kids


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, pytest.param(signal.SIGKILL, marks=pytest.mark.slow)], ids=lambda s: s.name
)
def test_bench_simulator_leaves_nothing_running(tmp_path: Path, plant_file: Path, sig: signal.Signals) -> None:
    """The reproduction from issue 13: SIGTERM to bench/simulator.py left sim and its OPC-UA servers running."""
    bench, _, kids = _bench_simulator(tmp_path, plant_file)
    try:
        os.kill(bench.pid, sig)
        bench.wait(GONE_S)
        took_s = assert_all_gone(kids)
        print(f"bench/simulator.py stopped by {sig.name}: its {len(kids)} descendants gone {took_s:.1f} s later")
    finally:
        stop_process(bench)


@pytest.fixture
def demo_dir(tmp_path: Path) -> Path:
    """The dev edge and ingestor configs around the tiny plant (the demo moves every port itself)."""
    d = tmp_path / "demo-config"
    d.mkdir()
    (d / "plant.yaml").write_text(yaml.safe_dump(TINY_PLANT))
    for name in ("edge.yaml", "cloud.yaml"):
        (d / name).write_text((ROOT / "configs" / "dev" / name).read_text())
    return d


def _demo(tmp_path: Path, demo_dir: Path) -> tuple[subprocess.Popen[bytes], set[int]]:
    """``plantwire demo`` running; returns it and its process tree once the edge and ingestor report."""
    log_path = tmp_path / "demo.log"
    log = open(log_path, "wb")
    demo = subprocess.Popen(
        [sys.executable, "-m", "plantwire.cli", "demo", str(demo_dir), "--state-dir", str(tmp_path / "state")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT, preexec_fn=die_with_parent(),
    )
    log.close()

    def running() -> bool:
        assert demo.poll() is None, log_path.read_text()[-3000:]
        return "plantwire demo: running" in log_path.read_text()

    wait_until(running, 180, "demo running")
    kids = tree(demo.pid)
    names = " ".join(" ".join(cmdline(p)) for p in kids)
    for part in ("mosquitto", "influxd", " sim ", " edge ", " ingest ", "simulators.opcua_server"):
        assert part in names, f"{part!r} not among the demo's children: {names}"
    return demo, kids


@pytest.mark.slow  # the whole pipeline starts: ~30 s on a loaded box
@pytest.mark.parametrize(
    "sig",
    [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL],
    ids=lambda s: s.name,
)
def test_demo_leaves_nothing_running(tmp_path: Path, demo_dir: Path, sig: signal.Signals) -> None:
    demo, kids = _demo(tmp_path, demo_dir)
    try:
        os.kill(demo.pid, sig)
        code = demo.wait(90)
        if sig is not signal.SIGKILL:
            assert code in (0, 1), (tmp_path / "demo.log").read_text()[-3000:]  # stopped and audited
            assert "summary:" in (tmp_path / "demo.log").read_text()
        # Killed, the demo cannot stop the edge before the broker: the edge, told to stop by the
        # kernel while its broker goes too, waits out its drain (5 s) and broker-ack (30 s) timeouts.
        assert_all_gone(kids, EDGE_STOP_S)
    finally:
        stop_process(demo)


_BARE_HARNESS = """
import subprocess, sys, time
sim = subprocess.Popen([sys.executable, "-m", "plantwire.cli", "sim", sys.argv[1], "--ready-file", sys.argv[2]],
                       stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
time.sleep(600)
"""


@pytest.mark.slow  # a simulator start (~15 s on a loaded box)
def test_sim_stops_when_a_harness_without_die_with_parent_is_killed(tmp_path: Path, plant_file: Path) -> None:
    """Started by someone else's harness (no parent-death signal), the simulator watches its parent's pid."""
    ready = tmp_path / "sim.ready"
    harness = subprocess.Popen(
        [sys.executable, "-c", _BARE_HARNESS, str(plant_file), str(ready)], cwd=ROOT, start_new_session=True
    )
    try:
        wait_until(lambda: ready.exists(), 120, "simulator ready")
        kids = tree(harness.pid)
        assert len(opcua_children(kids)) == N_OPCUA
        os.kill(harness.pid, signal.SIGKILL)
        harness.wait(10)
        assert_all_gone(kids)
    finally:
        stop_process(harness)
