"""The edge daemon under a systemd-like supervisor: a real ``NOTIFY_SOCKET``, SIGHUP reloads, SIGTERM.

There is no systemd PID 1 here, so the test plays systemd's part: it binds the AF_UNIX datagram
socket systemd would, sets ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` and starts
``python -m plantwire.cli edge CONFIG`` against a one-device Modbus plant (a real pymodbus server
in a thread of this process) and the real ``mosquitto`` fixture. It then checks what systemd would
see (READY, WATCHDOG, STOPPING, the exit code), what an operator sees on SIGHUP (a bad config is
rejected, logged and counted, the daemon carries on; a good one takes over) and what Prometheus
scrapes (names that follow its conventions).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from plantwire.ports import free_port
from plantwire.services import Mosquitto

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent

PLANT_YAML = """\
site: ops-test
templates:
  pump:
    signals:
      - {name: flow, unit: l/min, type: float32}
      - {name: pressure, unit: bar, type: float32}
      - {name: temp, unit: degC, type: int16, scale: 0.1}
devices:
  - {name: plc1, protocol: modbus, port: %(port)d, unit_id: 1}
machines:
  - {name: "pump{i:02d}", template: pump, count: 2, device: plc1}
"""

EDGE_YAML = """\
gateway_id: %(gateway)s
plant: plant.yaml
state_dir: state
mqtt: {host: 127.0.0.1, port: %(mqtt_port)d}
publish: {batch_interval_ms: 200}
modbus: {period_ms: 100, timeout_s: 0.5}
metrics: {host: 127.0.0.1, port: 0}
"""


# -- what systemd would receive ----------------------------------------------------------------------
@dataclass
class NotifySocket:
    """An AF_UNIX datagram socket in systemd's place; a thread collects every message with its time."""

    path: str
    sock: socket.socket
    messages: list[tuple[float, str]] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _receive(self) -> None:
        # Polls with a timeout so that close() can stop this thread and join it *before* the socket is closed:
        # a thread still calling recv() on a closed socket's fd number read the next test's socket, which the
        # kernel had given the same number, and swallowed that test's READY=1 (1 run in ~5 under load).
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._cond:
                self.messages.append((time.monotonic(), data.decode()))
                self._cond.notify_all()

    def count(self, field_: str) -> int:
        with self._cond:
            return sum(1 for _, m in self.messages if field_ in m.split("\n"))

    def wait_for(self, field_: str, timeout_s: float, *, at_least: int = 1, edge: Edge | None = None) -> str:
        """The last message holding ``field_`` once it has arrived ``at_least`` times, else fail
        (at once if ``edge`` exited meanwhile, with its log)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                hits = [m for _, m in self.messages if field_ in m.split("\n")]
                if len(hits) >= at_least:
                    return hits[-1]
                left = deadline - time.monotonic()
                dead = edge is not None and edge.proc.poll() is not None
                if left <= 0 or dead:
                    raise AssertionError(
                        f"{field_} x{at_least} not received in {timeout_s} s; got {self.messages}"
                        + (f"\nedge log:\n{edge.log()}" if edge is not None else "")
                    )
                self._cond.wait(min(left, 0.5))


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    # AF_UNIX paths are limited to 108 bytes: pytest's tmp_path can be longer, so use a short dir.
    with tempfile.TemporaryDirectory(prefix="pwn") as d:
        path = os.path.join(d, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        ns = NotifySocket(path, sock)
        receiver = threading.Thread(target=ns._receive, name="notify-recv", daemon=True)
        receiver.start()
        try:
            yield ns
        finally:
            ns._stop.set()
            receiver.join()
            sock.close()


# -- a tiny Modbus PLC ---------------------------------------------------------------------------------
@pytest.fixture
def modbus_port() -> Iterator[int]:
    """A pymodbus server with 16 holding registers on unit 1, on its own event loop in a thread."""
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    port = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, ModbusTcpServer] = {}

    async def serve() -> None:
        regs = [SimData(0, values=[0x4120 if a % 2 == 0 else 0 for a in range(16)], datatype=DataType.REGISTERS)]
        bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]
        device = SimDevice(id=1, simdata=(bits, bits, regs, regs))
        server = ModbusTcpServer(device, address=("127.0.0.1", port))
        holder["server"] = server
        await server.serve_forever(background=True)
        started.set()

    thread = threading.Thread(target=loop.run_forever, name="modbus-plc", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop).result(10)
    assert started.wait(10)
    try:
        yield port
    finally:
        asyncio.run_coroutine_threadsafe(holder["server"].shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


# -- the daemon ----------------------------------------------------------------------------------------
@dataclass
class Edge:
    proc: subprocess.Popen[bytes]
    config: Path
    state: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_records(self) -> list[dict[str, object]]:
        """The daemon's JSON log lines (``--log-json``); other lines (tracebacks) are skipped."""
        out = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{(self.state / 'metrics.port').read_text().strip()}"

    def scrape(self) -> str:
        with urllib.request.urlopen(self.metrics_url() + "/metrics", timeout=5) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return str(resp.read().decode())


