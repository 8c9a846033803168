"""Config validation, Telegraf-style: each folder under testcases/config holds a config and either
``expected`` (a substring of the summary) or ``expected_errors`` (each line must appear in the
report, with its path). One test walks all the folders.

The config is ``config.yaml``, or the folder's only other ``*.yaml`` (to test kinds told by the file
name, ``edge.yaml``); an optional ``kind`` file is ``--kind``; an optional ``unexpected`` file lists
lines that must not appear in the report (a file checked as the wrong kind says "unknown field")."""

from __future__ import annotations

from pathlib import Path

import pytest

from plantwire.check import check_file
from plantwire.cli import main as cli_main
from plantwire.configfile import ConfigError, ConfigKind, load_plant
from plantwire.plant import Protocol, expand, relocate_ports

ROOT = Path(__file__).resolve().parent.parent
CASES = sorted((Path(__file__).parent / "testcases" / "config").iterdir())


def _case_config(case: Path) -> Path:
    if (case / "config.yaml").exists():
        return case / "config.yaml"
    (only,) = case.glob("*.yaml")
    return only


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_config_case(case: Path) -> None:
    cfg = _case_config(case)
    kind = ConfigKind((case / "kind").read_text().strip()) if (case / "kind").exists() else None
    if (case / "expected").exists():
        assert (case / "expected").read_text().strip() in check_file(cfg, kind)
        return
    with pytest.raises(ConfigError) as info:
        check_file(cfg, kind)
    report = info.value.report()
    for line in (case / "expected_errors").read_text().splitlines():
        assert line.strip() in report, f"{line!r} not in:\n{report}"
    if (case / "unexpected").exists():
        for line in (case / "unexpected").read_text().splitlines():
            assert line.strip() not in report, f"{line!r} in:\n{report}"


def test_check_command_exits_2_and_names_the_path(capsys: pytest.CaptureFixture[str]) -> None:
    bad = CASES[[c.name for c in CASES].index("unknown_template")] / "config.yaml"
    assert cli_main(["check", str(bad)]) == 2
    assert "machines[2].template: unknown template 'prss'" in capsys.readouterr().err
    assert cli_main(["check", str(ROOT / "configs/dev/plant.yaml")]) == 0


@pytest.mark.parametrize(("name", "signals", "opcua_share"), [("dev", 1000, 0.2), ("demo", 15040, 3040 / 15040)])
def test_shipped_plants(name: str, signals: int, opcua_share: float) -> None:
    table = expand(load_plant(ROOT / "configs" / name / "plant.yaml"))
    assert len(table) == signals
    n_opcua = sum(1 for d in table.device.tolist() if table.devices[d].protocol is Protocol.OPCUA)
    assert n_opcua == pytest.approx(opcua_share * signals, rel=0.01)
    assert len({d.port for d in table.devices}) == len(table.devices)
    assert len(set(table.ids)) == signals
    for path in ("edge.yaml", "cloud.yaml"):
        check_file(ROOT / "configs" / name / path)


def test_register_layout_is_contiguous_and_non_overlapping() -> None:
    table = expand(load_plant(ROOT / "configs/demo/plant.yaml"))
    from plantwire.plant import REGISTER_WIDTH, TYPE_ORDER

    width = [REGISTER_WIDTH[TYPE_ORDER[t]] for t in table.reg_type.tolist()]
    seen: dict[tuple[int, int, int], str] = {}
    for i, sid in enumerate(table.ids):
        is_modbus = table.devices[int(table.device[i])].protocol is Protocol.MODBUS
        if not is_modbus or TYPE_ORDER[table.reg_type[i]].value == "bit":
            continue
        for r in range(int(table.address[i]), int(table.address[i]) + width[i]):
            key = (int(table.device[i]), int(table.table[i]), r)
            assert key not in seen, f"{sid} overlaps {seen[key]}"
            seen[key] = sid


def test_edge_relative_secret_paths_resolve(tmp_path: Path) -> None:
    """Generated OPC-UA identity lands in state_dir; operator-supplied files are beside the config."""
    from edge.config import load_edge

    (tmp_path / "edge.yaml").write_text(
        f"gateway_id: gw\nplant: {ROOT / 'configs' / 'dev' / 'plant.yaml'}\nstate_dir: state\n"
        "mqtt: {tls: {ca_file: pki/ca.crt, cert_file: pki/gw.crt, key_file: pki/gw.key}}\n"
        "opcua: {security: {mode: SignAndEncrypt, certificate: opcua/cert.der, private_key: opcua/key.pem,\n"
        "                   credentials_file: opcua.env, username_key: U, password_key: P}}\n"
    )
    cfg, _ = load_edge(tmp_path / "edge.yaml")
    sec, tls = cfg.opcua.security, cfg.mqtt.tls
    assert cfg.state_dir == tmp_path / "state"
    assert sec.certificate == tmp_path / "state" / "opcua" / "cert.der"
    assert sec.private_key == tmp_path / "state" / "opcua" / "key.pem"
    assert sec.credentials_file == tmp_path / "opcua.env"
    assert tls is not None
    assert tls.ca_file == tmp_path / "pki" / "ca.crt" and tls.key_file == tmp_path / "pki" / "gw.key"


def test_vendor_csv_register_map_expands_like_yaml_signals() -> None:
    from plantwire.plant import TABLE_ORDER, TYPE_ORDER, RegisterType, Table

    t = expand(load_plant(Path(__file__).parent / "testcases" / "config" / "register_map_csv" / "config.yaml"))
    row = {sid: i for i, sid in enumerate(t.ids)}
    p = row["comp1.discharge_pressure"]
    assert TABLE_ORDER[t.table[p]] is Table.HOLDING and TYPE_ORDER[t.reg_type[p]] is RegisterType.INT16
    assert t.scale[p] == 0.01 and t.units[p] == "bar" and t.high[p] == 16
    cur = row["comp1.motor_current"]
    assert TABLE_ORDER[t.table[cur]] is Table.INPUT and t.address[cur] - t.address[p] == 0  # both offset 0
    hours = row["comp1.run_hours"]
    assert t.address[hours] - t.address[p] == 9 and t.kinds[hours] == "counter"
    assert TABLE_ORDER[t.table[row["comp1.running"]]] is Table.COIL
    assert t.address[row["comp1.oil_level"]] - t.address[p] == 20  # YAML signals follow the CSV's


def test_relocated_port_blocks_never_overlap():
    """Free-port blocks are picked without binding: an overlapping pick is asked for again (a CI flake)."""
    plant = load_plant(ROOT / "configs" / "dev" / "plant.yaml")
    picks = iter([30000, 30001, 30000, 30002, 30100])  # the 2nd and 3rd picks overlap the 1st block
    moved = relocate_ports(plant, lambda count: next(picks))
    blocks = [set(range(g.port, g.port + g.count)) for g in moved.devices]
    assert [g.port for g in moved.devices] == [30000, 30002, 30100]
    assert all(not (a & b) for i, a in enumerate(blocks) for b in blocks[i + 1:])
    assert {g.port_step for g in moved.devices} == {1}
    picks = iter([30000, 30002, 30004, 30100])
    moved = relocate_ports(plant, lambda count: next(picks), avoid=[30003])  # a metrics port picked earlier
    assert [g.port for g in moved.devices] == [30000, 30004, 30100]
