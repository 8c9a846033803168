"""Allow-listed writes (edge/actions): the policy's decisions, config errors by path, command parsing, and a
short smoke on a real Modbus slave of the simulator: an applied hold stops the station's cycle."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.actions import ActionRequest, ActionService, ActionsSettings, Outcome, Reason, RequestSource
from edge.actions.policy import Policy
from edge.actions.service import parse_command
from edge.actions.settings import check_targets, float_order
from edge.actions.writers import write_target
from edge.config import EdgeConfig, ModbusSettings
from edge.sources.modbus import ModbusSource
from edge.sources.stats import SourceStats
from plantwire.configfile import ConfigError, load_plant, validate
from plantwire.plant import ByteOrder, expand
from plantwire.ports import free_port
from simulators.app import Simulator
from simulators.commands import COMMAND_BASE, FLOAT_COMMAND_BASE, CommandPoints, float32_registers
from simulators.physics import machine_templates
from simulators.runtime import SimOptions
from tests.actions_plant import write_plant

HOLD = {"name": "hold1", "device": "act-plc", "address": COMMAND_BASE, "allowed": [0, 1], "enabled": True,
        "rate_limit": {"writes": 2, "per_s": 10}}
# station 1's leak limit, a float32 pair; the policy allows more than the device (0..1000) accepts
LIMIT = {"name": "limit1", "device": "act-plc", "address": FLOAT_COMMAND_BASE, "type": "float", "min": 0,
         "max": 5000, "enabled": True, "rate_limit": {"writes": 10, "per_s": 1}}


def settings(*targets: dict[str, Any], mode: str = "write") -> ActionsSettings:
    return ActionsSettings.model_validate({"mode": mode, "targets": list(targets)})


def test_policy_refuses_each_kind_and_passes_the_rest() -> None:
    light = {"name": "light1", "device": "act-plc", "address": COMMAND_BASE + 1, "min": 0, "max": 3,
             "enabled": True, "mode": "dry_run"}
    off = {**HOLD, "name": "hold2", "enabled": False}
    p = Policy(settings(HOLD, light, off))
    assert p.decide("nope", 1, 0.0).reason is Reason.NOT_LISTED
    assert p.decide("hold2", 1, 0.0).reason is Reason.DISABLED
    assert p.decide("hold1", 2, 0.0).reason is Reason.OUT_OF_RANGE
    assert p.decide("hold1", float("nan"), 0.0).reason is Reason.OUT_OF_RANGE
    assert p.decide("light1", 3.5, 0.0).reason is Reason.OUT_OF_RANGE
    d = p.decide("hold1", 1, 0.0)
    assert d.outcome is None and d.target is not None  # a write
    assert p.decide("hold1", 0, 5.0).outcome is None
    rl = p.decide("hold1", 1, 9.9)  # 2 per 10 s: the third within the window is refused
    assert rl.reason is Reason.RATE_LIMITED and "next in 0.1 s" in rl.detail
    assert p.decide("hold1", 1, 10.0).outcome is None  # the first has left the window
    assert p.decide("light1", 2, 0.0).outcome is Outcome.DRY_RUN  # the target's own mode
    assert Policy(settings(HOLD, mode="dry_run")).decide("hold1", 1, 0.0).outcome is Outcome.DRY_RUN


def test_config_errors_name_their_path(tmp_path: Path) -> None:
    bad = [({**HOLD, "node": "ns=2;s=x"}, "exactly one of address"),
           ({**HOLD, "allowed": None}, "allowed"),
           ({**HOLD, "allowed": None, "min": 3, "max": 1}, "above max"),
           ({**HOLD, "allowed": [70000]}, "cannot be written as uint16"),
           ({**HOLD, "type": "double"}, "cannot be written to a Modbus register"),
           ({**HOLD, "allowed": None, "min": 0, "max": 1e39, "type": "float"}, "cannot be written as float"),
           ({**HOLD, "byte_order": "CDAB"}, "byte_order is for a Modbus float"),
           ({**HOLD, "address": 65535, "allowed": [1.5], "type": "float"}, "a float needs two registers")]
    for target, words in bad:
        with pytest.raises(ConfigError) as exc:
            validate(EdgeConfig, {"gateway_id": "gw", "plant": "p.yaml", "actions": {"targets": [target]}}, "edge.yaml")
        assert "actions.targets[0]" in exc.value.report() and words in exc.value.report(), exc.value.report()
    with pytest.raises(ConfigError, match="listed twice"):
        validate(EdgeConfig, {"gateway_id": "gw", "plant": "p.yaml", "actions": {"targets": [HOLD, HOLD]}}, "e.yaml")
    table = expand(load_plant(write_plant(tmp_path, 15999, 15998)))
    errors = check_targets(settings({**HOLD, "device": "ghost"}, {**HOLD, "name": "h2", "device": "act-opc"},
                                    {"name": "n", "device": "act-plc", "node": "ns=2;s=x", "min": 0, "max": 1}), table)
    assert errors[0].startswith("actions.targets[0].device: no device 'ghost'")
    assert errors[1].startswith("actions.targets[1].address: device 'act-opc' is opcua")
    assert errors[2].startswith("actions.targets[2].node: device 'act-plc' is modbus")
    limit = ActionsSettings.model_validate({"targets": [LIMIT]}).targets[0]
    assert float_order(limit, table) is ByteOrder.ABCD  # the device's
    cdab = expand(load_plant(write_plant(tmp_path, 15999, byte_order="CDAB")))
    assert float_order(limit, cdab) is ByteOrder.CDAB
    assert float_order(limit.model_copy(update={"byte_order": ByteOrder.DCBA}), cdab) is ByteOrder.DCBA


def test_commands_parse_or_say_what_is_wrong() -> None:
    ok = parse_command(json.dumps({"id": "r1", "actor": "ann", "ts_ns": 5, "action": "write", "target": "hold1",
                                   "value": True, "reason": "seal check"}).encode())
    assert isinstance(ok, ActionRequest) and ok.value == 1.0 and ok.actor == "ann" and ok.source is RequestSource.MQTT
    assert parse_command(b"{") == (None, parse_command(b"{")[1])  # type: ignore[index]
    assert parse_command(b'{"action": "write"}')[1] == "no id (a non-empty string)"  # type: ignore[index]
    assert parse_command(b'{"id": "x", "action": "delete"}')[0] == "x"  # type: ignore[index]
    assert "not a number" in parse_command(b'{"id": "x", "action": "write", "target": "t", "value": "1"}')[1]  # type: ignore[index]


def test_held_station_stops_cycling_and_resumes_where_it_paused(tmp_path: Path) -> None:
    """Simulator physics: while held, a station's test pressure is vented (0) and its counters stand still."""
    plant = load_plant(write_plant(tmp_path, 15999))
    from simulators.runtime import build_world

    world = build_world(SimOptions(plant=tmp_path / "plant.yaml", anomaly_rate_per_h=0.0), plant)
    table, phys = world.table, world.physics
    cmds = CommandPoints(table, machine_templates(plant))
    assert [(p.name.value, p.address - COMMAND_BASE) for p in cmds.points] == [
        ("hold", 0), ("stack_light", 1), ("leak_limit", 0x400), ("hold", 2), ("stack_light", 3),
        ("leak_limit", 0x402)]
    # a float32 setpoint: both registers of its pair, a finite value in range, in the device's order
    assert cmds.modbus_write(0, FLOAT_COMMAND_BASE + 2, float32_registers(42.5, ByteOrder.ABCD)) is None
    assert cmds.values[5] == 42.5 and cmds.modbus_read(0, FLOAT_COMMAND_BASE + 2, 2) == [0x422A, 0]
    assert cmds.modbus_write(0, FLOAT_COMMAND_BASE + 2, [0x4000]) == "value"  # half a pair
    assert cmds.modbus_write(0, FLOAT_COMMAND_BASE + 1, [0, 0]) == "value"  # a pair's second half, the next's first
    assert cmds.modbus_write(0, FLOAT_COMMAND_BASE, float32_registers(1001.0, ByteOrder.ABCD)) == "value"
    assert cmds.modbus_write(0, FLOAT_COMMAND_BASE, float32_registers(float("nan"), ByteOrder.ABCD)) == "value"
    assert cmds.values[2] == 0.0 and cmds.values[5] == 42.5
    rows = np.array([table.ids.index(f"line9.leak_test01.{n}") for n in ("test_pressure", "result_pass")])
    noon = 12 * 3600.0

    def at(t: float) -> np.ndarray:
        return phys.evaluate(t, rows, np.zeros(2))

    cycle = np.array([at(noon + k)[0] for k in range(45)])
    assert cycle.max() > 30 and cycle.min() < 5  # it cycles
    assert cmds.modbus_write(0, COMMAND_BASE, [2]) == "value" and cmds.modbus_write(0, 100, [1]) == "address"
    assert cmds.modbus_write(0, COMMAND_BASE, [1]) is None
    phys.set_held(cmds.held(), noon + 45)
    held = np.array([at(noon + 45 + k) for k in range(100)])
    assert (held[:, 0] == 0).all() and np.ptp(held[:, 1]) == 0  # vented, counters frozen
    other = table.ids.index("line9.leak_test02.test_pressure")
    assert np.ptp([phys.evaluate(noon + 45 + k, np.array([other]), np.zeros(1))[0] for k in range(45)]) > 30
    cmds.modbus_write(0, COMMAND_BASE, [0])
    phys.set_held(cmds.held(), noon + 145)
    resumed = np.array([at(noon + 145 + k)[0] for k in range(45)])
    # the cycle resumes where it paused, 100 s later (the chamber's temperature, and with it the decay, moved on)
    np.testing.assert_allclose(resumed, cycle, atol=0.02)