def write_edge(dir_: Path, *, gateway: str, mqtt_port: int, modbus_port: int) -> Path:
    (dir_ / "plant.yaml").write_text(PLANT_YAML % {"port": modbus_port})
    cfg = dir_ / "edge.yaml"
    tmp = dir_ / "edge.yaml.tmp"
    tmp.write_text(EDGE_YAML % {"gateway": gateway, "mqtt_port": mqtt_port})
    tmp.replace(cfg)  # as an operator's config management would: never a half-written file
    return cfg


@pytest.fixture
def edge(tmp_path: Path, notify_socket: NotifySocket, mosquitto: Mosquitto, modbus_port: int) -> Iterator[Edge]:
    cfg = write_edge(tmp_path, gateway="gw-a", mqtt_port=mosquitto.port, modbus_port=modbus_port)
    env = dict(os.environ, NOTIFY_SOCKET=notify_socket.path, WATCHDOG_USEC="2000000", PYTHONUNBUFFERED="1")
    env.pop("WATCHDOG_PID", None)
    log_path = tmp_path / "edge.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "plantwire.cli", "edge", str(cfg), "--log-json"],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    daemon = Edge(proc, cfg, tmp_path / "state", log_path)
    try:
        yield daemon
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def wait_until(cond: Callable[[], object], timeout_s: float, what: str, edge: Edge | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if edge is not None and edge.proc.poll() is not None:
            raise AssertionError(f"edge exited with {edge.proc.returncode} while waiting for {what}:\n{edge.log()}")
        if time.monotonic() > deadline:
            tail = f":\n{edge.log()}" if edge else ""
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}{tail}")
        time.sleep(0.05)


# -- Prometheus text format ----------------------------------------------------------------------------
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)(?: (-?\d+))?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')
#: Prometheus wants base units (seconds, bytes) and no unit spelt another way.
_NON_BASE_UNITS = ("_ms", "_us", "_ns", "_milliseconds", "_microseconds", "_minutes", "_hours", "_days",
                   "_kb", "_mb", "_gb", "_kilobytes", "_megabytes", "_percent")


@dataclass
class Family:
    kind: str
    help: str
    samples: dict[tuple[tuple[str, str], ...], float] = field(default_factory=dict)


def parse_prometheus(text: str) -> dict[str, Family]:
    """Parse the text exposition format strictly: fails on a duplicate family or series, an
    unknown type, a sample without its ``# TYPE``, an unparsable line or value."""
    families: dict[str, Family] = {}
    helps: dict[str, str] = {}
    assert text.endswith("\n"), "exposition must end with a newline"
    for n, line in enumerate(text.splitlines(), 1):
        if not line:
            continue
        if line.startswith("# HELP "):
            name, _, help_ = line[7:].partition(" ")
            assert name not in helps, f"line {n}: second HELP for {name}"
            helps[name] = help_
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), f"line {n}: type {kind!r}"
            assert name not in families, f"line {n}: duplicate metric family {name}"
            families[name] = Family(kind, helps.get(name, ""))
            continue
        if line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"line {n}: not a sample line: {line!r}"
        name, labels_raw, value = m.group(1), m.group(2) or "", m.group(3)
        family = families.get(name) or families.get(re.sub(r"_(bucket|sum|count)$", "", name))
        assert family is not None, f"line {n}: sample {name} has no # TYPE before it"
        labels = tuple(sorted(_LABEL.findall(labels_raw)))
        assert len(labels) == labels_raw.count('="'), f"line {n}: bad labels {labels_raw!r}"
        assert len({k for k, _ in labels}) == len(labels), f"line {n}: repeated label name"
        key = labels if name in families else (("__name__", name), *labels)  # a histogram's _bucket/_sum/_count
        assert key not in family.samples, f"line {n}: duplicate series {name}{{{labels_raw}}}"
        family.samples[key] = float(value)  # raises on a malformed value
    return families


def check_conventions(families: dict[str, Family], prefix: str) -> list[str]:
    """Every naming rule of https://prometheus.io/docs/practices/naming/ we can check mechanically."""
    problems = []
    for name, fam in families.items():
        if not name.startswith(prefix + "_"):
            problems.append(f"{name}: not under the {prefix}_ namespace")
        if fam.kind == "counter" and name.endswith(("_bucket", "_sum", "_count")):
            problems.append(f"{name}: histogram series exposed as a counter family (# TYPE base histogram)")
        elif fam.kind == "counter" and not name.endswith("_total"):
            problems.append(f"{name}: a counter must end in _total")
        if fam.kind != "counter" and name.endswith("_total"):
            problems.append(f"{name}: only counters end in _total (it is a {fam.kind})")
        base = name.removesuffix("_total")
        if any(base.endswith(u) or f"{u}_" in base for u in _NON_BASE_UNITS):
            problems.append(f"{name}: not a base unit (use _seconds, _bytes, _ratio)")
        if name != name.lower():
            problems.append(f"{name}: not snake_case")
        if not fam.help:
            problems.append(f"{name}: no HELP text")
        if fam.kind == "counter" and any(v < 0 for v in fam.samples.values()):
            problems.append(f"{name}: negative counter")
    return problems


