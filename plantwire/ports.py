"""Free loopback ports for tests, the demo and benchmarks (never fixed ports that may be taken)."""

from __future__ import annotations

import contextlib
import socket


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_port_block(count: int, host: str = "127.0.0.1", start: int = 20000, end: int = 60000) -> int:
    """First port of ``count`` consecutive free ports (a device group with port_step 1 needs them)."""
    if count == 1:
        return free_port(host)
    base = start + (free_port(host) % 1000) * 13 % (end - start - count)
    for _ in range((end - start) // max(count, 1)):
        if all(_is_free(host, p) for p in range(base, base + count)):
            return base
        base += count
        if base + count >= end:
            base = start
    raise RuntimeError(f"no block of {count} free ports on {host}")


def wait_port(host: str, port: int, timeout_s: float) -> bool:
    """True once something accepts TCP connections on host:port."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False
