"""What the edge console costs the edge: CPU per sample with the console off, on with nobody watching,
and with five headless Chromium browsers on the signals page (live values over server-sent events),
on the 15,000-signal demo plant at 1 Hz; plus the tap's cost per frame and the search time in-process.

Phases, each ``--window`` seconds after ``--warmup``, on one running pipeline (simulator, edge, broker,
ingestor, InfluxDB), alternated ``--rounds`` times: ``idle`` (console on, nobody watching) and ``5 browsers``
(each on ``/signals?q=QUERY``, 100 rows followed live, the sparkline ring filled); one more ``idle``; then the
edge is restarted with the console section removed: ``off``. CPU is the edge process's user + system time
(/proc) over samples read in the window. Run with the project's venv; needs Debian's chromium and
chromium-driver (``make deps``):

    .venv/bin/python bench/console_load.py --window 60
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from plantwire import procstat  # noqa: E402
from plantwire.lifeline import stop_on_signals  # noqa: E402
from plantwire.pipeline import Pipeline, scrape  # noqa: E402

READ = "plantwire_edge_samples_read_total"


def micro(n_signals: int = 15_000, points: int = 180, reps: int = 200) -> dict[str, float]:
    """The tap's cost per frame (all signals once) without and with the sparkline ring, and search times."""
    from edge.console.tap import SignalIndex, SignalTap
    from plantwire.configfile import load_plant
    from plantwire.plant import expand

    rng = np.random.default_rng(0)
    sig = rng.permutation(n_signals).astype(np.uint32)
    ts = np.full(n_signals, time.time_ns(), dtype=np.int64)
    val = rng.normal(size=n_signals)
    q = np.zeros(n_signals, dtype=np.uint8)
    score = rng.random(n_signals)
    out: dict[str, float] = {}
    for label, watched in (("tap_update_us_per_frame_nobody_watching", False),
                           ("tap_update_us_per_frame_watched", True)):
        tap = SignalTap(n_signals, points, 60.0)
        if watched:
            tap.watch()
        tap.update(ts, sig, val, q, score)
        t0 = time.perf_counter()
        for _ in range(reps):
            tap.update(ts, sig, val, q, score)
        out[label] = (time.perf_counter() - t0) / reps * 1e6
        if watched:
            out["sparkline_ring_mb"] = tap.ring_bytes / 1e6
    table = expand(load_plant(ROOT / "configs" / "demo" / "plant.yaml"))
    idx = SignalIndex(table)
    for query in ("press", "line2.press03", "quality:bad", "machine:compressor0 temp"):
        t0 = time.perf_counter()
        for _ in range(20):
            idx.search(query, q, 100)
        out[f"search_ms[{query}]"] = (time.perf_counter() - t0) / 20 * 1e3
    out["signals"] = len(table)
    return out


