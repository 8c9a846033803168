"""Notifier against real AF_UNIX datagram sockets, as systemd's manager would receive them."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterator

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