@pytest.mark.integration
def test_smoke_an_applied_hold_is_written_over_the_polling_connection(tmp_path: Path) -> None:
    """Real Modbus slave (the simulator's) and ModbusSource: applied, device-refused values, dry run; a float32
    setpoint written as a register pair in the device's word order (CDAB here), and its refusals."""
    port = free_port()
    plant_path = write_plant(tmp_path, port, byte_order="CDAB")
    table = expand(load_plant(plant_path))

    async def main() -> None:
        opts = SimOptions(plant=plant_path, modbus_rate_hz=5, anomaly_rate_per_h=0.0,
                          epoch_ns=time.time_ns() // 10**9 * 10**9)
        async with Simulator(opts) as sim:
            stop = asyncio.Event()
            run = asyncio.create_task(sim.run(stop))
            stats = SourceStats()
            src = ModbusSource(table.devices[0], table, ModbusSettings(period_ms=200, timeout_s=1.0),
                               lambda *a: None, stats)
            polling = asyncio.create_task(src.run())
            audits: list[dict[str, Any]] = []
            light = {"name": "light1", "device": "act-plc", "address": COMMAND_BASE + 1, "min": 0, "max": 9,
                     "enabled": True}
            svc = ActionService(settings(HOLD, light, LIMIT),
                                write=lambda t, v: write_target({"act-plc": src}, t, v, table), audit=audits.append)
            try:
                async with asyncio.timeout(20):
                    while not stats.connected:
                        await asyncio.sleep(0.05)
                    r = await svc.request(ActionRequest("hold1", 1, "test", RequestSource.AGENT, reason="smoke"))
                    assert r.outcome is Outcome.APPLIED, r.detail
                    assert sim.commands.values[0] == 1.0 and sim.world.physics.is_held(np.array([0]))[0]
                    # the slave accepts 0..3 only: the policy let 7 through (max 9), the device refused it
                    r = await svc.request(ActionRequest("light1", 7, "test", RequestSource.AGENT))
                    assert r.outcome is Outcome.FAILED and r.reason is Reason.WRITE_ERROR and "0x03" in r.detail
                    assert sim.commands.values[1] == 0.0
                    # float32, word-swapped (CDAB) as the device's signals: the simulator decodes what was meant
                    r = await svc.request(ActionRequest("limit1", 42.25, "test", RequestSource.CLI))
                    assert r.outcome is Outcome.APPLIED, r.detail
                    assert sim.commands.values[2] == 42.25
                    r = await svc.request(ActionRequest("limit1", 1500.5, "test", RequestSource.CLI))
                    assert r.outcome is Outcome.FAILED and "0x03" in r.detail  # in the policy, not the device's
                    r = await svc.request(ActionRequest("limit1", 6000, "test", RequestSource.CLI))
                    assert r.outcome is Outcome.REFUSED and r.reason is Reason.OUT_OF_RANGE
                    assert sim.commands.values[2] == 42.25
                    assert stats.connected and stats.errors <= 2  # polling carried on
            finally:
                polling.cancel()
                stop.set()
                await asyncio.gather(polling, run, return_exceptions=True)
            assert [a["outcome"] for a in audits] == ["applied", "failed", "applied", "failed", "refused"]
            assert audits[0]["type"] == "audit" and audits[0]["service"] == "actions" and audits[0]["reason"] == "smoke"

    asyncio.run(main())


def test_agents_ask_for_actions_through_their_event_documents() -> None:
    from edge.actions.service import requests_from_events

    docs = [{"type": "alarm", "agent": "leak_test", "detail": "seal", "action": {"target": "s1.hold", "value": 1}},
            {"type": "alarm", "agent": "leak_test"},  # no action: not a request
            {"type": "alarm", "agent": "x", "action": {"target": "s1.hold", "value": "1"}},  # malformed: skipped
            {"type": "alarm", "agent": "x", "action": {"target": 3, "value": 1}}]
    reqs = requests_from_events(docs)
    assert [(r.target, r.value, r.actor, r.source, r.reason) for r in reqs] == [
        ("s1.hold", 1.0, "agent:leak_test", RequestSource.AGENT, "seal")]
