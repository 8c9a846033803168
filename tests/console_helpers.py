"""Helpers for the console tests: a console served from a real signal table without the rest of the
daemon (a loop thread stands in for the daemon's loop), a small HTTP client that keeps cookies, and a
headless Chromium driven by selenium with Debian's ``chromium`` and ``chromium-driver`` (no browser
download: the driver's path is given, so Selenium Manager is never asked).
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import shutil
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.console import ConsoleHooks, ConsoleSettings, DetectorAlarmBoard, GatewayFeed, SignalTap
from edge.console.server import ConsoleServer
from plantwire.configfile import load_plant
from plantwire.metrics import Registry
from plantwire.plant import expand

ROOT = Path(__file__).resolve().parent.parent
DEV_PLANT = ROOT / "configs" / "dev" / "plant.yaml"
#: Screenshots and page sources of browser tests (git-ignored).
ARTIFACTS = ROOT / "tests" / "artifacts"


@dataclass
class FakeDaemon:
    """The parts of a running daemon the console reads: a loop thread, a registry and a tap."""

    feed: GatewayFeed
    loop: asyncio.AbstractEventLoop
    emitted: list[dict[str, Any]] = field(default_factory=list)


@contextmanager
def daemon_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, name="fake-daemon", daemon=True)
    t.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
        loop.close()


@contextmanager
def served_console(tmp_path: Path, **settings: Any) -> Iterator[tuple[ConsoleServer, FakeDaemon]]:
    """A console on a free loopback port over the dev plant's 1,000 signals, with one frame of values
    (value = row number, quality GOOD except every 10th BAD, score = row / 1000) and one source metric."""
    table = expand(load_plant(DEV_PLANT))
    n = len(table)
    tap = SignalTap(n, points=16, linger_s=60.0)
    rows = np.arange(n, dtype=np.uint32)
    quality = np.where(rows % 10 == 0, 2, 0).astype(np.uint8)
    tap.update(np.full(n, 1_700_000_000_000_000_000, dtype=np.int64), rows, rows.astype(np.float64), quality,
               rows / 1000.0)
    reg = Registry("plantwire_edge")
    reg.gauge("source_connected", "").set(1.0, source="dev-plc1")
    reg.counter("source_samples_good_total", "").set(1234.0, source="dev-plc1")
    reg.gauge("spool_wal_records", "").set(7.0)
    emitted: list[dict[str, Any]] = []
    board = DetectorAlarmBoard("gw-test")
    board.feed([{"type": "alarm", "state": "open", "kind": "level", "start_ns": 1_700_000_000_000_000_000,
                 "end_ns": None, "peak": 0.97, "signal": table.ids[5], "machine": table.machine_ids[0]}])
    with daemon_loop() as loop:
        feed = GatewayFeed(
            gateway_id="gw-test", site=table.site, table=table, tap=tap, registry=reg,
            health=lambda: {"status": "ok", "degraded": [], "mqtt_connected": True},
            running_config={"gateway_id": "gw-test", "mqtt": {"password": "s3cret", "password_env": "MQTT_PW"}},
            config_dir=DEV_PLANT.parent, state_dir=tmp_path, emit_events=emitted.extend, hooks=ConsoleHooks(),
            detector_alarms=board,
        )
        cfg = ConsoleSettings(**{"host": "127.0.0.1", "port": 0, **settings})
        server = ConsoleServer(cfg, feed)
        assert server.start(loop), "console did not start"
        try:
            yield server, FakeDaemon(feed, loop, emitted)
        finally:
            server.stop()


class Client:
    """urllib with a cookie jar; every call returns (status, body text) instead of raising on 4xx/5xx."""

    def __init__(self, base: str, ca_file: Path | None = None) -> None:
        self.base = base.rstrip("/")
        self.jar = http.cookiejar.CookieJar()
        handlers: list[Any] = [urllib.request.HTTPCookieProcessor(self.jar)]
        if ca_file is not None:
            handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=str(ca_file))))
        self.opener = urllib.request.build_opener(*handlers)

    def request(self, method: str, path: str, data: bytes | dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, str]:
        body = urllib.parse.urlencode(data).encode() if isinstance(data, dict) else data
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers or {})
        try:
            with self.opener.open(req, timeout=30) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def get(self, path: str, **kw: Any) -> tuple[int, str]:
        return self.request("GET", path, **kw)

    def post(self, path: str, data: bytes | dict[str, str] | None = None, **kw: Any) -> tuple[int, str]:
        return self.request("POST", path, data if data is not None else b"", **kw)

    def csrf(self, path: str = "/") -> str:
        status, html = self.get(path)
        assert status == 200, (status, html[:300])
        marker = 'data-csrf="'
        i = html.index(marker) + len(marker)
        return html[i:html.index('"', i)]


def chromium_available() -> bool:
    return shutil.which("chromium") is not None and shutil.which("chromedriver") is not None


@contextmanager
def chromium(profile_dir: Path, *, ca_ignore: bool = False) -> Iterator[Any]:
    """A headless Chromium (Debian's) under selenium's WebDriver, closed afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", f"--user-data-dir={profile_dir}", "--no-first-run",
                "--disable-extensions", "--disable-background-networking"):
        opts.add_argument(arg)
    if ca_ignore:
        opts.add_argument("--ignore-certificate-errors")
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    driver = webdriver.Chrome(options=opts, service=service)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