@contextmanager
def browser(profile: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--user-data-dir={profile}", "--window-size=1400,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"))
    try:
        yield driver
    finally:
        driver.quit()


def _updates(driver: Any) -> int:
    """Live-value messages the page received (counted by the console's script)."""
    return int(driver.find_element("tag name", "body").get_attribute("data-updates") or 0)


def window(pipe: Pipeline, seconds: float) -> dict[str, float]:
    pid = pipe.procs["edge"].pid
    c0, r0 = procstat.sample(pid), scrape(pipe.edge_metrics_port)[READ]
    time.sleep(seconds)
    c1, r1 = procstat.sample(pid), scrape(pipe.edge_metrics_port)[READ]
    samples = r1 - r0
    return {"samples_per_s": samples / seconds, "cpu_us_per_sample": (c1.cpu_s - c0.cpu_s) / samples * 1e6,
            "cpu_percent": (c1.cpu_s - c0.cpu_s) / seconds * 100, "rss_mb": c1.rss_bytes / 1e6}


def watched(pipe: Pipeline, url: str, n: int, query: str, seconds: float) -> dict[str, float]:
    """One window with ``n`` headless browsers on the signals page, each following its rows live."""
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp, ExitStack() as stack:
        drivers = [stack.enter_context(browser(Path(tmp) / f"b{i}")) for i in range(n)]
        for d in drivers:
            d.get(f"{url}signals?q={query}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(_updates(d) > 0 for d in drivers):
            time.sleep(0.5)
        time.sleep(5)
        u0 = [_updates(d) for d in drivers]
        w = window(pipe, seconds)
        w["updates_per_browser_per_s_min"] = min(_updates(d) - b for d, b in zip(drivers, u0, strict=True)) / seconds
        m = scrape(pipe.edge_metrics_port)
        w["console_streams"] = m.get("plantwire_edge_console_streams", 0)
        w["console_ring_mb"] = m.get("plantwire_edge_console_sparkline_ring_bytes", 0) / 1e6
        w["streams_dropped"] = m.get("plantwire_edge_console_streams_dropped_total", 0)
        w["updates_skipped"] = m.get("plantwire_edge_console_updates_skipped_total", 0)
    return w


def wait_edge_ready(pipe: Pipeline, timeout_s: float = 120.0) -> None:
    from plantwire.pipeline import health

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            h = health(pipe.edge_metrics_port)
            if h.get("sources") and h.get("sources_connected") == h.get("sources"):
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError("edge did not reconnect")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "demo")
    p.add_argument("--window", type=float, default=60.0)
    p.add_argument("--warmup", type=float, default=20.0)
    p.add_argument("--browsers", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2, help="idle / browsers windows, alternated")
    p.add_argument("--query", default="press", help="signals page query (100 rows shown and followed)")
    p.add_argument("--state-dir", type=Path, default=ROOT / "state" / "bench-console")
    a = p.parse_args()
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                                         f"{platform.python_version()}", "micro": micro()}
    print(json.dumps({"micro": result["micro"]}), flush=True)
    shutil.rmtree(a.state_dir, ignore_errors=True)
    pipe = Pipeline(a.config, a.state_dir, edge_overrides={"console": {"host": "127.0.0.1", "port": 0}})
    phases: dict[str, dict[str, float]] = {}
    try:
        with stop_on_signals():
            pipe.start()
            url = pipe.console_url
            assert url is not None
            time.sleep(a.warmup)
            for r in range(a.rounds):  # alternated, so the box's drift shows instead of hiding in one phase
                phases[f"idle {r + 1}"] = window(pipe, a.window)
                print(json.dumps({f"idle {r + 1}": phases[f"idle {r + 1}"]}), flush=True)
                name = f"{a.browsers} browsers {r + 1}"
                phases[name] = watched(pipe, url, a.browsers, a.query, a.window)
                print(json.dumps({name: phases[name]}), flush=True)
                time.sleep(5)
            phases[f"idle {a.rounds + 1}"] = window(pipe, a.window)
            print(json.dumps({f"idle {a.rounds + 1}": phases[f"idle {a.rounds + 1}"]}), flush=True)
            pipe.halt("edge")
            cfg = pipe.state_dir / "config" / "edge.yaml"
            doc = yaml.safe_load(cfg.read_text())
            doc.pop("console", None)
            cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
            pipe.restart("edge")
            wait_edge_ready(pipe)
            time.sleep(a.warmup)
            phases["off"] = window(pipe, a.window)
            print(json.dumps({"off": phases["off"]}), flush=True)
            pipe.stop()
    finally:
        pipe.close()
    idle = float(np.mean([v["cpu_us_per_sample"] for k, v in phases.items() if k.startswith("idle")]))
    seen = float(np.mean([v["cpu_us_per_sample"] for k, v in phases.items() if "browsers" in k]))
    result["phases"] = phases
    result["idle_cpu_us_per_sample"] = idle
    result["browsers_cpu_us_per_sample"] = seen
    result["browsers_vs_idle_percent"] = (seen / idle - 1) * 100
    result["idle_vs_off_percent"] = (idle / phases["off"]["cpu_us_per_sample"] - 1) * 100
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
