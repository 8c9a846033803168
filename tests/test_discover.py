"""``plantwire discover`` against real servers on other stacks (node-opcua, modbus-serial: tests/foreign)
and against our own simulator, then the edge's sources on what it wrote: the output must pass
``plantwire check`` and be read unchanged.

The Node.js servers start once per module (node-opcua takes seconds); each test only reads them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import ModbusSettings
from edge.sources.modbus import ModbusSource
from edge.sources.opcua import OpcuaSource
from edge.sources.stats import SourceStats
from plantwire import wire
from plantwire.check import check_file
from plantwire.cli import main as cli_main
from plantwire.configfile import load_plant
from plantwire.plant import PlantConfig, Quality, expand
from plantwire.ports import free_port
from plantwire.registermap import read_register_map
from plantwire.services import Mosquitto
from tests.foreign.servers import NodeServer
from tests.test_opcua_source import Recorder, settings, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def node_opcua_pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """(port, PKI folder) of a node-opcua server: None endpoint, and SignAndEncrypt with strict trust."""
    port = free_port()
    d = tmp_path_factory.mktemp("node-opcua")
    server = NodeServer("opcua_server.js", str(port), str(d / "pki"))
    server.start(d / "server.log")
    try:
        yield port, d / "pki"
    finally:
        server.stop()


@pytest.fixture
def node_opcua(node_opcua_pki: tuple[int, Path]) -> int:
    return node_opcua_pki[0]


@pytest.fixture(scope="module")
def modbus_serial(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    server = NodeServer("modbus_server.js", str(port), "1")
    server.start(tmp_path_factory.mktemp("modbus-serial") / "server.log")
    try:
        yield port
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def running(source: OpcuaSource | ModbusSource) -> AsyncIterator[None]:
    task = asyncio.create_task(source.run(), name="source under test")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def discover(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = cli_main(["discover", *args])
    out, err = capsys.readouterr()
    return rc, out, err


# ---- OPC-UA: node-opcua -------------------------------------------------------------------------
def test_discover_node_opcua_writes_a_plant_the_edge_reads(node_opcua: int, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plant.yaml"
    url = f"opc.tcp://127.0.0.1:{node_opcua}/foreign"
    rc, _, err = discover([url, "--site", "foreign", "--device", "press-plc", "-o", str(out)], capsys)
    assert rc == 0, err
    # The server allows 4 nodes per Browse and 25 per Read and refuses more (BadTooManyOperations):
    # discovery finishing at all shows it kept to them; the file records what it read.
    text = out.read_text()
    assert "server limits: max_nodes_per_browse=4, max_nodes_per_read=25" in text
    assert "124 variables in 5 machines; skipped: 1 data type not a number or boolean" in text
    assert "discover: 124 variables in 5 machines" in err

    assert check_file(out) == f"{out}: plant 'foreign': 124 signals, 5 machines, 1 devices"  # no warnings
    (tmp_path / "edge.yaml").write_text("gateway_id: gw1\nplant: plant.yaml\n")
    assert "edge gateway 'gw1' reading 124 signals" in check_file(tmp_path / "edge.yaml")
    plant = load_plant(out)
    table = expand(plant)
    dev = plant.devices[0]
    assert dev.namespaces == ["http://opcfoundation.org/UA/", "urn:vm:NodeOPCUA-Server", "urn:foreign:other",
                              "urn:foreign:plant"] or dev.namespaces[2:] == ["urn:foreign:other", "urn:foreign:plant"]
    assert dev.namespace == "urn:foreign:plant" and (dev.host, dev.port, dev.path) == ("127.0.0.1", node_opcua,
                                                                                      "/foreign")
    press = {s.name: s for s in plant.templates["Line1.Press01"].signals}
    assert set(press) == {"Temp", "Speed", "Running", "Counter"}  # Label (String) is not a measurement
    assert press["Temp"].node == 'ns=3;s="DB1"."Temp"' and press["Temp"].type.value == "float64"
    assert (press["Temp"].unit, press["Temp"].low, press["Temp"].high) == ("°C", 0.0, 150.0)
    assert press["Speed"].node == "ns=3;i=1001" and press["Speed"].type.value == "int32"
    assert (press["Speed"].low, press["Speed"].high) == (0.0, 3000.0)
    assert press["Running"].node == "ns=3;g=09087e75-8e5e-499b-954f-f2a9603db28a" and press["Running"].kind == "state"
    assert press["Counter"].node == "ns=3;b=M/RbKBsRVkePCePcx24oRA=="
    assert plant.templates["Line2.Oven03"].signals[4].node == "ns=3;i=2305"
    assert table.machine_ids == ["Line1.Press01", "Line2.Oven01", "Line2.Oven02", "Line2.Oven03", "Line2.Oven04"]

    async def main() -> None:
        sink, stats = Recorder(), SourceStats()
        source = OpcuaSource(table.devices[0], table, settings(), sink, stats)
        async with running(source):
            await wait_for(lambda: len(set(sink.columns()[1].tolist())) == len(table), timeout_s=60,
                           what="a sample from every discovered variable")
            assert not source.refused and stats.samples_bad == 0  # (leaving marks every signal BAD once)
            _, rows, values, quality = sink.columns()
        assert np.all(quality == Quality.GOOD)
        latest = {table.ids[int(r)]: float(v) for r, v in zip(rows, values, strict=True)}
        assert 20 <= latest["Line1.Press01.Temp"] < 70 and 1000 <= latest["Line1.Press01.Speed"] < 1100
        assert latest["Line1.Press01.Running"] in (0.0, 1.0)
        assert 100 + 20 + 5 <= latest["Line2.Oven02.Zone05"] < 100 + 20 + 5 + 7

    asyncio.run(main())


@pytest.mark.slow  # ~15 s: the daemon's start-up; the default run covers the same path through OpcuaSource
def test_the_edge_daemon_publishes_every_discovered_signal(node_opcua: int, mosquitto: Mosquitto, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """``plantwire edge`` itself (not only its OPC-UA source) on the discovered file, unchanged: every
    signal of the node-opcua server arrives at the broker, GOOD, under the discovered ids."""
    rc, _, err = discover([f"opc.tcp://127.0.0.1:{node_opcua}/foreign", "--site", "foreign", "-q",
                           "-o", str(tmp_path / "plant.yaml")], capsys)
    assert rc == 0, err
    (tmp_path / "edge.yaml").write_text(
        f"gateway_id: gw-d\nplant: plant.yaml\nstate_dir: state\nmqtt: {{host: 127.0.0.1, port: {mosquitto.port}}}\n"
        "publish: {batch_interval_ms: 200}\nmetrics: {host: 127.0.0.1, port: 0}\n")
    seen: set[int] = set()
    bad: list[int] = []
    ids: list[str] = []
    lock = threading.Lock()

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with lock:
            if msg.topic.endswith("/signals"):
                ids[:] = wire.decode_signal_table(msg.payload).ids
            elif msg.topic.endswith("/telemetry"):
                batch = wire.decode_batch(msg.payload)
                seen.update(batch.signal[batch.quality == Quality.GOOD].tolist())
                bad.extend(batch.signal[batch.quality != Quality.GOOD].tolist())

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="discover-test")
    sub.on_message = on_message
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe("plantwire/v1/foreign/gw-d/#", qos=1)
    sub.loop_start()
    with (tmp_path / "edge.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "plantwire.cli", "edge", str(tmp_path / "edge.yaml")],
                                cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            with lock:
                if len(ids) == 124 and len(seen) == 124:
                    break
            time.sleep(0.1)  # polling a condition with a deadline
        log_text = (tmp_path / "edge.log").read_text(errors="replace")[-3000:]
        assert proc.poll() is None, log_text
        with lock:
            assert len(ids) == 124 and len(seen) == 124, log_text
            assert "Line1.Press01.Temp" in ids and not bad
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        sub.loop_stop()
        sub.disconnect()
    assert proc.returncode == 0


def test_the_edge_resolves_namespaces_by_uri_when_indices_differ(node_opcua: int, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A plant whose ``namespaces`` list puts the URI at another index is still read right: the URI counts."""
    out = tmp_path / "plant.yaml"
    rc, _, err = discover([f"opc.tcp://127.0.0.1:{node_opcua}/foreign", "-q", "-o", str(out)], capsys)
    assert rc == 0, err
    data = yaml.safe_load(out.read_text())
    dev = data["devices"][0]
    dev["namespaces"] = ["http://opcfoundation.org/UA/", "urn:foreign:plant"]  # the server has it at 3
    data["templates"] = {"t": {"signals": [{"name": "speed", "node": "ns=1;i=1001"},
                                           {"name": "temp", "node": 'nsu=urn:foreign:plant;s="DB1"."Temp"'}]}}
    data["machines"] = [{"name": "press", "template": "t", "device": dev["name"]}]
    table = expand(PlantConfig.model_validate(data))

    async def main() -> None:
        sink, stats = Recorder(), SourceStats()
        async with running(OpcuaSource(table.devices[0], table, settings(), sink, stats)):
            await wait_for(lambda: stats.samples_good >= 2 and len(set(sink.columns()[1].tolist())) == 2,
                           timeout_s=30, what="both signals")
            latest = dict(zip(sink.columns()[1].tolist(), sink.columns()[2].tolist(), strict=True))
        assert 1000 <= latest[0] < 1100 and 20 <= latest[1] < 70

    asyncio.run(main())


