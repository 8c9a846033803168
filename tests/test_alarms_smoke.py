"""The alarm layer on real servers: simulator (one Modbus PLC, one compressor), edge daemon, Mosquitto.

A transport fault (the PLC answers every read with an exception) makes the machine's samples bad; the
edge raises data-quality alarms, which roll up into one incident on the events lane and on the incidents
topic. An operator's ack command is applied, answered on cmdresult and audited on the events lane.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.alarms.engine import SEQ_RESTART_GAP
from plantwire import wire
from plantwire.ports import free_port
from plantwire.services import Mosquitto

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
SITE, GATEWAY, MACHINE = "alarm-smoke", "gw-alarms", "line1.compressor01"

PLANT = f"""\
site: {SITE}
imports: [{REPO / 'configs' / 'templates' / 'ac_factory.yaml'}]
devices:
  - {{name: plc1, protocol: modbus, port: %(port)d, unit_id: 1}}
machines:
  - {{name: "{MACHINE}", template: compressor, device: plc1, area: line1, criticality: high}}
"""

EDGE = f"""\
gateway_id: {GATEWAY}
plant: plant.yaml
state_dir: state
mqtt: {{host: 127.0.0.1, port: %(mqtt)d}}
publish: {{batch_interval_ms: 200}}
modbus: {{period_ms: 200, timeout_s: 0.5}}
metrics: {{host: 127.0.0.1, port: 0}}
analytics: {{quality: {{bad_s: 1.0}}}}
"""


class Listener:
    """Everything the gateway publishes, decoded, collected by paho's thread."""

    def __init__(self, port: int) -> None:
        self.events: list[dict[str, Any]] = []
        self.incidents: list[dict[str, Any]] = []
        self.results: list[dict[str, Any]] = []
        self.telemetry = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="alarm-smoke-listener",
                                  protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"plantwire/v1/{SITE}/{GATEWAY}/#", qos=1)
        self.client.loop_start()
        assert self._subscribed.wait(10), "listener not subscribed"

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        lane = msg.topic.rsplit("/", 1)[1]
        with self._lock:
            if lane == "events":
                self.events += wire.decode_events(msg.payload)[2]
            elif lane == "incidents":
                self.incidents.append(json.loads(msg.payload))
            elif lane == "telemetry":
                self.telemetry += 1
            elif lane == "cmdresult":
                self.results.append(json.loads(msg.payload))

    def find(self, what: str, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        with self._lock:
            return next((d for d in getattr(self, what) if pred(d)), None)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_for(get: Callable[[], Any], timeout_s: float, what: str, procs: list[tuple[str, subprocess.Popen[bytes],
                                                                                     Path]]) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = get()
        if got:
            return got
        for name, p, log in procs:
            if p.poll() is not None:
                raise AssertionError(f"{name} exited ({p.returncode}) waiting for {what}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {n}:\n{log.read_text()[-2000:]}" for n, _, log in procs)
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{tails}")
        time.sleep(0.05)


@pytest.fixture
def plant_dir(tmp_path: Path) -> Iterator[tuple[Path, int, int]]:
    port, control = free_port(), free_port()
    (tmp_path / "plant.yaml").write_text(PLANT % {"port": port})
    yield tmp_path, port, control


def _start(argv: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as f:
        return subprocess.Popen([sys.executable, "-m", "plantwire.cli", *argv], cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))


def _stop(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def test_fault_raises_incident_and_ack_is_applied(plant_dir: tuple[Path, int, int], mosquitto: Mosquitto) -> None:
    d, _, control = plant_dir
    (d / "edge.yaml").write_text(EDGE % {"mqtt": mosquitto.port})
    ready = d / "sim.ready"
    sim = _start(["sim", str(d / "plant.yaml"), "--anomaly-rate", "0", "--wear-fraction", "0", "--ready-file",
                  str(ready), "--control-port", str(control)], d / "sim.log", REPO)
    procs: list[tuple[str, subprocess.Popen[bytes], Path]] = [("sim", sim, d / "sim.log")]
    listener = Listener(mosquitto.port)
    edge = None
    try:
        wait_for(ready.exists, 30, "the simulator", procs)
        edge = _start(["edge", str(d / "edge.yaml")], d / "edge.log", REPO)
        procs.append(("edge", edge, d / "edge.log"))
        # the fault comes once the edge has read good samples (a signal never seen good raises no BAD alarm)
        wait_for(lambda: listener.telemetry >= 2, 30, "the edge's telemetry", procs)
        fault = {"transport": [{"device": "plc1", "kind": "exception", "at_s": 0, "duration_s": 120}]}
        req = urllib.request.Request(f"http://127.0.0.1:{control}/faults", data=json.dumps(fault).encode(),
                                     method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200

        def opened(doc: dict[str, Any]) -> bool:
            return doc.get("type", "incident") == "incident" and doc["machine"] == MACHINE and doc["seq"] == 1

        inc = wait_for(lambda: listener.find("events", opened), 30, "an incident on the events lane", procs)
        assert inc["transition"] == "open" and inc["area"] == "line1" and inc["active"] is True
        assert "bad" in inc["kinds"] and inc["signals"] and inc["priority"] == "low"  # data quality: low
        assert inc["id"].startswith(MACHINE + "@")
        pub = wait_for(lambda: listener.find("incidents", opened), 10, "the incident on the incidents topic", procs)
        assert pub["id"] == inc["id"] and pub["gateway"] == GATEWAY and pub["site"] == SITE
        # signal-level alarms still flow beside it
        assert listener.find("events", lambda e: e.get("type") == "alarm" and e.get("kind") == "bad") is not None

        cmd = {"id": "req-1", "actor": "ann", "ts_ns": time.time_ns(), "action": "ack", "incident": inc["id"],
               "reason": "seen, PLC team informed"}
        info = listener.client.publish(f"plantwire/cmd/v1/{SITE}/{GATEWAY}/alarms", json.dumps(cmd), qos=1)
        info.wait_for_publish(10)
        res = wait_for(lambda: listener.find("results", lambda r: r["id"] == "req-1"), 20, "the command result",
                       procs)
        assert res["outcome"] == "applied" and res["service"] == "alarms" and res["action"] == "ack", res
        ack = wait_for(lambda: listener.find("events", lambda e: e.get("type") == "incident" and e["id"] == inc["id"]
                                             and e["transition"] == "ack"), 10, "the ack transition", procs)
        assert ack["acked"] is True and ack["actor"] == "ann" and ack["seq"] > 1
        audit = wait_for(lambda: listener.find("events", lambda e: e.get("type") == "audit"), 10, "the audit", procs)
        assert audit["request_id"] == "req-1" and audit["outcome"] == "applied" and audit["target"] == inc["id"]
        bad = listener.client.publish(f"plantwire/cmd/v1/{SITE}/{GATEWAY}/alarms", b"{oops", qos=1)
        bad.wait_for_publish(10)
        wait_for(lambda: listener.find("events", lambda e: e.get("type") == "audit" and e["outcome"] == "refused"),
                 10, "the refusal's audit", procs)
        assert edge.poll() is None, "the edge must survive a bad command"
    finally:
        listener.close()
        if edge is not None:  # killed: a clean stop would wait 5 s for a cloud ack that no ingestor here sends
            edge.kill()
            edge.wait(10)
        _stop(sim)


@pytest.mark.slow
def test_incident_survives_edge_kill_without_loss_or_reopen(plant_dir: tuple[Path, int, int],
                                                            mosquitto: Mosquitto) -> None:
    """kill -9 of the edge while an incident is open: the next run continues it (same id, next seq), nothing
    is lost (every seq from 1 arrives; a replayed document is identical) and no new incident opens."""
    d, _, control = plant_dir
    (d / "edge.yaml").write_text(EDGE % {"mqtt": mosquitto.port} + "alarms: {restart_grace_s: 15, clear_delay_s: 5}\n")
    ready = d / "sim.ready"
    sim = _start(["sim", str(d / "plant.yaml"), "--anomaly-rate", "0", "--wear-fraction", "0", "--ready-file",
                  str(ready), "--control-port", str(control)], d / "sim.log", REPO)
    procs: list[tuple[str, subprocess.Popen[bytes], Path]] = [("sim", sim, d / "sim.log")]
    listener = Listener(mosquitto.port)
    edges: list[subprocess.Popen[bytes]] = []
    try:
        wait_for(ready.exists, 30, "the simulator", procs)
        edges.append(_start(["edge", str(d / "edge.yaml")], d / "edge.log", REPO))
        procs.append(("edge", edges[-1], d / "edge.log"))
        wait_for(lambda: listener.telemetry >= 2, 30, "the edge's telemetry", procs)
        fault = {"transport": [{"device": "plc1", "kind": "exception", "at_s": 0, "duration_s": 20}]}
        req = urllib.request.Request(f"http://127.0.0.1:{control}/faults", data=json.dumps(fault).encode(),
                                     method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
        inc = wait_for(lambda: listener.find("events", lambda e: e.get("type") == "incident"
                                             and e["machine"] == MACHINE), 30, "an incident", procs)
        edges[-1].kill()
        edges[-1].wait(10)
        procs.pop()
        edges.append(_start(["edge", str(d / "edge.yaml")], d / "edge2.log", REPO))
        procs.append(("edge (restarted)", edges[-1], d / "edge2.log"))
        cleared = wait_for(lambda: listener.find("events", lambda e: e.get("type") == "incident"
                                                 and e["id"] == inc["id"] and e["transition"] == "clear"),
                           120, "the incident's clear after the restart", procs)
        with listener._lock:
            docs = [e for e in listener.events if e.get("type") == "incident"]
        mine = [e for e in docs if e["id"] == inc["id"]]
        by_seq: dict[int, dict[str, Any]] = {}
        for e in mine:
            assert by_seq.setdefault(e["seq"], e) == e, f"seq {e['seq']} reused for another document"
        # Every seq from 1, consecutive except one jump at the restart: a restored incident's seq jumps by up to
        # SEQ_RESTART_GAP (edge/alarms/engine.py, since the lost-OPEN work: documents sent after the checkpoint may
        # have reached the cloud). Any other gap is a lost transition.
        seqs = sorted(by_seq)
        steps = [b - a for a, b in zip([0, *seqs], seqs, strict=False)]
        jumps = [x for x in steps if x != 1]
        assert len(jumps) <= 1 and all(1 < x <= SEQ_RESTART_GAP + 1 for x in jumps), f"transitions lost: {seqs}"
        assert seqs[-1] == cleared["seq"]
        opens = [e for e in docs if e["machine"] == MACHINE and e["seq"] == 1]
        # (an identical replay of a document is allowed: the write-ahead log and the outbox re-send after a kill)
        assert {e["id"] for e in opens} == {inc["id"]}, "the restart re-opened the incident instead of continuing it"
        assert "alarms start without incidents" not in (d / "edge2.log").read_text()
    finally:
        listener.close()
        for p in edges:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        _stop(sim)
