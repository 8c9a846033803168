"""Write actions end to end on real servers: the simulator (Modbus slave + OPC-UA server process), Mosquitto,
and the edge gateway; an operator commands over MQTT and an agent submits in-process.

Every outcome is checked where it shows: the answer on ``cmdresult``, the ``audit`` document on the
events lane, the metric, and the simulator itself (the written register / node, the held station).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from asyncua import Client
from paho.mqtt.enums import CallbackAPIVersion

from cloud.actions_cli import EXIT_DRY_RUN
from cloud.actions_cli import main as actions_cli
from edge.actions import ActionRequest, RequestSource
from edge.app import EdgeGateway
from edge.config import load_edge
from plantwire import wire
from plantwire.configfile import load_plant
from plantwire.plant import expand
from plantwire.ports import free_port
from plantwire.services import Mosquitto
from simulators.app import Simulator
from simulators.commands import COMMAND_BASE
from simulators.runtime import SimOptions
from tests.actions_plant import write_plant

# index of station 2's stack light among the simulator's command points (per station: hold, stack_light,
# leak_limit)
LIGHT2 = 4

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GW = "gw-act"


class Operator:
    """The cloud's operator role: publishes commands, collects answers and the events lane."""

    def __init__(self, port: int, site: str) -> None:
        self.site = site
        self.results: dict[str, dict[str, Any]] = {}
        self.audits: list[dict[str, Any]] = []
        self.online = threading.Event()
        self.lock = threading.Lock()
        self.c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"op-{time.time_ns()}")
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port)
        self.c.subscribe([(wire.topic(site, GW, "cmdresult"), 1), (wire.topic(site, GW, "events"), 1),
                          (wire.topic(site, GW, "health"), 1)])
        self.c.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            if msg.topic.endswith("/health"):
                if json.loads(msg.payload).get("status") == "online":
                    self.online.set()
            elif msg.topic.endswith("/cmdresult"):
                doc = json.loads(msg.payload)
                self.results[doc["id"]] = doc
            else:
                _, _, events = wire.decode_events(msg.payload)
                self.audits += [e for e in events if e.get("type") == "audit"]

    def command(self, rid: str, target: str, value: Any, **extra: Any) -> None:
        doc = {"id": rid, "actor": "ann", "ts_ns": time.time_ns(), "action": "write", "target": target,
               "value": value, "reason": f"test {rid}", **extra}
        self.c.publish(f"plantwire/cmd/v1/{self.site}/{GW}/actions", json.dumps(doc), qos=1)

    async def result(self, rid: str, timeout_s: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if rid in self.results:
                    return self.results[rid]
            await asyncio.sleep(0.05)
        raise AssertionError(f"no cmdresult for {rid} within {timeout_s} s (have {sorted(self.results)})")

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


async def wait_for(cond: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


def write_edge(tmp: Path, plant: Path, mqtt_port: int, opc_ns: str) -> Path:
    cfg = {
        "gateway_id": GW, "plant": str(plant), "state_dir": str(tmp / "state"),
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port},
        "publish": {"batch_interval_ms": 200, "flush_phase_ms": 50},
        "modbus": {"period_ms": 200, "timeout_s": 0.5},
        "opcua": {"publishing_interval_ms": 200, "reconnect_initial_s": 0.5, "reconnect_max_s": 2.0},
        "metrics": {"port": 0},
        "actions": {"mode": "write", "targets": [
            {"name": "hold1", "device": "act-plc", "address": COMMAND_BASE, "allowed": [0, 1], "enabled": True,
             "rate_limit": {"writes": 1, "per_s": 600}},
            {"name": "light1", "device": "act-plc", "address": COMMAND_BASE + 1, "min": 0, "max": 3,
             "enabled": True, "mode": "dry_run"},
            {"name": "hold2", "device": "act-plc", "address": COMMAND_BASE + 2, "allowed": [0, 1]},
            {"name": "light1_cli", "device": "act-plc", "address": COMMAND_BASE + 1, "min": 0, "max": 3,
             "enabled": True, "mode": "dry_run"},  # the operator CLI's dry run (light1's rate limit is spent)
            {"name": "light2", "device": "act-plc", "address": COMMAND_BASE + 3, "min": 0, "max": 3,
             "enabled": True, "rate_limit": {"writes": 10, "per_s": 1}},
            {"name": "opc_hold", "device": "act-opc", "node": f"nsu={opc_ns};s=line9.leak_opc01.cmd.hold",
             "allowed": [0, 1], "enabled": True},
        ]},
    }
    path = tmp / "edge.yaml"
    path.write_text(json.dumps(cfg))
    return path


def test_operator_and_agent_writes_end_to_end(tmp_path: Path, mosquitto: Mosquitto) -> None:
    plant_path = write_plant(tmp_path, free_port(), free_port())
    table = expand(load_plant(plant_path))
    opc = table.devices[1]
    cfg, plant = load_edge(write_edge(tmp_path, plant_path, mosquitto.port, opc.namespace))

    async def main() -> None:
        opts = SimOptions(plant=plant_path, modbus_rate_hz=5, opcua_rate_hz=5, anomaly_rate_per_h=0.0,
                          epoch_ns=time.time_ns() // 10**9 * 10**9, opcua_security="none", opcua_history="none")
        async with Simulator(opts, child_log_dir=tmp_path / "sim-logs") as sim:
            sim_stop, gw_stop = asyncio.Event(), asyncio.Event()
            sim_task = asyncio.create_task(sim.run(sim_stop))
            gw = EdgeGateway(cfg, plant)
            gw_task = asyncio.create_task(gw.run(gw_stop))
            op = Operator(mosquitto.port, table.site)
            try:
                await wait_for(lambda: len(gw.source_stats) == 2 and all(s.connected for s in gw.source_stats.values())
                               and gw.publisher.stats.connected, 60, "sources and broker connected")
                await wait_for(lambda: gw.publisher.stats.messages_published > 0, 10, "the gateway to publish")
                # The gateway subscribes to its command topic before it publishes "online" on the same connection:
                # once the operator sees "online", the broker holds the subscription.
                await wait_for(lambda: op.online.is_set(), 30, "the gateway's online health")
                op.command("c1", "hold1", 1)
                r = await op.result("c1")
                assert r == {"id": "c1", "service": "actions", "action": "write", "outcome": "applied",
                             "detail": r["detail"]}, r
                assert sim.commands.values[0] == 1.0 and bool(sim.world.physics.is_held(np.array([0]))[0])
                op.command("c2", "hold1", 0)
                assert (await op.result("c2"))["detail"].startswith("rate_limited")
                op.command("c3", "light1", 2)
                r = await op.result("c3")
                assert r["outcome"] == "dry_run" and sim.commands.values[1] == 0.0  # dry run: nothing written
                op.command("c4", "ghost", 1)
                assert (await op.result("c4"))["detail"].startswith("not_listed")
                op.command("c5", "opc_hold", 5)
                assert (await op.result("c5"))["detail"].startswith("out_of_range")
                op.command("c6", "hold2", 1)
                assert (await op.result("c6"))["detail"].startswith("disabled")
                op.command("c7", "opc_hold", True)
                assert (await op.result("c7"))["outcome"] == "applied"
                async with Client(opc.endpoint, timeout=10) as client:  # observed on the simulator's server
                    ns = await client.get_namespace_index(opc.namespace)
                    node = client.get_node(f"ns={ns};s=line9.leak_opc01.cmd.hold")
                    assert await node.read_value() == 1.0
                    press = client.get_node(f"ns={ns};s=line9.leak_opc01.test_pressure")
                    deadline = time.monotonic() + 10  # applied at the server's next tick (5 Hz)
                    while await press.read_value() > 0.5 and time.monotonic() < deadline:
                        await asyncio.sleep(0.05)
                    seen = []
                    for _ in range(15):  # the held station is vented (0 bar and sensor noise) and stays there
                        seen.append(await press.read_value())
                        await asyncio.sleep(0.2)
                    assert max(seen) < 0.5, seen
                op.command("c8", "hold1", "one")
                assert (await op.result("c8"))["detail"].startswith("invalid")
                # the operator CLI (plantwire actions request): its exit code says what the gateway decided
                cli = ["--broker", f"127.0.0.1:{mosquitto.port}", "--timeout", "30", "request", "--site", table.site,
                       "--gateway", GW]
                assert await asyncio.to_thread(actions_cli, [*cli, "light2", "1"]) == 0  # applied
                assert sim.commands.values[LIGHT2] == 1.0
                assert await asyncio.to_thread(actions_cli, [*cli, "light1_cli", "3"]) == EXIT_DRY_RUN
                assert sim.commands.values[1] == 0.0
                assert await asyncio.to_thread(actions_cli, [*cli, "ghost", "1"]) == 1  # refused: not listed
                assert gw.actions.submit(ActionRequest("light2", 3, "leak-agent", RequestSource.AGENT, reason="seal"))
                await wait_for(lambda: sim.commands.values[LIGHT2] == 3.0, 10, "the agent's write")
                await sim.slaves[0].stop()  # the PLC goes away
                await wait_for(lambda: not gw.source_stats["act-plc"].connected, 30, "the edge to see act-plc down")
                op.command("c9", "light2", 1)
                r = await op.result("c9")
                assert r["outcome"] == "refused" and r["detail"].startswith("device_down"), r
                assert sim.commands.values[LIGHT2] == 3.0
                await wait_for(lambda: len(op.audits) >= 13, 30, "13 audit documents on the events lane")
            finally:
                op.close()
                gw_stop.set()
                await asyncio.wait_for(gw_task, 60)
                sim_stop.set()
                await sim_task
            by_id = {a["request_id"]: a for a in op.audits}
            assert [by_id[f"c{i}"]["outcome"] for i in range(1, 10)] == [
                "applied", "refused", "dry_run", "refused", "refused", "refused", "applied", "refused", "refused"]
            agent = by_id[None]
            assert agent["source"] == "agent" and agent["actor"] == "leak-agent" and agent["outcome"] == "applied"
            a1 = by_id["c1"]
            assert (a1["type"], a1["service"], a1["actor"], a1["source"], a1["target"], a1["reason"]) == (
                "audit", "actions", "ann", "mqtt", "hold1", "test c1")
            counts = gw.actions.counts
            assert counts[("applied", "")] == 4 and counts[("refused", "device_down")] == 1  # 4: with the CLI's
            assert counts[("refused", "rate_limited")] == 1 and counts[("dry_run", "")] == 2
            gw._update_metrics()
            scraped = gw.metrics.render()
            assert 'plantwire_edge_action_requests_total{outcome="refused",reason="not_listed"} 2' in scraped, scraped

    asyncio.run(main())
