"""The console inside the real edge daemon (``plantwire edge``) against a one-device Modbus PLC and a
real broker: its address in ``state_dir/console.port``, the values it shows are the ones the edge read
(the PLC's registers decode to 10.0) and its figures in /metrics. (A clean stop with the console running is
checked by tests/test_console_browser.py, whose edge has an ingestor to acknowledge: here the shutdown
would wait SHUTDOWN_DRAIN_TIMEOUT_S for acks that never come.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from plantwire.services import Mosquitto
from tests.console_helpers import Client
from tests.test_ops_edge import REPO, modbus_port, write_edge  # noqa: F401  (modbus_port: a fixture)

pytestmark = pytest.mark.integration


def test_edge_daemon_serves_its_console(tmp_path: Path, mosquitto: Mosquitto, modbus_port: int) -> None:  # noqa: F811
    cfg = write_edge(tmp_path, gateway="gw-console", mqtt_port=mosquitto.port, modbus_port=modbus_port)
    cfg.write_text(cfg.read_text() + "console: {host: 127.0.0.1, port: 0}\n")
    log_path = tmp_path / "edge.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "plantwire.cli", "edge", str(cfg)], cwd=REPO,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        port_file = tmp_path / "state" / "console.port"

        def value_shown() -> str | None:
            if proc.poll() is not None:
                raise AssertionError(f"edge exited with {proc.returncode}:\n{log_path.read_text()}")
            if not port_file.exists():
                return None
            _, html = Client(f"http://127.0.0.1:{port_file.read_text().strip()}/").get("/signals?q=pump01.flow")
            m = re.search(r'<td class="sid">pump01\.flow</td>.*?<td class="num value">([^<]*)</td>', html, re.S)
            return m.group(1) if m and m.group(1) != "–" else None

        deadline = time.monotonic() + 60
        while (shown := value_shown()) is None:
            assert time.monotonic() < deadline, f"no value on the console:\n{log_path.read_text()}\n{_page(port_file)}"
            time.sleep(0.1)
        assert shown == "10"
        c = Client(f"http://127.0.0.1:{port_file.read_text().strip()}/")
        status, html = c.get("/")
        assert status == 200 and '<tr data-source="plc1"><td>plc1</td><td class="state connected">' in html
        metrics_port = (tmp_path / "state" / "metrics.port").read_text().strip()
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        assert "plantwire_edge_console_up 1" in text and "plantwire_edge_console_requests_total" in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _page(port_file: Path) -> str:
    if not port_file.exists():
        return "(no console.port)"
    return Client(f"http://127.0.0.1:{port_file.read_text().strip()}/").get("/signals?q=pump01.flow")[1][-3000:]
