"""Addressing in the plant model: node ids in every standard form, templated hosts/ports/unit ids, and
how register offsets are assigned per table (plantwire.plant, plantwire.nodeid)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from plantwire.check import check_file
from plantwire.nodeid import IdType, NodeRef, parse_node_id
from plantwire.plant import PlantConfig, PlantLayoutError, RegisterLayout, Table, expand

GUID = "09087e75-8e5e-499b-954f-f2a9603db28a"


@pytest.mark.parametrize(("text", "expected"), [
    ("ns=3;i=1001", NodeRef(IdType.NUMERIC, 1001, 3)),
    ("i=2258", NodeRef(IdType.NUMERIC, 2258, 0)),
    ("ns=2;s=Line1.Press07.OilTemp", NodeRef(IdType.STRING, "Line1.Press07.OilTemp", 2)),
    ('ns=3;s="DB1"."Temp"', NodeRef(IdType.STRING, '"DB1"."Temp"', 3)),
    ("ns=3;s=a;b=c", NodeRef(IdType.STRING, "a;b=c", 3)),  # everything after s= is the identifier
    (f"ns=2;g={GUID}", NodeRef(IdType.GUID, uuid.UUID(GUID), 2)),
    ("ns=2;b=M/RbKBsRVkePCePcx24oRA==", NodeRef(IdType.OPAQUE, bytes.fromhex("33f45b281b1156478f09e3dcc76e2844"), 2)),
    ("nsu=urn:vendor:plc;s=Temp", NodeRef(IdType.STRING, "Temp", None, "urn:vendor:plc")),
    ("nsu=http://x.org/UA/;i=7", NodeRef(IdType.NUMERIC, 7, None, "http://x.org/UA/")),
])
def test_node_id_forms_parse_and_round_trip(text: str, expected: NodeRef) -> None:
    ref = parse_node_id(text)
    assert ref == expected
    assert parse_node_id(ref.text()) == ref


@pytest.mark.parametrize(("text", "says"), [
    ("", "empty"), ("ns=3;x=1", "i=, s=, g= or b="), ("ns=a;i=1", "ns=<index"), ("ns=3;i=-1", "integer"),
    ("ns=3;i=4294967296", "integer"), ("ns=2;g=xyz", "GUID"), ("ns=2;b=@@", "base64"), ("nsu=;i=1", "nsu="),
    ("ns=3;s=", "empty identifier"), ("ns=70000;i=1", "0..65535"),
])
def test_bad_node_ids_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        parse_node_id(text)
    assert says in str(info.value)


def _plant(devices: list[dict], templates: dict, machines: list[dict]) -> PlantConfig:
    return PlantConfig.model_validate({"site": "t", "templates": templates, "devices": devices, "machines": machines})


def test_explicit_nodes_are_independent_of_signal_ids_and_filled_per_machine() -> None:
    plant = _plant(
        [{"name": "opc", "protocol": "opcua", "port": 4840, "namespace": "urn:a"}],
        {"t": {"signals": [
            {"name": "temp", "node": 'ns=3;s="DB{i}"."Temp"'},
            {"name": "speed", "node": "ns=3;i={i}00{j}", "count": 1},
            {"name": "z_{j}", "count": 2, "node": "nsu=urn:b;s={machine}.Zone[{j}]"},
            {"name": "plain"},
        ]}},
        [{"name": "press{i}", "template": "t", "count": 2, "device": "opc"}],
    )
    table = expand(plant)
    assert table.ids[:5] == ["press1.temp", "press1.speed", "press1.z_1", "press1.z_2", "press1.plain"]
    assert table.nodes == [
        'ns=3;s="DB1"."Temp"', "ns=3;i=1001", "nsu=urn:b;s=press1.Zone[1]", "nsu=urn:b;s=press1.Zone[2]",
        "nsu=urn:a;s=press1.plain",
        'ns=3;s="DB2"."Temp"', "ns=3;i=2001", "nsu=urn:b;s=press2.Zone[1]", "nsu=urn:b;s=press2.Zone[2]",
        "nsu=urn:a;s=press2.plain",
    ]


def test_node_namespace_index_must_exist_in_the_device_namespaces() -> None:
    plant = _plant(
        [{"name": "opc", "protocol": "opcua", "port": 4840, "namespace": "urn:a",
          "namespaces": ["http://opcfoundation.org/UA/", "urn:a"]}],
        {"t": {"signals": [{"name": "x", "node": "ns=2;i=5"}]}}, [{"name": "m", "template": "t", "device": "opc"}])
    assert plant.semantic_errors() == [
        "templates.t.signals[0].node: 'ns=2;i=5' names namespace 2, but device 'opc' lists 2 namespaces"]


def test_hosts_ports_and_unit_ids_are_templated_from_the_index() -> None:
    plant = _plant(
        [{"name": "plc{i:02d}", "protocol": "modbus", "count": 3, "host": "10.0.3.{i}", "port": 502, "port_step": 0},
         {"name": "gw{i}", "protocol": "modbus", "count": 2, "host": "10.0.4.1", "port": "50{i:02d}",
          "unit_id": "{i}"}],
        {"t": {"signals": [{"name": "a"}]}},
        [{"name": "m{i}", "template": "t", "count": 3, "device": "plc{i:02d}"},
         {"name": "g{i}", "template": "t", "count": 2, "device": "gw{i}"}])
    assert plant.semantic_errors() == []
    devs = expand(plant).devices
    assert [(d.name, d.host, d.port, d.unit_id) for d in devs] == [
        ("plc01", "10.0.3.1", 502, 1), ("plc02", "10.0.3.2", 502, 1), ("plc03", "10.0.3.3", 502, 1),
        ("gw1", "10.0.4.1", 5001, 1), ("gw2", "10.0.4.1", 5002, 2)]


def test_bad_templates_name_their_path() -> None:
    plant = _plant(
        [{"name": "a{i}", "protocol": "modbus", "count": 2, "port": 502, "unit_id": "{i}000"},
         {"name": "b{i}", "protocol": "modbus", "count": 2, "port": "x{i}"},
         {"name": "c{i}", "protocol": "modbus", "count": 2, "port": "6{i}", "port_step": 2}],
        {"t": {"signals": [{"name": "a"}]}}, [{"name": "m", "template": "t", "device": "a{i}"}])
    errors = plant.semantic_errors()
    assert "devices[0].unit_id: '{i}000' gives '1000' for device 1, not a unit id 0..255" in errors
    assert "devices[1].port: 'x{i}' gives 'x1' for device 1, not a port 1..65535" in errors
    assert any(e.startswith("devices[2].port_step: the port is a template") for e in errors)
    with pytest.raises(ValidationError, match="less than or equal to 255"):
        _plant([{"name": "a", "protocol": "modbus", "port": 502, "unit_id": 300}], {}, [])


def test_same_plc_in_two_groups_is_an_error(tmp_path: Path) -> None:
    tpl = {"t": {"signals": [{"name": "a"}]}}
    same = [{"name": "a", "protocol": "modbus", "host": "10.0.0.1", "port": 502},
            {"name": "b", "protocol": "modbus", "host": "10.0.0.1", "port": 502}]
    plant = _plant(same, tpl, [{"name": "m", "template": "t", "device": "a"}])
    assert plant.semantic_errors() == ["devices[1].port: 'b' and devices[0] 'a' both use 10.0.0.1:502"]
    other_unit = _plant([same[0], {**same[1], "unit_id": 2}], tpl, [{"name": "m", "template": "t", "device": "a"}])
    assert other_unit.semantic_errors() == [] and other_unit.semantic_warnings() == []  # one gateway, two units


MIXED = {"t": {"signals": [
    {"name": "h1", "type": "float32"}, {"name": "h2", "type": "uint16"},
    {"name": "i1", "type": "int16", "table": "input"}, {"name": "i2", "type": "float32", "table": "input"},
]}, "inputs_only": {"signals": [{"name": "x", "table": "input", "type": "uint16"}]}}
MACHINES = [{"name": "a", "template": "t", "device": "plc"}, {"name": "b", "template": "inputs_only", "device": "plc"}]


def _addresses(layout: str | None) -> dict[str, tuple[Table, int]]:
    dev = {"name": "plc", "protocol": "modbus", "port": 502}
    if layout is not None:
        dev["register_layout"] = layout
    table = expand(_plant([dev], MIXED, MACHINES))
    tables = list(Table)
    return {sid: (tables[int(t)], int(a)) for sid, t, a in zip(table.ids, table.table, table.address, strict=True)}


def test_shared_layout_keeps_the_addresses_plants_had_before() -> None:
    """One cursor over all tables: what every existing plant file reads (pinned, not recomputed)."""
    expected = {"a.h1": (Table.HOLDING, 0), "a.h2": (Table.HOLDING, 2), "a.i1": (Table.INPUT, 3),
                "a.i2": (Table.INPUT, 4), "b.x": (Table.INPUT, 10)}
    assert _addresses(None) == expected
    assert _addresses("shared") == expected


def test_per_table_layout_numbers_each_table_from_zero() -> None:
    assert _addresses("per_table") == {"a.h1": (Table.HOLDING, 0), "a.h2": (Table.HOLDING, 2),
                                       "a.i1": (Table.INPUT, 0), "a.i2": (Table.INPUT, 1), "b.x": (Table.INPUT, 10)}


def test_per_table_strides_follow_each_tables_block() -> None:
    """Machines with 12 holding and 3 input registers: holding blocks every 20, input blocks every 10."""
    tpl = {"t": {"signals": [{"name": "h_{j}", "count": 6}, {"name": "i_{j}", "count": 3, "type": "uint16",
                                                                "table": "input"}]}}
    plant = _plant([{"name": "plc", "protocol": "modbus", "port": 502, "register_layout": "per_table"}], tpl,
                   [{"name": "m{i}", "template": "t", "count": 3, "device": "plc"}])
    table = expand(plant)
    starts = {sid: int(a) for sid, a in zip(table.ids, table.address, strict=True) if sid.endswith("_1")}
    assert starts == {"m1.h_1": 0, "m1.i_1": 0, "m2.h_1": 20, "m2.i_1": 10, "m3.h_1": 40, "m3.i_1": 20}
    assert plant.devices[0].layout() is RegisterLayout.PER_TABLE


def test_unset_layout_with_mixed_tables_warns(tmp_path: Path) -> None:
    plant = _plant([{"name": "plc", "protocol": "modbus", "port": 502}], MIXED, MACHINES)
    assert plant.semantic_warnings() == [
        "devices[0].register_layout: unset, so the holding, input tables share one address cursor (shared); "
        "set register_layout: per_table to number each table from 0, or shared to keep these addresses"]
    for layout in ("shared", "per_table"):
        dev = {"name": "plc", "protocol": "modbus", "port": 502, "register_layout": layout}
        assert _plant([dev], MIXED, MACHINES).semantic_warnings() == []
    path = tmp_path / "plant.yaml"
    path.write_text('site: t\ntemplates: {t: {signals: [{name: a}, {name: b, table: input}]}}\n'
                    'devices: [{name: plc, protocol: modbus, port: 502}]\n'
                    'machines: [{name: m, template: t, device: plc}]\n')
    assert "warning: devices[0].register_layout: unset" in check_file(path)


def test_per_table_layout_still_rejects_overlaps_within_a_table() -> None:
    tpl = {"t": {"signals": [{"name": "a", "table": "input", "offset": 0},
                             {"name": "b", "table": "input", "offset": 1}]}}
    plant = _plant([{"name": "plc", "protocol": "modbus", "port": 502, "register_layout": "per_table"}], tpl,
                   [{"name": "m", "template": "t", "device": "plc"}])
    with pytest.raises(PlantLayoutError, match="overlaps"):
        expand(plant)


def test_templated_host_with_the_default_port_step_warns() -> None:
    tpl = {"t": {"signals": [{"name": "a"}]}}
    machines = [{"name": "m", "template": "t", "device": "plc{i}"}]
    dev = {"name": "plc{i}", "protocol": "modbus", "count": 3, "host": "10.0.3.{i}", "port": 502}
    assert _plant([dev], tpl, machines).semantic_warnings() == [
        "devices[0].port_step: the host is templated ('10.0.3.{i}') but the port steps by 1 from 502 (the default); "
        "set port_step: 0 when every device listens on 502"]
    for step in (0, 1):
        assert _plant([{**dev, "port_step": step}], tpl, machines).semantic_warnings() == []


def test_per_table_plant_reads_right_through_a_modbus_server() -> None:
    """Holding and input registers at the same addresses (per_table) stay apart on the wire and in the edge."""
    import asyncio

    import numpy as np

    from edge.sources.modbus import ModbusSource
    from edge.sources.stats import SourceStats
    from plantwire.ports import free_port
    from tests.test_modbus_source import Collector, expected_values, fast_settings, run_for, servers

    port = free_port()
    table = expand(_plant([{"name": "plc", "protocol": "modbus", "port": port, "register_layout": "per_table"}],
                          MIXED, [*MACHINES, {"name": "c", "template": "t", "device": "plc"}]))
    tables = list(Table)
    assert {(tables[int(t)], int(a)) for t, a in zip(table.table, table.address, strict=True)} >= {
        (Table.HOLDING, 0), (Table.INPUT, 0)}

    async def main() -> Collector:
        sink, stats = Collector(), SourceStats()
        async with servers(table):
            source = ModbusSource(table.devices[0], table, fast_settings(), sink, stats)
            await run_for(20, source, until=lambda: stats.samples_good >= len(table))
        return sink

    sink = asyncio.run(main())
    latest: dict[int, tuple[float, int]] = {}
    for _, _, sig, val, q in sink.calls:
        latest.update(zip(sig.tolist(), zip(val.tolist(), q.tolist(), strict=True), strict=True))
    rows = np.array(sorted(latest))
    assert len(rows) == len(table) and all(latest[r][1] == 0 for r in latest)
    assert np.allclose([latest[r][0] for r in rows.tolist()], expected_values(table, rows))
