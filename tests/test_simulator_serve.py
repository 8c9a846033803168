"""``plantwire sim`` on the dev plant, read through the real protocols with plain pymodbus and asyncua clients."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from asyncua import Client, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography.x509.oid import ExtendedKeyUsageOID
from pymodbus.client import AsyncModbusTcpClient

from edge.sources.modbus_codec import Codec
from edge.sources.modbus_plan import plan_device
from plantwire.configfile import load_plant
from plantwire.plant import TYPE_ORDER, PlantConfig, Protocol, RegisterType, SignalTable, Table, expand, relocate_ports
from plantwire.ports import free_port, free_port_block
from simulators.physics import _LOAD as LOAD_NAME  # the physics' own load classification

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
# how far ahead of now a test with a timeline sets the simulator's epoch: more than the slowest start seen on a
# loaded 2-core box (15.7 s for the dev plant), so the timeline never starts before the servers listen
START_ROOM_S = 25
# register types that carry whole counts: noise finer than one count (scale) rounds away in them
INT_TYPES = [TYPE_ORDER.index(t) for t in (RegisterType.INT16, RegisterType.UINT16, RegisterType.INT32,
                                           RegisterType.UINT32, RegisterType.INT64)]


@dataclass
class RunningSim:
    proc: subprocess.Popen[bytes]
    table: SignalTable
    plant: PlantConfig
    dir: Path
    startup_s: float

    def log(self) -> str:
        return (self.dir / "sim.log").read_text(errors="replace")


def start_sim(tmp: Path, *extra: str, plant: PlantConfig | None = None) -> RunningSim:
    plant = plant or relocate_ports(load_plant(ROOT / "configs" / "dev" / "plant.yaml"), free_port_block)
    path = tmp / "plant.yaml"
    path.write_text(yaml.safe_dump(plant.model_dump(mode="json"), sort_keys=False))
    ready = tmp / "ready"
    log = open(tmp / "sim.log", "wb")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "plantwire.cli", "sim", str(path), "--ready-file", str(ready),
         "--labels", str(tmp / "labels.jsonl"), *extra],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    log.close()
    sim = RunningSim(proc, expand(plant), plant, tmp, 0.0)
    while not ready.exists():
        if proc.poll() is not None:
            raise AssertionError(f"sim exited with {proc.returncode}:\n{sim.log()}")
        if time.monotonic() - t0 > 60:
            proc.kill()
            raise AssertionError(f"sim not ready after 60 s:\n{sim.log()}")
        time.sleep(0.05)
    sim.startup_s = time.monotonic() - t0
    return sim


def stop_sim(sim: RunningSim) -> int:
    if sim.proc.poll() is None:
        sim.proc.send_signal(signal.SIGTERM)
    try:
        return sim.proc.wait(15)
    except subprocess.TimeoutExpired:
        sim.proc.kill()
        sim.proc.wait(5)
        raise AssertionError("sim did not stop within 15 s of SIGTERM") from None


@pytest.fixture
def dev_sim(tmp_path: Path) -> Iterator[RunningSim]:
    sim = start_sim(tmp_path, "--modbus-rate", "5", "--opcua-rate", "2", "--anomaly-rate", "0", "--seed", "11")
    try:
        yield sim
    finally:
        stop_sim(sim)


async def read_device(client: AsyncModbusTcpClient, table: SignalTable, device: int) -> tuple[np.ndarray, np.ndarray]:
    """Every signal of a device, read with plain pymodbus block reads and decoded by the edge codec."""
    plan = plan_device(table, device, max_gap=8)
    codec = Codec.from_table(plan, table)
    unit = table.devices[device].unit_id
    for k, b in enumerate(plan.blocks):
        if b.table in (Table.COIL, Table.DISCRETE):
            fn = client.read_coils if b.table is Table.COIL else client.read_discrete_inputs
            r = await fn(b.start, count=b.count, device_id=unit)
            assert not r.isError(), r
            payload = np.packbits(np.array(r.bits[: b.count], dtype=np.uint8), bitorder="little").tobytes()
        else:
            fn = client.read_holding_registers if b.table is Table.HOLDING else client.read_input_registers
            r = await fn(b.start, count=b.count, device_id=unit)
            assert not r.isError(), r
            payload = b"".join(int(w).to_bytes(2, "big") for w in r.registers)
        assert codec.load(k, payload), f"block {k} of device {device}: wrong length"
    return codec.signals.astype(np.int64), codec.decode().copy()


def plausible(table: SignalTable, rows: np.ndarray, values: np.ndarray) -> None:
    lo = np.where(np.isnan(table.low[rows]), -np.inf, table.low[rows]) - table.scale[rows]
    hi = np.where(np.isnan(table.high[rows]), np.inf, table.high[rows]) + table.scale[rows]
    bad = np.flatnonzero(~((values >= lo) & (values <= hi)))
    assert bad.size == 0, [(table.ids[rows[i]], values[i]) for i in bad[:10]]


def test_dev_plant_serves_modbus_and_opcua(dev_sim: RunningSim) -> None:
    table = dev_sim.table
    # start-up time is a speed figure: bench/simulator.py prints it (a timed assertion here failed under load)
    out = dev_sim.log()
    assert "dev-plc1" in out and "dev-opc2" in out and "labels:" in out  # it says what it serves

    async def modbus() -> None:
        modbus_devs = [d for d in table.devices if d.protocol is Protocol.MODBUS]
        assert len(modbus_devs) == 4
        for d in modbus_devs:
            client = AsyncModbusTcpClient(d.host, port=d.port, timeout=2, retries=0)
            assert await client.connect()
            try:
                rows, first = await read_device(client, table, d.index)
                assert rows.size == table.signals_of(d.index).size
                plausible(table, rows, first)
                await asyncio.sleep(1.1)
                _, second = await read_device(client, table, d.index)
                await asyncio.sleep(1.1)
                _, third = await read_device(client, table, d.index)
                moving = (table.amplitude[rows] > 0) | (table.noise[rows] > 0)
                # the registers follow the ticks. Judged on signals whose noise is at least one count of an integer
                # register (finer noise rounds away) over two intervals: at night, with machines off, one interval
                # and every noisy signal left 78 % changed, against 80 % asked (clean-clone CI at 22:30 UTC); this
                # statistic stays >= 0.92 at every hour of the simulated day for this seed
                counts = np.isin(table.reg_type[rows], INT_TYPES)
                live = moving & (~counts | (table.noise[rows] >= table.scale[rows]))
                changed = ((first != second) | (second != third))[live]
                assert live.sum() > 20 and changed.mean() > 0.85, f"{d.name}: only {changed.mean():.0%} changed"
                # constants stay put, counters (hours, strokes, energy) only count up. Not constants: state words
                # (a leak tester's valve word follows its test cycle, a running bit drops off shift) and loads
                # without a wave, which the physics scales with the shift's level (a meter's peak_demand)
                const = ~moving & np.array([table.kinds[r] != "state" and not LOAD_NAME.search(table.ids[r])
                                            for r in rows.tolist()])
                assert const.any(), d.name  # the check covers something: hours, strokes, parts counters
                fell = np.flatnonzero(const & (second < first))
                assert fell.size == 0, [(table.ids[int(rows[i])], first[i], second[i]) for i in fell.tolist()]
                # real-PLC manners: an address past the map and an unknown unit answer exceptions
                r = await client.read_holding_registers(65000, count=10, device_id=d.unit_id)
                assert r.isError() and r.exception_code == 2
                r = await client.read_holding_registers(0, count=1, device_id=200)
                assert r.isError() and r.exception_code == 11
            finally:
                client.close()

    async def opcua() -> None:
        d = next(d for d in table.devices if d.protocol is Protocol.OPCUA)
        rows = table.signals_of(d.index)
        pick = rows[[0, 3, 7, len(rows) // 2, len(rows) - 1]]
        got: dict[str, list[float]] = {table.ids[r]: [] for r in pick.tolist()}

        class Handler:
            def datachange_notification(self, node: Any, val: float, data: Any) -> None:
                got[node.nodeid.Identifier].append(val)

        async with Client(d.endpoint, timeout=5) as client:
            ns = await client.get_namespace_index(d.namespace)
            nodes = [client.get_node(ua.NodeId(table.ids[r], ns)) for r in pick.tolist()]
            sub = await client.create_subscription(200, Handler())
            await sub.subscribe_data_change(nodes)
            await asyncio.sleep(2.6)
            await sub.delete()
            # folders follow the machine id, units are EngineeringUnits properties
            sid = table.ids[int(pick[0])]
            machine = table.machine_ids[int(table.machine[pick[0]])]
            path = [f"{ns}:{p}" for p in machine.split(".")] + [f"{ns}:{sid[len(machine) + 1:]}"]
            var = await client.nodes.objects.get_child(path)
            assert var.nodeid == nodes[0].nodeid
            eu = await (await var.get_child("0:EngineeringUnits")).read_value()
            assert eu.DisplayName.Text == table.units[int(pick[0])]
        for r in pick.tolist():
            vals = got[table.ids[r]]
            assert len(vals) >= 3, (table.ids[r], vals)
            plausible(table, np.full(len(vals), r), np.array(vals))
            if table.amplitude[r] > 0 or table.noise[r] > 0:
                assert len(set(vals)) >= 3, (table.ids[r], vals)

    async def history_and_security() -> None:
        opc1, opc2 = [d for d in table.devices if d.protocol is Protocol.OPCUA]
        row = int(table.signals_of(opc1.index)[5])
        end = datetime.now(UTC) + timedelta(seconds=5)
        async with Client(opc1.endpoint, timeout=5) as client:  # history kept on every other server
            ns = await client.get_namespace_index(opc1.namespace)
            hist = await client.get_node(ua.NodeId(table.ids[row], ns)).read_raw_history(end - timedelta(hours=1), end)
            assert len(hist) >= 3 and all(dv.StatusCode.is_good() for dv in hist)
        async with Client(opc2.endpoint, timeout=5) as client:
            ns = await client.get_namespace_index(opc2.namespace)
            node = client.get_node(ua.NodeId(table.ids[int(table.signals_of(opc2.index)[5])], ns))
            assert await node.read_raw_history(end - timedelta(hours=1), end) == []
        # SignAndEncrypt with a client certificate; the server's was generated on first start
        server_cert = dev_sim.dir / "sim-pki" / f"{opc1.name}.der"
        assert server_cert.exists() and (dev_sim.dir / "sim-pki" / f"{opc1.name}.pem").stat().st_mode & 0o077 == 0
        key, cert = dev_sim.dir / "client.pem", dev_sim.dir / "client.der"
        await setup_self_signed_certificate(key, cert, "urn:plantwire:test", "localhost",
                                            [ExtendedKeyUsageOID.CLIENT_AUTH], {"commonName": "test"})
        client = Client(opc1.endpoint, timeout=5)
        client.application_uri = "urn:plantwire:test"
        await client.set_security(SecurityPolicyBasic256Sha256, str(cert), str(key),
                                  server_certificate=str(server_cert), mode=ua.MessageSecurityMode.SignAndEncrypt)
        async with client:
            ns = await client.get_namespace_index(opc1.namespace)
            value = await client.get_node(ua.NodeId(table.ids[row], ns)).read_value()
            assert isinstance(value, float)

    asyncio.run(modbus())
    asyncio.run(opcua())
    asyncio.run(history_and_security())
    assert stop_sim(dev_sim) == 0
    assert "stopped" in dev_sim.log()
    assert (dev_sim.dir / "labels.jsonl").exists()


def test_bad_plant_file_exits_2_naming_the_place(tmp_path: Path) -> None:
    bad = tmp_path / "plant.yaml"
    bad.write_text("site: x\ntemplates: {}\ndevices: [{name: p, protocol: modbus, port: 1502}]\n"
                   "machines: [{name: m, template: prss, device: p}]\n")
    res = subprocess.run([sys.executable, "-m", "plantwire.cli", "sim", str(bad)], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert res.returncode == 2
    assert "machines[0].template" in res.stderr


FAULTS = """
events:
  - {signal: hall.energy05.power_active, kind: dropout, at_s: 4, duration_s: 14}
