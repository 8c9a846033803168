"""The edge console in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``,
driven through selenium's WebDriver) against the console's pages. Screenshots go to tests/artifacts/.

``test_browser_smoke`` (default run, a few seconds) loads the overview and signals pages of a console
served over the dev plant's table; the rest (``make test-browser``) run a whole edge with the simulated
plant, broker and InfluxDB and check what the pages show against what the edge read.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.console.auth import hash_password
from plantwire.pipeline import Pipeline, _influx_query, scrape
from tests.console_helpers import ROOT, chromium, chromium_available, screenshot, served_console

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not chromium_available(), reason="needs Debian's chromium and chromium-driver")]

USERS_ENV = "PLANTWIRE_TEST_CONSOLE_USERS"
PASSWORD = "operator-pass-1"


def wait_for(what: str, cond: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


# The pages refresh themselves (overview every 2 s, alarms every 5 s, live values): an element found in one
# WebDriver call can be replaced before the next one reads it (StaleElementReferenceException). Reads and clicks
# therefore run as one script inside the page, which sees one consistent DOM.
def _texts(driver: Any, css: str) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), e => e.innerText);", css)


def _text(driver: Any, css: str) -> str:
    texts = _texts(driver, css)
    return texts[0] if texts else ""


def _click(driver: Any, css: str) -> None:
    found = driver.execute_script(
        "const e = document.querySelector(arguments[0]); if (!e) return false; e.click(); return true;", css)
    assert found, f"nothing to click at {css}"


def test_browser_smoke(tmp_path: Path) -> None:
    with served_console(tmp_path) as (server, daemon), chromium(tmp_path / "profile") as driver:
        driver.get(server.url)
        assert wait_for("the overview", lambda: "dev-plc1" in _text(driver, "#sources"), 30)
        assert "1,234" in _text(driver, "#sources") and _text(driver, "#condition") == "ok"
        screenshot(driver, "smoke-overview")
        sid = daemon.feed.table.ids[42]
        driver.get(server.url + "signals?q=" + sid)
        # The live stream updates the row: the page counts the messages it received.
        wait_for("live updates", lambda: int(driver.find_element("css selector", "body").get_attribute(
            "data-updates") or 0) >= 1, 30)
        assert _text(driver, 'tr[data-row="42"] .value') == "42"
        assert _text(driver, 'tr[data-row="42"] .score') == "0.042"
        screenshot(driver, "smoke-signals")


@pytest.mark.slow
def test_alarm_acknowledge_and_shelve_in_browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from selenium.webdriver.common.by import By

    monkeypatch.setenv(USERS_ENV, f"op operator {hash_password(PASSWORD)}")
    with served_console(tmp_path, users_env=USERS_ENV) as (server, daemon), \
            chromium(tmp_path / "profile") as driver:
        driver.get(server.url + "alarms")
        _login(driver, "op", PASSWORD)
        driver.get(server.url + "alarms")
        row = 'table#open-alarms tr[data-alarm]'
        assert "unacknowledged" in _text(driver, row)
        _click(driver, row + " button.ack")
        wait_for("the acknowledge", lambda: "applied" in _text(driver, "#action-result"), 30)
        assert "acknowledged" in _text(driver, row) and "unacknowledged" not in _text(driver, row)
        driver.find_element(By.CSS_SELECTOR, row + " input[name=reason]").send_keys("maintenance on it")
        _click(driver, row + " button.shelve")
        wait_for("the shelve", lambda: "shelve" in _text(driver, "#action-result"), 30)
        assert "shelved until" in _text(driver, row)
        screenshot(driver, "alarms")
        audits = [d for d in daemon.emitted if d["service"] == "alarms"]
        assert [(d["action"], d["outcome"], d["actor"]) for d in audits] == [("ack", "applied", "op"),
                                                                            ("shelve", "applied", "op")]
        assert audits[1]["reason"] == "maintenance on it"


def _login(driver: Any, user: str, password: str) -> None:
    from selenium.webdriver.common.by import By

    wait_for("the login form", lambda: driver.find_elements(By.ID, "password"), 30)
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "login").click()
    wait_for("the console after login", lambda: driver.find_elements(By.CSS_SELECTOR, "header nav"), 30)


def _influx_values(pipe: Pipeline, sid: str, since_ns: int) -> list[float]:
    q = f"SELECT value FROM samples WHERE signal = '{sid}' AND time >= {since_ns}"
    doc = _influx_query(pipe.influx_url, q, pipe.database)
    out: list[float] = []
    for result in doc.get("results", []):
        for series in result.get("series", []) or []:
            out += [float(v[1]) for v in series["values"] if v[1] is not None]
    return out


@pytest.mark.slow
def test_console_in_browser_against_running_edge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from selenium.webdriver.common.by import By

    monkeypatch.setenv(USERS_ENV, f"op operator {hash_password(PASSWORD)}")
    pipe = Pipeline(ROOT / "configs" / "dev", tmp_path / "state",
                    edge_overrides={"console": {"host": "127.0.0.1", "port": 0, "users_env": USERS_ENV}})
    try:
        pipe.start()
        url = pipe.console_url
        assert url is not None
        with chromium(tmp_path / "profile") as driver:
            # Login: a wrong password is refused on the page, the right one opens the overview.
            driver.get(url)
            wait_for("the login form", lambda: driver.find_elements(By.ID, "password"), 30)
            driver.find_element(By.ID, "user").send_keys("op")
            driver.find_element(By.ID, "password").send_keys("not-the-password")
            driver.find_element(By.ID, "login").click()
            wait_for("the refusal", lambda: "Wrong user or password" in _text(driver, "#login-error"), 30)
            screenshot(driver, "login-refused")
            _login(driver, "op", PASSWORD)
            # Overview: every source the edge reads, connected, with counts between two scrapes of /metrics.
            before = scrape(pipe.edge_metrics_port)
            driver.get(url)
            n_sources = int(pipe_health(pipe)["sources"])
            wait_for("every source connected and counting", lambda: _text(driver, "#sources").count("connected")
                     == n_sources and "–" not in _rates(driver), 60)
            shown = sum(int(t.replace(",", "")) for t in _texts(driver, "#sources .good"))
            after = scrape(pipe.edge_metrics_port)
            good = "plantwire_edge_source_samples_good_total"
            assert before[good] <= shown <= after[good], (before[good], shown, after[good])
            assert _text(driver, "#condition") == "ok" and _text(driver, "#mqtt") == "connected"
            screenshot(driver, "overview")
            # Signals: a search answers well under a second; a live value is one the edge read (as stored).
            driver.get(url + "signals")
            box = driver.find_element(By.ID, "q")
            t0 = time.monotonic()
            box.send_keys("press03")
            wait_for("the search result", lambda: "press03" in _text(driver, "#result-count"), 10)
            assert time.monotonic() - t0 < 2.0  # includes the page's 250 ms typing pause and the browser
            ms = float(re.search(r"\(([\d.]+) ms\)", _text(driver, "#result-count")).group(1))  # type: ignore[union-attr]
            assert ms < 100.0
            # A signal whose value is not a whole number (a measurement, not a running flag or counter).
            rows = driver.execute_script(
                "return Array.from(document.querySelectorAll('#signals tr[data-row]'),"
                " r => [r.querySelector('.sid').innerText, r.querySelector('.value').innerText]);")
            sid = next(name for name, value in rows if "." in value)
            since = time.time_ns() - 30_000_000_000
            driver.get(url + "signals?q=" + sid)
            wait_for("three live updates", lambda: int(driver.find_element(By.TAG_NAME, "body").get_attribute(
                "data-updates") or 0) >= 3, 30)
            shown_value = float(_text(driver, "#signals tr[data-row] .value"))
            assert _text(driver, "#signals tr[data-row] .quality") == "good"
            screenshot(driver, "signals")
            wait_for(f"{sid} = {shown_value} in InfluxDB", lambda: any(
                math.isclose(v, shown_value, rel_tol=1e-5, abs_tol=1e-9) for v in _influx_values(pipe, sid, since)), 60)
            # Configuration: the running config, and an upload checked without being applied.
            driver.get(url + "config")
            assert '"gateway_id": "gw-dev-01"' in _text(driver, "#running-config") or "gateway_id" in _text(
                driver, "#running-config")
            driver.find_element(By.ID, "file").send_keys(str(ROOT / "configs" / "dev" / "edge.yaml"))
            driver.find_element(By.ID, "check").click()
            wait_for("the check result", lambda: _text(driver, "#check-result"), 30)
            assert "reading 1000 signals" in _text(driver, "#check-result")
            screenshot(driver, "config")
            driver.get(url + "alarms")
            wait_for("the alarms page", lambda: driver.find_elements(By.ID, "open-alarms"), 30)
            screenshot(driver, "alarms-running-edge")
        summary = pipe.stop()
        assert summary.lost == 0 and summary.signals_mismatched == 0, summary.mismatches
    finally:
        pipe.close()


def pipe_health(pipe: Pipeline) -> dict[str, Any]:
    from plantwire.pipeline import health

    return health(pipe.edge_metrics_port)


def _rates(driver: Any) -> str:

    return " ".join(_texts(driver, "#sources .rate"))


@pytest.mark.slow
def test_demo_prints_the_console_address_and_it_works(tmp_path: Path) -> None:
    """``plantwire demo`` with the shipped demo's ``console:`` section (on the dev plant, for time): it prints
    the console's address, and the overview there shows the running edge's sources, connected."""
    import os
    import signal
    import subprocess
    import sys

    import yaml

    d = tmp_path / "demo-config"
    d.mkdir()
    plant = yaml.safe_load((ROOT / "configs" / "dev" / "plant.yaml").read_text())
    plant["imports"] = [str((ROOT / "configs" / "dev" / p).resolve()) for p in plant.get("imports", [])]
    (d / "plant.yaml").write_text(yaml.safe_dump(plant))
    edge = yaml.safe_load((ROOT / "configs" / "dev" / "edge.yaml").read_text())
    edge["console"] = yaml.safe_load((ROOT / "configs" / "demo" / "edge.yaml").read_text())["console"]
    (d / "edge.yaml").write_text(yaml.safe_dump(edge))
    (d / "cloud.yaml").write_text((ROOT / "configs" / "dev" / "cloud.yaml").read_text())
    log_path = tmp_path / "demo.log"
    with open(log_path, "wb") as log:
        demo = subprocess.Popen([sys.executable, "-m", "plantwire.cli", "demo", str(d), "--state-dir",
                                 str(tmp_path / "state")], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                start_new_session=True)
    try:
        def printed() -> str | None:
            assert demo.poll() is None, log_path.read_text()[-3000:]
            m = re.search(r"edge console (http://\S+)", log_path.read_text())
            return m.group(1) if m else None

        url = wait_for("the console's address", printed, 180)
        with chromium(tmp_path / "profile") as driver:
            driver.get(url)
            wait_for("the overview with every source connected", lambda: _text(driver, "#sources").count(
                "connected") == 6 and "down" not in _text(driver, "#sources"), 60)
            assert "operator" in _text(driver, "header")  # the demo's loopback visitor may act
            screenshot(driver, "demo-overview")
        os.kill(demo.pid, signal.SIGINT)
        assert demo.wait(120) == 0, log_path.read_text()[-3000:]
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(30)