def test_discover_a_subtree_and_a_root_the_server_does_not_have(node_opcua: int, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    url = f"opc.tcp://127.0.0.1:{node_opcua}/foreign"
    rc, _, err = discover([url, "--root", "nsu=urn:foreign:plant;s=Line1", "-q", "-o", str(tmp_path / "p.yaml")],
                          capsys)
    assert rc == 0, err
    table = expand(load_plant(tmp_path / "p.yaml"))
    assert table.ids == ["Press01.Temp", "Press01.Speed", "Press01.Running", "Press01.Counter"]
    rc, out, err = discover([url, "--root", "ns=3;s=Nope", "-q"], capsys)
    assert (rc, out, err) == (1, "", "plantwire discover: the server refuses to browse the root ns=3;s=Nope: "
                                     "BadNodeIdUnknown\n")


def test_discover_refused_certificate_is_one_line_naming_the_file(node_opcua_pki: tuple[int, Path], tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """SignAndEncrypt against a server that checks client certificates strictly: the certificate we
    generated is refused, filed under the server's rejected certificates, and the one line says so."""
    port, pki = node_opcua_pki
    cert, key = tmp_path / "client.der", tmp_path / "client.pem"
    url = f"opc.tcp://127.0.0.1:{port}/foreign"
    rc, out, err = discover([url, "--security-mode", "SignAndEncrypt", "--certificate", str(cert),
                             "--private-key", str(key), "--timeout-s", "5", "-q"], capsys)
    assert rc == 1 and out == "" and cert.exists() and key.exists()
    assert err.strip().splitlines() == [
        f"plantwire discover: {url}: the server refused our certificate {cert} (AssertionError): add it to the "
        "server's trusted certificates (most servers list it under rejected certificates) and run again"]
    assert list((pki / "server" / "rejected").glob("urn_plantwire_edge*"))  # where the operator finds it


def test_discover_unreachable_opcua_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    rc, out, err = discover([f"opc.tcp://127.0.0.1:{port}/x", "--timeout-s", "2"], capsys)
    assert rc == 1 and out == ""
    assert err.strip().splitlines() == [f"plantwire discover: opc.tcp://127.0.0.1:{port}/x: connection refused "
                                        "(no OPC-UA server listens on that port)"]


def test_discover_silent_opcua_port_times_out_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A port that accepts TCP but never speaks OPC-UA (a wrong port, a hung server)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"opc.tcp://127.0.0.1:{listener.getsockname()[1]}/x"
        rc, out, err = discover([url, "--timeout-s", "1", "-q"], capsys)
    assert rc == 1 and out == ""
    assert err.strip().splitlines() == [f"plantwire discover: {url}: no OPC-UA answer within 1 s (is the host "
                                        "reachable, the port an OPC-UA server's, the server not overloaded? "
                                        "--timeout-s waits longer)"]


# ---- OPC-UA: our simulator -----------------------------------------------------------------------
def test_discover_our_simulator_gives_back_its_signal_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from simulators.opcua_server import OpcuaPlantServer
    from simulators.runtime import add_common_arguments, build_world, options_from_args

    port = free_port()
    sim_plant = PlantConfig.model_validate({
        "site": "sim",
        "templates": {"pump": {"signals": [{"name": "flow", "unit": "m3/h"}, {"name": "temp_{j}", "count": 2,
                                                                             "unit": "degC"}]}},
        "devices": [{"name": "opc", "protocol": "opcua", "port": port, "namespace": "urn:plantwire:sim"}],
        "machines": [{"name": "line1.pump{i:02d}", "template": "pump", "count": 2, "device": "opc"}],
    })
    parser = argparse.ArgumentParser()
    add_common_arguments(parser)
    world = build_world(options_from_args(parser.parse_args([str(tmp_path / "unused.yaml")])), sim_plant)
    sim_table = world.table
    out = tmp_path / "plant.yaml"

    async def main() -> None:
        rows = sim_table.signals_of(0)
        server = OpcuaPlantServer(sim_table, sim_table.devices[0], world.model(rows, 0))
        await server.start()
        try:
            rc = await asyncio.to_thread(cli_main, ["discover", sim_table.devices[0].endpoint, "-q", "-o", str(out)])
            assert rc == 0, capsys.readouterr().err
            table = expand(load_plant(out))
            assert table.ids == sim_table.ids and table.units == sim_table.units
            assert table.machine_ids == ["line1.pump01", "line1.pump02"]
            assert table.nodes[0] == "ns=2;s=line1.pump01.flow"
            sink, stats = Recorder(), SourceStats()
            async with running(OpcuaSource(table.devices[0], table, settings(), sink, stats)):
                await wait_for(lambda: len(set(sink.columns()[1].tolist())) == len(table), timeout_s=30,
                               what="a sample from every signal")
                assert stats.samples_bad == 0
        finally:
            await server.stop()

    asyncio.run(main())
    assert "plant 'site': 6 signals, 2 machines, 1 devices" in check_file(out)


# ---- Modbus: modbus-serial ------------------------------------------------------------------------
def test_discover_modbus_serial_finds_ranges_and_writes_a_map_the_edge_reads(
        modbus_serial: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv_path = tmp_path / "map.csv"
    t0 = time.monotonic()
    rc, _, err = discover([f"modbus://127.0.0.1:{modbus_serial}", "--unit", "1", "--max-address", "999",
                           "-o", str(csv_path)], capsys)
    elapsed_s = time.monotonic() - t0
    assert rc == 0, err
    text = csv_path.read_text()
    for line in ["# coil: 00001-00016 answer (16)", "# coil: 00017-01000 exception 02 (illegal data address)",
                 "# discrete: 10001-11000 exception 02 (illegal data address)",
                 "# holding: 40001-40100 answer (100)", "# holding: 40101-40120 exception 02 (illegal data address)",
                 "# holding: 40121-40130 answer (10)", "# holding: 40131-41000 exception 02 (illegal data address)",
                 "# input: 30001-30050 answer (50)", "# input: 30051-31000 exception 02 (illegal data address)"]:
        assert line + "\n" in text, line
    assert "discover: holding: 110 answering, 2 exception ranges" in err
    assert elapsed_s < 60

    rows = read_register_map(csv_path)  # the skeleton imports as is
    assert len(rows) == 16 + 110 + 50
    assert rows[16] == {"name": "hr_40001", "table": "holding", "offset": 0, "type": "uint16"}

    plant_path = tmp_path / "plant.yaml"
    plant_path.write_text(
        "site: t\ntemplates:\n  dev: {register_map: map.csv}\n"
        f"devices: [{{name: plc, protocol: modbus, port: {modbus_serial}, register_layout: per_table}}]\n"
        "machines: [{name: m, template: dev, device: plc}]\n")
    assert "176 signals, 1 machines, 1 devices" in check_file(plant_path)
    table = expand(load_plant(plant_path))
    ids = {sid: i for i, sid in enumerate(table.ids)}

    async def main() -> None:
        sink, stats = Recorder(), SourceStats()
        source = ModbusSource(table.devices[0], table, ModbusSettings(period_ms=100, timeout_s=1.0), sink, stats)
        async with running(source):
            await wait_for(lambda: stats.samples_good >= len(table), timeout_s=30, what="one poll of every address")
            _, r, v, q = sink.columns()
        assert np.all(q == Quality.GOOD)
        latest = dict(zip(r.tolist(), v.tolist(), strict=True))
        assert latest[ids["m.hr_40001"]] == 0 and latest[ids["m.hr_40100"]] == 990 and latest[ids["m.hr_40130"]] == 1290
        assert latest[ids["m.co_00001"]] == 1 and latest[ids["m.co_00002"]] == 0
        assert latest[ids["m.ir_30001"]] >= 0
        assert stats.errors == 0

    asyncio.run(main())


def test_discover_modbus_unit_that_gets_no_answer_is_one_line(modbus_serial: int,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = discover([f"modbus://127.0.0.1:{modbus_serial}", "--unit", "7", "--timeout-s", "0.5"], capsys)
    assert rc == 1 and out == ""
    lines = err.strip().splitlines()
    assert lines[-1].startswith(f"plantwire discover: 127.0.0.1:{modbus_serial} unit 7: no answer within 0.5 s")
    assert "the unit id is wrong" in lines[-1]
    assert all(line.startswith("discover: ") for line in lines[:-1])  # progress lines only, no traceback


def test_discover_modbus_refused_and_usage(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    rc, _, err = discover([f"modbus://127.0.0.1:{port}", "--unit", "1", "--timeout-s", "1", "-q"], capsys)
    assert rc == 1 and err.strip().splitlines() == [
        f"plantwire discover: 127.0.0.1:{port} unit 1: cannot connect within 1 s (is the host reachable and "
        "a Modbus TCP server listening on that port?)"]
    with pytest.raises(SystemExit) as info:
        cli_main(["discover", f"modbus://127.0.0.1:{port}"])
    assert info.value.code == 2 and "needs --unit N" in capsys.readouterr().err


def test_browsed_names_and_odd_node_ids_make_a_valid_plant() -> None:
    """Names the plant does not allow are cleaned, duplicates numbered; braces in a node id stay literal."""
    from asyncua import ua

    from edge.discovery.opcua_browse import BrowseResult, FoundVariable
    from edge.discovery.opcua_plant import plant_from_browse

    found = [FoundVariable(path=("Hall 2", "Press#1"), name="Oil temp (°C)", node=ua.NodeId("Tag{1}", 2),
                           data_type="float64", unit="°C", low=0.0, high=120.0),
             FoundVariable(path=("Hall 2", "Press#1"), name="Oil temp [°C]", node=ua.NodeId(7, 2), data_type="int16"),
             FoundVariable(path=(), name="Heartbeat", node=ua.NodeId(b"\x01\x02", 2), data_type="bool")]
    result = BrowseResult(namespaces=["http://opcfoundation.org/UA/", "urn:x", "urn:vendor"], limits={},
                          variables=found)
    data = plant_from_browse(result, site="s", device="d", host="h", port=4840, path="")
    table = expand(PlantConfig.model_validate(data))
    assert table.ids == ["Hall_2.Press_1.Oil_temp_C", "Hall_2.Press_1.Oil_temp_C_2", "root.Heartbeat"]
    assert table.nodes == ["ns=2;s=Tag{1}", "ns=2;i=7", "ns=2;b=AQI="]
    assert table.devices[0].namespace == "urn:vendor" and table.devices[0].endpoint == "opc.tcp://h:4840"
    assert np.isnan(table.low[1]) and (table.low[0], table.high[0]) == (0.0, 120.0)


def test_register_map_skeleton_warns_of_exception_gaps_the_edge_would_read_across() -> None:
    from edge.discovery.modbus_map import register_map_rows
    from edge.discovery.modbus_probe import ProbeResult, ProbeSettings, Range, TableProbe
    from plantwire.plant import Table

    h = Table.HOLDING
    probe = TableProbe(h, [Range(h, 0, 10), Range(h, 10, 14, 2), Range(h, 14, 20), Range(h, 20, 40, 2),
                           Range(h, 40, 41), Range(h, 41, 10000, 2)], reads=9, probed_to=10000)
    rows, comments = register_map_rows(ProbeResult("h", 502, 1, {h: probe}), ProbeSettings())
    assert [r["address"] for r in rows] == [f"4{n:04d}" for n in [*range(1, 11), *range(15, 21), 41]]
    gaps = [c for c in comments if "wide" in c]
    assert gaps == ["holding: the exception range 40011-40014 is only 4 wide: set modbus.max_gap below 4 in the "
                    "edge config, or its block reads will span it and fail"]  # 20 wide (40021-40040) is not spanned
