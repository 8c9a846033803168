"""A small plant for the write-action tests: leak-test stations on one Modbus slave and one OPC-UA server."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_plant(dir_: Path, modbus_port: int, opcua_port: int | None = None, byte_order: str = "ABCD") -> Path:
    """Plant file with two leak-test stations on ``act-plc`` (Modbus, registers in ``byte_order``) and, with a
    port, one on ``act-opc``."""
    lines = ["kind: plant", "site: ac-act", f"imports: [{ROOT / 'configs' / 'templates' / 'ac_factory.yaml'}]",
             "devices:",
             f"  - {{name: act-plc, protocol: modbus, port: {modbus_port}, unit_id: 1, byte_order: {byte_order}}}"]
    if opcua_port is not None:
        lines.append(f"  - {{name: act-opc, protocol: opcua, port: {opcua_port}}}")
    lines += ["machines:",
              "  - {name: 'line9.leak_test{i:02d}', template: leak_test, count: 2, device: act-plc}"]
    if opcua_port is not None:
        lines.append("  - {name: line9.leak_opc01, template: leak_test, device: act-opc}")
    path = dir_ / "plant.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path