def test_prometheus_parser_rejects_what_it_should() -> None:
    """The checks below are only as good as this parser: make sure it fails on broken expositions."""
    good = "# HELP p_x_total X.\n# TYPE p_x_total counter\np_x_total{a=\"1\"} 3\n"
    assert parse_prometheus(good)["p_x_total"].samples == {(("a", "1"),): 3.0}
    for bad in (
        good + "# TYPE p_x_total counter\n",  # duplicate family
        good + "p_x_total{a=\"1\"} 4\n",  # duplicate series
        "p_y 1\n",  # no TYPE
        "# TYPE p_y gauge\np_y one\n",  # bad value
    ):
        with pytest.raises((AssertionError, ValueError)):
            parse_prometheus(bad)
    assert check_conventions(parse_prometheus("# HELP p_c C.\n# TYPE p_c counter\np_c 1\n"), "p")
    hist_as_counters = "# HELP p_s_bucket S.\n# TYPE p_s_bucket counter\np_s_bucket{le=\"+Inf\"} 1\n"
    assert "histogram" in check_conventions(parse_prometheus(hist_as_counters), "p")[0]
    hist = "# HELP p_s S.\n# TYPE p_s histogram\np_s_bucket{le=\"+Inf\"} 1\np_s_sum 0.5\np_s_count 1\n"
    assert not check_conventions(parse_prometheus(hist), "p")
    assert check_conventions(parse_prometheus("# HELP p_lag_ms L.\n# TYPE p_lag_ms gauge\np_lag_ms 1\n"), "p")
    assert check_conventions(parse_prometheus("# HELP p_g_total G.\n# TYPE p_g_total gauge\np_g_total 1\n"), "p")
    assert not check_conventions(parse_prometheus(good), "p")


# -- the tests -----------------------------------------------------------------------------------------
def test_edge_notifies_systemd_reloads_on_sighup_and_stops_cleanly(
    edge: Edge, notify_socket: NotifySocket, mosquitto: Mosquitto, modbus_port: int
) -> None:
    # READY=1 once the Modbus source is connected (numba compiles on a cold cache: allow for it).
    ready = notify_socket.wait_for("READY=1", 90, edge=edge)
    assert "STATUS=all sources connected" in ready.split("\n"), ready
    # The supervise loop pets the watchdog at least every WATCHDOG_USEC/2 (1 s here).
    before = notify_socket.count("WATCHDOG=1")
    notify_socket.wait_for("WATCHDOG=1", 5, at_least=before + 2, edge=edge)
    wait_until(lambda: (edge.state / "metrics.port").exists(), 10, "metrics.port", edge)

    # Prometheus: a strict parse and the naming conventions.
    def samples_read() -> float:
        fams = parse_prometheus(edge.scrape())
        return sum(fams["plantwire_edge_samples_read_total"].samples.values())

    wait_until(lambda: samples_read() > 0, 15, "samples read", edge)
    families = parse_prometheus(edge.scrape())
    assert check_conventions(families, "plantwire_edge") == []
    assert families["plantwire_edge_source_connected"].samples == {(("source", "plc1"),): 1.0}
    assert families["plantwire_edge_config_reload_failures_total"].samples == {(): 0.0}
    with urllib.request.urlopen(edge.metrics_url() + "/health", timeout=5) as resp:
        health = json.loads(resp.read())
        assert resp.status == 200 and resp.headers["Content-Type"] == "application/json"
    assert health["status"] == "ok" and health["gateway"] == "gw-a" and health["sources_connected"] == 1

    # SIGHUP with a bad config: rejected with the place of the error, counted, the daemon carries on.
    good_text = edge.config.read_text()
    bad = edge.config.with_suffix(".bad")
    bad.write_text(good_text.replace("gateway_id: gw-a", "gateway_id: 'gw a!'").replace("batch_interval_ms: 200",
                                                                                      "batch_interval_ms: 1"))
    bad.replace(edge.config)
    port_before = (edge.state / "metrics.port").read_text()
    edge.proc.send_signal(signal.SIGHUP)

    def failures() -> float:
        fams = parse_prometheus(edge.scrape())
        return fams["plantwire_edge_config_reload_failures_total"].samples[()]

    wait_until(lambda: failures() == 1.0, 10, "reload failure counted", edge)
    rejected = [r for r in edge.log_records() if "reload rejected" in str(r.get("msg"))]
    assert rejected and rejected[0]["level"] == "error", edge.log()
    assert "gateway_id" in str(rejected[0]["msg"]) and "batch_interval_ms" in str(rejected[0]["msg"])
    time.sleep(0.5)
    assert edge.proc.poll() is None, edge.log()
    assert (edge.state / "metrics.port").read_text() == port_before  # the same gateway still serves
    n = samples_read()
    wait_until(lambda: samples_read() > n, 5, "samples still flowing after a rejected reload", edge)

    # SIGHUP with a valid config (another gateway id): the new config takes over, on the broker too.
    seen: list[str] = []
    sub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="ops-test-sub")
    sub.on_message = lambda c, u, msg: seen.append(msg.topic)
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe("plantwire/v1/ops-test/gw-b/telemetry", qos=1)
    sub.loop_start()
    try:
        write_edge(edge.config.parent, gateway="gw-b", mqtt_port=mosquitto.port, modbus_port=modbus_port)
        edge.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: seen, 20, "telemetry under the reloaded gateway id", edge)
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert any("reload: new config is valid" in str(r.get("msg")) for r in edge.log_records())
    assert edge.proc.poll() is None
    # The failure count survives the switch-over: it belongs to the process, not to one config.
    assert failures() == 1.0
    assert check_conventions(parse_prometheus(edge.scrape()), "plantwire_edge") == []

    # SIGTERM: STOPPING=1, a clean exit 0 and the final stats written.
    watchdogs = notify_socket.count("WATCHDOG=1")
    edge.proc.send_signal(signal.SIGTERM)
    code = edge.proc.wait(60)
    assert code == 0, edge.log()
    notify_socket.wait_for("STOPPING=1", 1)
    stopping_at = next(t for t, m in notify_socket.messages if "STOPPING=1" in m.split("\n"))
    ready_at = next(t for t, m in notify_socket.messages if "READY=1" in m.split("\n"))
    assert ready_at < stopping_at and watchdogs >= 3
    stats = json.loads((edge.state / "stats.json").read_text())
    assert stats["gateway"] == "gw-b" and stats["samples_read"] > 0
    assert not [r for r in edge.log_records() if r["level"] in ("error", "critical") and "reload" not in str(r["msg"])]


