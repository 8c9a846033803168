"""Notifier against real AF_UNIX datagram sockets, as systemd's manager would receive them."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from plantwire.sdnotify import Notifier


@pytest.fixture
def listener() -> Iterator[tuple[str, socket.socket]]:
    with tempfile.TemporaryDirectory(prefix="pwn") as d:  # AF_UNIX paths: at most 108 bytes
        path = os.path.join(d, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(2)
        try:
            yield path, sock
        finally:
            sock.close()


def fields(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_each_state_is_one_datagram(listener: tuple[str, socket.socket]) -> None:
    path, sock = listener
    n = Notifier(path, 4_000_000)
    assert n.enabled and n.watchdog_interval_s() == 2.0
    assert n.ready(status="all sources connected")
    assert fields(sock) == ["READY=1", "STATUS=all sources connected"]
    assert n.watchdog() and fields(sock) == ["WATCHDOG=1"]
    assert n.status("3 of 4 sources") and fields(sock) == ["STATUS=3 of 4 sources"]
    before = time.monotonic_ns() // 1000
    assert n.reloading()
    reload_fields = fields(sock)
    assert reload_fields[0] == "RELOADING=1" and reload_fields[1].startswith("MONOTONIC_USEC=")
    # The same clock as systemd's (CLOCK_MONOTONIC), read when the reload started.
    assert before <= int(reload_fields[1].split("=")[1]) <= time.monotonic_ns() // 1000
    assert n.extend_timeout(12.5) and fields(sock) == ["EXTEND_TIMEOUT_USEC=12500000"]
    assert n.errno(5) and fields(sock) == ["ERRNO=5"]
    assert n.stopping() and fields(sock) == ["STOPPING=1"]
    assert n.sent[0].startswith("READY=1") and n.sent[-1] == "STOPPING=1"
    n.close()


def test_abstract_namespace_socket() -> None:
    name = f"plantwire-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        assert Notifier("@" + name).ready()
        assert fields(sock) == ["READY=1"]
    finally:
        sock.close()


def test_outside_systemd_everything_is_a_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(var, raising=False)
    n = Notifier.from_env()
    assert not n.enabled and n.watchdog_interval_s() is None
    assert not n.ready() and not n.watchdog() and not n.stopping() and n.sent == []


def test_watchdog_belongs_to_the_pid_systemd_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/x")
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier.from_env().watchdog_interval_s() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # a parent's watchdog, inherited
    assert Notifier.from_env().watchdog_interval_s() is None
    monkeypatch.delenv("WATCHDOG_PID")
    monkeypatch.setenv("WATCHDOG_USEC", "soon")
    assert Notifier.from_env().watchdog_interval_s() is None


def test_a_broken_socket_never_raises_and_warns_once(caplog: pytest.LogCaptureFixture, tmp_path: os.PathLike[str]
                                                     ) -> None:
    n = Notifier(os.path.join(str(tmp_path), "nobody-listens"))
    with caplog.at_level(logging.WARNING, logger="plantwire.sdnotify"):
        for _ in range(5):
            assert not n.watchdog()
    warnings = [r for r in caplog.records if "sd_notify" in r.getMessage()]
    assert len(warnings) == 1 and "nobody-listens" in warnings[0].getMessage()
    assert n.sent == []


CHILD = """
import signal, sys, time, pathlib
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
time.sleep(0.3)
pathlib.Path(sys.argv[1]).write_text("ready")
if sys.argv[2] == "crash":
    sys.exit(3)
while True:
    time.sleep(0.05)
"""


def test_wrapper_turns_a_ready_file_into_notify_messages(listener: tuple[str, socket.socket], tmp_path: Path
                                                         ) -> None:
    """How the simulator's unit runs: readiness by file, READY/WATCHDOG/STOPPING by the wrapper."""
    path, sock = listener
    ready = tmp_path / "ready"
    ready.write_text("stale")  # left by a previous run: must not count
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")
    env.pop("WATCHDOG_PID", None)
    cmd = [sys.executable, "-m", "plantwire.sdnotify", "--ready-file", str(ready), "--",
           sys.executable, "-c", CHILD, str(ready)]
    proc = subprocess.Popen([*cmd, "run"], env=env)
    try:
        t0 = time.monotonic()
        first = fields(sock)
        while first == ["WATCHDOG=1"]:
            first = fields(sock)
        assert first[0] == "READY=1" and time.monotonic() - t0 >= 0.3
        assert fields(sock) == ["WATCHDOG=1"] and fields(sock) == ["WATCHDOG=1"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0  # the child's own exit code
        rest = []
        with contextlib.suppress(TimeoutError):
            while True:
                rest.append(fields(sock))
        assert ["STOPPING=1"] in rest and rest.count(["STOPPING=1"]) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
    crashed = subprocess.run([*cmd, "crash"], env=env, timeout=30, check=False)
    assert crashed.returncode == 3
