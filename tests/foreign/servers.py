"""Start the Node.js servers of this folder (node-opcua, modbus-serial) for a test, and stop them.

The npm packages come from ``make foreign`` (``make test`` runs it). When node_modules is missing,
``ensure_node_modules`` runs ``npm ci`` itself; if that fails the test fails with npm's output:
nothing is skipped silently.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def ensure_node_modules() -> None:
    """node_modules installed from the lock file, or pytest.fail saying why not."""
    if (HERE / "node_modules" / ".installed").exists():
        return
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are not installed: run `make foreign` (installs Debian's nodejs and npm)")
    proc = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
                          cwd=HERE, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"npm ci in {HERE} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    (HERE / "node_modules" / ".installed").touch()


class NodeServer:
    """``node SCRIPT ARGS...`` in its own session; ready when it prints ``READY <port>``."""

    def __init__(self, script: str, *args: str, ready_timeout_s: float = 90.0) -> None:
        self.script = script
        self.args = args
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, log_path: Path) -> None:
        """Start and wait for READY; the server's output goes to ``log_path`` (a pipe could fill and stall it)."""
        ensure_node_modules()
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(["node", str(HERE / self.script), *self.args], cwd=HERE,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            if b"READY " in log_path.read_bytes():
                return
            time.sleep(0.05)  # polling a file for a condition, with a deadline
        output = log_path.read_bytes().decode(errors="replace")[-4000:]
        self.stop()
        pytest.fail(f"node {self.script} did not become ready within {self.ready_timeout_s:g} s:\n{output}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