def retained_health(broker: Mosquitto, gateway: str, timeout_s: float = 5.0) -> dict[str, object]:
    """The retained health message of ``gateway``, as a newly connecting dashboard would get it."""
    got: list[dict[str, object]] = []
    done = threading.Event()

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            got.append(json.loads(msg.payload))
            done.set()

    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"health-{time.time_ns()}")
    c.on_message = on_message
    c.connect("127.0.0.1", broker.port)
    c.subscribe(f"plantwire/v1/ops-test/{gateway}/health", qos=1)
    c.loop_start()
    try:
        assert done.wait(timeout_s), f"no retained health for {gateway}"
    finally:
        c.loop_stop()
        c.disconnect()
    return got[0]


def test_edge_health_is_retained_and_the_will_marks_a_dead_gateway_offline(
    edge: Edge, notify_socket: NotifySocket, mosquitto: Mosquitto
) -> None:
    notify_socket.wait_for("READY=1", 90, edge=edge)
    health = retained_health(mosquitto, "gw-a")
    assert health["status"] == "online" and health["gateway"] == "gw-a"
    # The periodic status carries what an operator needs without scraping metrics.
    deadline = time.monotonic() + 15
    while "log_records" not in (health := retained_health(mosquitto, "gw-a")):
        assert time.monotonic() < deadline, f"no periodic status on the health topic: {health}"
        time.sleep(0.2)
    for key in ("sources", "sources_connected", "sources_down", "log_bytes", "oldest_unacked_age_s",
                "dropped_samples", "last_cloud_ack_age_s", "condition"):
        assert key in health, key
    edge.proc.kill()  # a crash: no clean disconnect, the broker publishes the last will
    edge.proc.wait(10)
    deadline = time.monotonic() + 10
    while (health := retained_health(mosquitto, "gw-a"))["status"] != "offline":
        assert time.monotonic() < deadline, f"still {health} after the gateway died"
        time.sleep(0.2)


def test_edge_marks_itself_offline_on_a_clean_stop(edge: Edge, notify_socket: NotifySocket,
                                                   mosquitto: Mosquitto) -> None:
    notify_socket.wait_for("READY=1", 90, edge=edge)
    assert retained_health(mosquitto, "gw-a")["status"] == "online"
    edge.proc.send_signal(signal.SIGTERM)
    assert edge.proc.wait(60) == 0
    assert retained_health(mosquitto, "gw-a")["status"] == "offline"