transport:
  - {device: dev-plc1, kind: exception, at_s: 5, duration_s: 7, exception_code: 4}
  - {device: dev-plc2, kind: timeout, at_s: 5, duration_s: 7}
  - {device: dev-plc-cdab1, kind: disconnect, at_s: 5, duration_s: 7}
  - {device: dev-plc-cdab2, kind: slow, at_s: 5, duration_s: 7, delay_s: 0.6}
  - {device: dev-opc1, kind: bad_status, at_s: 5, duration_s: 7, signals: [hall.hvac01.co2], status: BadSensorFailure}
  - {device: dev-opc2, kind: restart, at_s: 5, duration_s: 3}
"""


# slow: its timeline starts START_ROOM_S ahead of a whole dev-plant start (~35 s mostly waiting); the default run keeps
# faults through the protocols by way of test_control_api_triggers_faults_on_command
@pytest.mark.slow
def test_scheduled_faults_show_through_the_protocols_and_in_the_labels(tmp_path: Path) -> None:
    (tmp_path / "faults.yaml").write_text(FAULTS)
    # The timeline starts at a fixed epoch ahead of now: the faults are scheduled from it, so the simulator must be up
    # before it. 3 s of room failed under load (the dev plant took 15.7 s to come up); START_ROOM_S covers that.
    epoch_ns = (time.time_ns() // 1_000_000_000 + START_ROOM_S) * 1_000_000_000
    sim = start_sim(tmp_path, "--faults", str(tmp_path / "faults.yaml"), "--epoch-ns", str(epoch_ns),
                    "--anomaly-rate", "0", "--wear-fraction", "0", "--modbus-rate", "4", "--opcua-rate", "4",
                    "--opcua-security", "none")
    table = sim.table
    dev = {d.name: d for d in table.devices}

    def sim_t() -> float:
        return (time.time_ns() - epoch_ns) / 1e9

    async def wait_until(t_s: float) -> None:
        await asyncio.sleep(max(0.0, t_s - sim_t()))

    async def modbus_read(name: str, timeout_s: float = 1.0) -> tuple[Any, float]:
        d = dev[name]
        client = AsyncModbusTcpClient(d.host, port=d.port, timeout=timeout_s, retries=0)
        t0 = time.monotonic()
        try:
            if not await client.connect():
                return "refused", time.monotonic() - t0
            try:
                r = await client.read_holding_registers(0, count=10, device_id=d.unit_id)
            except Exception as exc:
                return type(exc).__name__, time.monotonic() - t0
            return r, time.monotonic() - t0
        finally:
            client.close()

    async def energy05_power() -> float:
        d = dev["dev-plc-cdab2"]
        client = AsyncModbusTcpClient(d.host, port=d.port, timeout=3, retries=0)
        await client.connect()
        try:
            rows, values = await read_device(client, table, d.index)
        finally:
            client.close()
        return float(values[rows.tolist().index(table.ids.index("hall.energy05.power_active"))])

    async def opcua_status(name: str, sid: str) -> str:
        d = dev[name]
        try:
            async with Client(d.endpoint, timeout=2) as client:
                ns = await client.get_namespace_index(d.namespace)
                dv = await client.get_node(ua.NodeId(sid, ns)).read_data_value(raise_on_bad_status=False)
                return dv.StatusCode.name
        except (OSError, TimeoutError, ua.UaError) as exc:
            return f"unreachable:{type(exc).__name__}"

    async def main() -> None:
        assert sim_t() < 5.0, "the simulator took too long to start"
        await wait_until(5.8)
        r, _ = await modbus_read("dev-plc1")
        assert r.isError() and r.exception_code == 4, r
        r, took = await modbus_read("dev-plc2")
        assert not hasattr(r, "isError") or r.isError(), r  # no answer: the client times out
        assert took >= 0.9
        r, _ = await modbus_read("dev-plc-cdab1")
        assert r == "refused" or (hasattr(r, "isError") and r.isError()) or isinstance(r, str), r
        r, took = await modbus_read("dev-plc-cdab2", timeout_s=3)
        assert not r.isError() and took >= 0.55, (r, took)
        assert await opcua_status("dev-opc1", "hall.hvac01.co2") == "BadSensorFailure"
        assert await opcua_status("dev-opc1", "hall.hvac01.supply_air_temp") == "Good"
        assert (await opcua_status("dev-opc2", "hall.hvac03.co2")).startswith("unreachable")
        await wait_until(13.0)
        for name in ("dev-plc1", "dev-plc2", "dev-plc-cdab1", "dev-plc-cdab2"):
            r, took = await modbus_read(name)
            assert not isinstance(r, str) and not r.isError(), (name, r)
            assert took < 0.5, (name, took)
        assert await opcua_status("dev-opc1", "hall.hvac01.co2") == "Good"
        assert sim_t() < 18.0
        assert np.isnan(await energy05_power())  # the dropout (until t=18) reads as NaN
        # The restarted server (down 5..8 s) must come back; re-creating its nodes took over 5 s on a loaded box,
        # so wait for it with a deadline instead of expecting it at a fixed point of the timeline.
        deadline = time.monotonic() + 90
        status = await opcua_status("dev-opc2", "hall.hvac03.co2")
        while status != "Good" and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            status = await opcua_status("dev-opc2", "hall.hvac03.co2")
        assert status == "Good", status

    try:
        asyncio.run(main())
    finally:
        assert stop_sim(sim) == 0
    labels = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    by_kind = {(r["kind"], r.get("device") or r.get("signal")): r for r in labels}
    assert by_kind[("dropout", "hall.energy05.power_active")]["start_ns"] == epoch_ns + 4 * 10**9
    assert by_kind[("dropout", "hall.energy05.power_active")]["end_ns"] == epoch_ns + 18 * 10**9
    for kind, name in (("exception", "dev-plc1"), ("timeout", "dev-plc2"), ("disconnect", "dev-plc-cdab1"),
                       ("slow", "dev-plc-cdab2"), ("bad_status", "dev-opc1"), ("restart", "dev-opc2")):
        rec = by_kind[(f"transport.{kind}", name)]
        assert rec["start_ns"] == epoch_ns + 5 * 10**9
    assert by_kind[("transport.bad_status", "dev-opc1")]["signals"] == ["hall.hvac01.co2"]
    assert "transport faults: 6 scheduled" in sim.log()


def test_faults_file_errors_name_their_place(tmp_path: Path) -> None:
    plant = relocate_ports(load_plant(ROOT / "configs" / "dev" / "plant.yaml"), free_port_block)
    (tmp_path / "plant.yaml").write_text(yaml.safe_dump(plant.model_dump(mode="json"), sort_keys=False))
    (tmp_path / "faults.yaml").write_text(
        "events:\n  - {signal: nope.x, kind: spike, at_s: 1, duration_s: 1}\n"
        "transport:\n  - {device: dev-opc1, kind: timeout, at_s: 1, duration_s: 1}\n"
        "  - {device: dev-plc1, kind: explode, at_s: 1, duration_s: 1}\n")
    res = subprocess.run([sys.executable, "-m", "plantwire.cli", "sim", str(tmp_path / "plant.yaml"), "--faults",
                          str(tmp_path / "faults.yaml")], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 2
    assert "transport[1].kind" in res.stderr


def test_control_api_triggers_faults_on_command(tmp_path: Path) -> None:
    port = free_port()
    sim = start_sim(tmp_path, "--control-port", str(port), "--anomaly-rate", "0", "--wear-fraction", "0",
                    "--modbus-rate", "5", "--opcua-rate", "5", "--opcua-security", "none")
    table = sim.table
    dev = {d.name: d for d in table.devices}

    def call(method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    async def checks() -> None:
        d = dev["dev-plc1"]
        client = AsyncModbusTcpClient(d.host, port=d.port, timeout=0.5, retries=0)
        await client.connect()
        assert not (await client.read_holding_registers(0, count=4, device_id=d.unit_id)).isError()
        code, out = call("POST", "/faults", {
            "transport": [{"device": "dev-plc1", "kind": "exception", "at_s": 0, "duration_s": 4, "exception_code": 6},
                          {"device": "dev-opc2", "kind": "bad_status", "at_s": 0, "duration_s": 4,
                           "signals": ["hall.hvac03.co2"], "status": "BadCommunicationError"}],
            "events": [{"signal": "hall.hvac03.filter_dp", "kind": "dropout", "at_s": 0, "duration_s": 4}],
        })
        assert code == 200 and out["added"] == {"events": 1, "transport": 2}, out
        await asyncio.sleep(1.6)
        r = await client.read_holding_registers(0, count=4, device_id=d.unit_id)
        assert r.isError() and r.exception_code == 6
        o = dev["dev-opc2"]
        async with Client(o.endpoint, timeout=3) as oc:
            ns = await oc.get_namespace_index(o.namespace)
            co2 = await oc.get_node(ua.NodeId("hall.hvac03.co2", ns)).read_data_value(raise_on_bad_status=False)
            dp = await oc.get_node(ua.NodeId("hall.hvac03.filter_dp", ns)).read_data_value(raise_on_bad_status=False)
            assert co2.StatusCode.name == "BadCommunicationError"
            assert dp.StatusCode.name == "BadSensorFailure"  # the dropout
        await asyncio.sleep(4.0)
        assert not (await client.read_holding_registers(0, count=4, device_id=d.unit_id)).isError()
        client.close()

    try:
        code, status = call("GET", "/status")
        assert code == 200 and status["signals"] == len(table) and status["modbus"]["ticks"] > 0
        code, out = call("POST", "/faults", {"transport": [{"device": "nope", "kind": "timeout", "at_s": 0,
                                                            "duration_s": 1}]})
        assert code == 400 and out["errors"] == ["transport[0].device: unknown device 'nope'"]
        asyncio.run(checks())
        _, status = call("GET", "/status")
        assert [f["kind"] for f in status["transport_faults"]] == ["transport.exception", "transport.bad_status"]
    finally:
        assert stop_sim(sim) == 0
    kinds = [json.loads(x)["kind"] for x in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert {"transport.exception", "transport.bad_status", "dropout"} <= set(kinds)


# slow: its timeline starts START_ROOM_S ahead of a whole dev-plant start (~33 s mostly waiting); the default run
# keeps wear through tests/test_simulator.py's model tests
@pytest.mark.slow
def test_time_scale_runs_days_of_wear_in_seconds(tmp_path: Path) -> None:
    machine = "line1.compressor01"
    (tmp_path / "faults.yaml").write_text(
        f"wear:\n  - {{machine: {machine}, start_s: 0, failure_s: 172800, repair_s: 86400}}\n")  # fails on day 2
    # the epoch lies START_ROOM_S ahead so that a slow start on a busy box does not eat the timeline
    epoch_ns = (time.time_ns() // 1_000_000_000 + START_ROOM_S) * 1_000_000_000
    sim = start_sim(tmp_path, "--faults", str(tmp_path / "faults.yaml"), "--epoch-ns", str(epoch_ns),
                    "--time-scale", "43200", "--anomaly-rate", "0", "--wear-fraction", "0", "--modbus-rate", "4",
                    "--opcua-security", "none")  # half a day per second
    table = sim.table
    d = table.devices[int(table.device[table.ids.index(f"{machine}.fault_word")])]

    async def fault_word() -> float:
        client = AsyncModbusTcpClient(d.host, port=d.port, timeout=2, retries=0)
        await client.connect()
        try:
            rows, values = await read_device(client, table, d.index)
        finally:
            client.close()
        return float(values[rows.tolist().index(table.ids.index(f"{machine}.fault_word"))])

    try:
        assert (time.time_ns() - epoch_ns) / 1e9 < 4.0, "the simulator took too long to start"
        while (time.time_ns() - epoch_ns) / 1e9 < 4.5:  # day 2 .. 3: failed, under repair
            time.sleep(0.1)
        assert asyncio.run(fault_word()) == 0x10
        while (time.time_ns() - epoch_ns) / 1e9 < 6.5:  # day 3.25: repaired
            time.sleep(0.1)
        assert asyncio.run(fault_word()) == 0
    finally:
        assert stop_sim(sim) == 0
    recs = [json.loads(x) for x in (tmp_path / "labels.jsonl").read_text().splitlines()]
    wear = [r for r in recs if r["machine"] == machine]
    assert wear[0]["kind"] == "wear" and wear[0]["rul_s"] == 172800 and wear[0]["source"] == "schedule"
    ruls = [r for r in wear if r["kind"] == "rul"]
    assert len(ruls) >= 5 and all(a["rul_s"] > b["rul_s"] for a, b in itertools.pairwise(ruls))
    assert all(r["rul_s"] == pytest.approx(172800 - (r["ts_ns"] - epoch_ns) / 1e9) for r in ruls)
    fail = next(r for r in wear if r["kind"] == "failure")
    assert fail["start_ns"] == epoch_ns + 172800 * 10**9  # timestamps follow simulated time


def test_every_anomaly_kind_reads_through_modbus_exactly_as_modelled(tmp_path: Path) -> None:
    """Served registers equal the model with the faults (same seed, epoch and file) and differ from it without."""
    from simulators.runtime import SimOptions, build_world

    kinds = {  # signal -> (kind, magnitude)
        "line1.compressor01.suction_pressure": ("spike", 0.5),
        "line1.compressor01.discharge_pressure": ("step", 2.0),
        "line1.compressor01.oil_pressure": ("drift", 1.0),
        "line1.compressor01.refrigerant_flow": ("stuck", 0.0),
        "line1.compressor01.superheat": ("noise_burst", 2.0),
        "line1.compressor01.subcooling": ("dropout", 0.0),
        "line1.compressor01.cop": ("oscillation", 0.5),
        "line1.compressor01.capacity": ("calibration_offset", 3.0),
    }
    lines = [f"  - {{signal: {s}, kind: {k}, at_s: 2.3, duration_s: 60, magnitude: {m}}}" for s, (k, m) in
             kinds.items()]
    lines.append("  - {machine: line2.leak_test01, kind: micro_leak, at_s: 2.3, duration_s: 60, magnitude: 50}")
    faults = tmp_path / "faults.yaml"
    faults.write_text("events:\n" + "\n".join(lines) + "\n")
    epoch_ns = (time.time_ns() // 1_000_000_000 + 2) * 1_000_000_000
    sim = start_sim(tmp_path, "--faults", str(faults), "--epoch-ns", str(epoch_ns), "--seed", "5",
                    "--anomaly-rate", "0", "--wear-fraction", "0", "--modbus-rate", "2", "--opcua-security", "none")
    table = sim.table
    watch = [*kinds, "line2.leak_test01.decay_rate", "line2.leak_test01.leak_rate"]
    rows = np.array([table.ids.index(s) for s in watch])

    async def read_all() -> list[tuple[int, int, dict[int, float]]]:
        """Each device's values with the wall-clock span of its read (devices are read one after another)."""
        out: list[tuple[int, int, dict[int, float]]] = []
        for dev in sorted({int(table.device[r]) for r in rows}):
            d = table.devices[dev]
            client = AsyncModbusTcpClient(d.host, port=d.port, timeout=2, retries=0)
            t_before = time.time_ns()
            await client.connect()
            try:
                got_rows, values = await read_device(client, table, dev)
                t_after = time.time_ns()
            finally:
                client.close()
            out.append((t_before, t_after, {int(r): float(v) for r, v in zip(got_rows, values, strict=True)}))
        return out

    try:
        while time.time_ns() < epoch_ns + int(6.2e9):
            time.sleep(0.05)
        reads = asyncio.run(read_all())
    finally:
        assert stop_sim(sim) == 0

    opts = SimOptions(plant=tmp_path / "plant.yaml", seed=5, modbus_rate_hz=2.0, anomaly_rate_per_h=0.0,
                      epoch_ns=epoch_ns, faults=faults, wear_fraction=0.0)
    modbus_rows = np.flatnonzero([table.devices[d].protocol is Protocol.MODBUS for d in table.device])
    faulty = build_world(opts).model(modbus_rows, 5)
    clean = build_world(dataclasses.replace(opts, faults=None)).model(modbus_rows, 5)
    differs = np.zeros(rows.size, dtype=bool)
    for t_before, t_after, served in reads:
        # a device is read in several block requests, one after another, and the devices seconds apart under load:
        # each value must equal the model at a tick of its own read (a request never sees half a tick), and at that
        # tick the model with the faults must differ from the one without
        ticks = range((t_before - epoch_ns) // 500_000_000 - 1, (t_after - epoch_ns) // 500_000_000 + 2)
        steps = {k: (faulty.step(k, k * 0.5).copy(), clean.step(k, k * 0.5).copy()) for k in ticks}
        for i, r in enumerate(rows.tolist()):
            if r not in served:
                continue
            p, got = int(faulty.position[r]), served[r]
            wire = {k: float(np.float32(f[p])) for k, (f, _) in steps.items()}  # what a float32 register holds
            match = [k for k, w in wire.items() if (np.isnan(w) and np.isnan(got)) or np.isclose(got, w)]
            assert match, f"{watch[i]}: served {got} matches no tick of its read"
            f, c = steps[match[0]]
            differs[i] = bool(np.isnan(f[p]) or abs(f[p] - c[p]) > 1e-6)
    assert all(any(r in served for *_, served in reads) for r in rows.tolist())  # every watched signal was read
    assert differs.all(), [s for s, d in zip(watch, differs, strict=True) if not d]
