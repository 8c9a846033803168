"""The ingestor under a systemd-like supervisor: READY, WATCHDOG and STOPPING on a real
``NOTIFY_SOCKET``, Prometheus names that follow the conventions, and a clean exit on SIGTERM.

Runs ``python -m plantwire.cli ingest`` once per module against a Mosquitto and a fresh database on
the session's InfluxDB 1.6, as ``plantwire-ingest.service`` would; the tests judge what it did.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from test_ops_edge import REPO, Family, NotifySocket, check_conventions, parse_prometheus

from plantwire.services import InfluxDB1, Mosquitto

pytestmark = pytest.mark.integration


@dataclass
class IngestRun:
    notify: NotifySocket
    families: dict[str, Family]
    health: dict[str, Any]
    exit_code: int
    log: str


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, influxdb: InfluxDB1) -> Iterator[IngestRun]:
    tmp = tmp_path_factory.mktemp("ingest")
    db = f"t_{uuid.uuid4().hex[:12]}"
    influxdb.query(f'CREATE DATABASE "{db}"')
    with Mosquitto(tmp / "mosquitto") as broker, tempfile.TemporaryDirectory(prefix="pwn") as d:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(os.path.join(d, "notify"))
        notify = NotifySocket(os.path.join(d, "notify"), sock)
        threading.Thread(target=notify._receive, name="notify-recv", daemon=True).start()
        cfg = tmp / "cloud.yaml"
        cfg.write_text(
            f"mqtt: {{host: 127.0.0.1, port: {broker.port}, client_id: ops-ingest}}\n"
            f'influx: {{api: v1, url: "{influxdb.url}", database: {db}}}\n'
            "state_dir: state\nmetrics: {host: 127.0.0.1, port: 0}\n"
        )
        env = dict(os.environ, NOTIFY_SOCKET=notify.path, WATCHDOG_USEC="2000000")
        env.pop("WATCHDOG_PID", None)
        log_path = tmp / "ingest.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "plantwire.cli", "ingest", str(cfg), "--log-json"],
                                    cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            port_file = tmp / "state" / "metrics.port"
            while notify.count("READY=1") == 0 or not port_file.exists():
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, f"no READY=1 / metrics.port:\n{log_path.read_text()}"
                time.sleep(0.05)
            notify.wait_for("WATCHDOG=1", 5, at_least=2)
            url = f"http://127.0.0.1:{port_file.read_text().strip()}"
            with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
                families = parse_prometheus(resp.read().decode())
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as resp:
                    health = json.loads(resp.read())
            except urllib.error.HTTPError as exc:  # 503 while degraded still carries the document
                health = json.loads(exc.read())
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
            time.sleep(0.2)  # let the receiver thread take the last datagram
            yield IngestRun(notify, families, health, code, log_path.read_text())
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            sock.close()
            influxdb.query(f'DROP DATABASE "{db}"')


def test_ingest_speaks_the_notify_protocol_and_stops_cleanly(run: IngestRun) -> None:
    assert run.exit_code == 0, run.log
    order = [m.split("\n")[0] for _, m in run.notify.messages if not m.startswith(("WATCHDOG", "STATUS"))]
    assert order == ["READY=1", "STOPPING=1"], run.notify.messages
    assert run.notify.count("WATCHDOG=1") >= 2
    assert isinstance(run.health, dict) and run.health


def test_ingest_metric_names_follow_conventions(run: IngestRun) -> None:
    assert "plantwire_ingest_received_messages_total" in run.families
    problems = [p for p in check_conventions(run.families, "plantwire_ingest") if "histogram" not in p]
    assert problems == [], "\n".join(problems)


def test_ingest_histograms_are_exposed_as_histograms(run: IngestRun) -> None:
    problems = [p for p in check_conventions(run.families, "plantwire_ingest") if "histogram" in p]
    assert problems == [], "\n".join(problems)
