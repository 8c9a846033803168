"""The edge as a Sparkplug B 3.0 edge node, checked by a host built on pysparkplug (tests/sparkplug_host.py).

Real parts: Mosquitto, the simulator serving the dev plant (1,000 signals) and the edge daemon, through
plantwire.pipeline (with the ingestor and InfluxDB, so the compact wire runs beside Sparkplug). The host
follows births, data and deaths through a rebirth, a broker restart and an edge restart; its view of every
metric's latest value must equal what the edge last read (written by the node at shutdown).
"""

from __future__ import annotations

import json
import math
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from sparkplug_host import Host

from plantwire.configfile import load_plant
from plantwire.pipeline import Pipeline
from plantwire.plant import expand
from plantwire.services import Mosquitto

ROOT = Path(__file__).resolve().parent.parent
GROUP, NODE = "plant-a", "gw-dev-01"
WAIT_S = 60.0


def _pipeline(tmp_path: Path, broker: Mosquitto, **sparkplug: Any) -> Pipeline:
    over = {"sparkplug": {"group_id": GROUP, "edge_node_id": NODE, **sparkplug}}
    return Pipeline(ROOT / "configs" / "dev", tmp_path / "state", broker=("127.0.0.1", broker.port),
                    edge_overrides=over)


def _births_complete(host: Host, since: int, n_devices: int) -> bool:
    nb = host.of("NBIRTH", since)
    return bool(nb) and host.count("DBIRTH", host.seen.index(nb[-1])) >= n_devices


def _metrics(port: int) -> dict[str, float]:
    """The edge's /metrics with labels kept (plantwire.pipeline.scrape sums over them)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        lines = resp.read().decode().splitlines()
    return {k: float(v) for k, _, v in (ln.rpartition(" ") for ln in lines if ln and not ln.startswith("#"))}


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return bool(a == b)


@pytest.mark.slow  # ~45 s: a whole pipeline, a broker restart and an edge restart
@pytest.mark.integration
def test_edge_node_births_data_rebirth_restarts(tmp_path: Path, mosquitto: Mosquitto) -> None:
    host = Host(mosquitto.port, GROUP, NODE)
    host.start()
    pipe = _pipeline(tmp_path, mosquitto)
    try:
        pipe.start()
        n_dev = len(expand(load_plant(ROOT / "configs" / "dev" / "plant.yaml")).machine_ids)  # a device per machine
        host.wait(lambda: _births_complete(host, 0, n_dev), WAIT_S, "NBIRTH and every DBIRTH")
        nbirth = host.of("NBIRTH")[0].payload
        names = {m.name: m for m in nbirth.metrics}
        assert names["Node Control/Rebirth"].value is False and names["Node Control/Rebirth"].alias is None
        assert names["bdSeq"].datatype == 4  # Int64
        first_bd = host.bd_seq
        dbirths = host.of("DBIRTH")
        assert {s.device for s in dbirths} >= {"line1.compressor01", "hall.hvac01"}
        aliases: set[int] = set()
        for s in dbirths[:n_dev]:
            for m in s.payload.metrics:
                assert m.name and m.alias is not None and m.datatype != 0, m
                assert m.alias not in aliases, f"alias {m.alias} used twice"
                aliases.add(m.alias)
        props = host.properties("line1.compressor01")
        assert props["discharge_pressure"]["Quality"] in (0, 192, 500)
        assert props["discharge_pressure"]["engUnit"] == "bar"
        assert "Alarms/Active" in props

        # Live data: DDATA with aliases only, resolved by pysparkplug through the DBIRTH.
        mark = len(host.seen)
        host.wait(lambda: host.count("DDATA", mark) >= n_dev, WAIT_S, "DDATA from every device")

        # Rebirth: same bdSeq, seq back to 0, complete BIRTH sequence.
        mark = len(host.seen)
        host.rebirth()
        host.wait(lambda: _births_complete(host, mark, n_dev), WAIT_S, "rebirth")
        assert host.bd_seq == first_bd

        # A bad command is counted and changes nothing.
        host.raw_publish(f"spBv1.0/{GROUP}/NCMD/{NODE}", b"\xff\xff not protobuf")
        host.raw_publish(f"spBv1.0/{GROUP}/DCMD/{NODE}/line1.press01", b"")
        mark = len(host.seen)
        host.wait(lambda: host.count("DDATA", mark) >= n_dev, WAIT_S, "DDATA after bad commands")

        # Broker restart: the edge comes back with the next bdSeq and a new BIRTH sequence.
        mosquitto.stop()
        mark = len(host.seen)
        mosquitto.start()
        host.wait(lambda: _births_complete(host, mark, n_dev), WAIT_S, "births after a broker restart")
        assert host.bd_seq == (first_bd + 1) % 256
        bd_before_restart = host.bd_seq

        # Edge restart: NDEATH with the bdSeq of the NBIRTH, then births with the next one.
        mark = len(host.seen)
        m = _metrics(pipe.edge_metrics_port)
        assert m.get('plantwire_edge_sparkplug_commands_rejected_total{reason="bad_payload"}') == 1, m
        assert m.get('plantwire_edge_sparkplug_commands_rejected_total{reason="dcmd_not_writable"}') == 1, m
        assert m.get("plantwire_edge_sparkplug_rebirths_total") == 1
        pipe.halt("edge")
        host.wait(lambda: host.count("NDEATH", mark) >= 1, WAIT_S, "NDEATH at edge stop")
        assert host.of("NDEATH", mark)[0].payload.bd_seq_metric.value == bd_before_restart
        # The compact wire beside it: everything read was published and acknowledged, broker restart included.
        edge = pipe.edge_stats()
        assert edge["samples_acked"] == edge["samples_published"] == edge["samples_read"] > 0, edge
        last = json.loads((tmp_path / "state" / "edge" / "sparkplug" / "last_values.json").read_text())
        view = {d: dict(v) for d, v in host.view.items()}
        wrong = [(d, n, v, view.get(d, {}).get(n)) for d, metrics in last["read"].items() for n, v in metrics.items()
                 if not _same(v, view.get(d, {}).get(n))]
        assert not wrong, f"{len(wrong)} metrics differ between the edge's last read and the host: {wrong[:5]}"
        assert sum(len(v) for v in last["read"].values()) >= 1000

        mark = len(host.seen)
        pipe.restart("edge")
        host.wait(lambda: _births_complete(host, mark, n_dev), WAIT_S, "births after an edge restart")
        assert host.bd_seq == (bd_before_restart + 1) % 256
        kinds = {s.kind for s in host.seen}
        assert {"NBIRTH", "DBIRTH", "DDATA", "NDEATH"} <= kinds
        assert host.errors == []
    finally:
        pipe.close()
        host.stop()
