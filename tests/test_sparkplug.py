"""Sparkplug B edge node, fast tests: payloads decoded by pysparkplug, report by exception against a naive
reference, and the node on a real Mosquitto with a pysparkplug host (tests/sparkplug_host.py) for primary
host awareness (STATE), historical replay, analytics metrics, DDEATH/DBIRTH on PLC loss and bad commands.
The whole pipeline with restarts is in tests/test_sparkplug_host.py (slow)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sparkplug_host import Host, psp

from edge.config import MqttSettings
from edge.detectors.events import EVENT_DTYPE, Phase, Scope
from edge.sinks import sparkplug_payload as spb
from edge.sinks.sparkplug import NodePhase, SparkplugNode
from edge.sinks.sparkplug_catalogue import build, exceptions
from edge.sinks.sparkplug_settings import DeviceMapping, SparkplugSettings
from plantwire.configfile import load_plant
from plantwire.plant import Quality, SignalTable, expand
from plantwire.services import Mosquitto

ROOT = Path(__file__).resolve().parent.parent
GROUP, NODE = "plant-a", "edge-1"
WAIT_S = 30.0


@pytest.fixture(scope="module")
def table() -> SignalTable:
    return expand(load_plant(ROOT / "configs" / "dev" / "plant.yaml"))


# -- payloads --------------------------------------------------------------------------------------

def test_data_payload_decodes_with_pysparkplug_through_its_birth(table: SignalTable) -> None:
    cat = build(table, SparkplugSettings(group_id=GROUP, edge_node_id=NODE), with_health=True)
    ix = cat.device_metrics[0]
    n = ix.size
    values = np.linspace(0, 1, n)
    values[1] = np.nan
    birth_raw = spb.encode_birth(ts_ms=1000, seq=3, metrics=cat.columns(ix), value=values,
                                 quality=spb.quality_codes(np.zeros(n, dtype=np.uint8)),
                                 metric_ts_ms=np.full(n, 999, dtype=np.int64))
    birth = psp.DBirth.decode(birth_raw)
    assert birth.seq == 3 and len(birth.metrics) == n
    assert [m.name for m in birth.metrics] == cat.columns(ix).name
    assert birth.metrics[1].is_null and birth.metrics[0].value == 0.0
    q = np.array([Quality.GOOD, Quality.BAD, Quality.UNCERTAIN], dtype=np.uint8)
    raw = spb.encode_data(ts_ms=2000, seq=4, alias=cat.metrics.alias[ix[:3]], datatype=cat.metrics.datatype[ix[:3]],
                          value=np.array([1.5, np.nan, 2.5]), metric_ts_ms=np.array([1, 2, 3], dtype=np.int64),
                          quality=spb.quality_codes(q), send_quality=np.array([False, True, True]), historical=True)
    data = psp.DData.decode(raw, birth=birth)
    assert [m.name for m in data.metrics] == cat.columns(ix[:3]).name
    assert data.metrics[0].value == 1.5 and data.metrics[1].is_null and data.metrics[2].value == 2.5
    assert all(m.is_historical for m in data.metrics) and [m.timestamp for m in data.metrics] == [1, 2, 3]
    pb = spb.pb.Payload.FromString(raw)
    assert all(not m.HasField("name") and not m.HasField("datatype") for m in pb.metrics)  # aliases only
    assert not pb.metrics[0].HasField("properties")
    assert [(m.properties.keys[0], m.properties.values[0].type, m.properties.values[0].int_value)
            for m in pb.metrics[1:]] == [("Quality", 3, 0), ("Quality", 3, 500)]
    death = psp.NDeath.decode(spb.encode_ndeath(7))
    assert death.bd_seq_metric.name == "bdSeq" and death.bd_seq_metric.value == 7
    assert not spb.pb.Payload.FromString(spb.encode_ndeath(7)).HasField("seq")


def test_commands_and_state_are_validated() -> None:
    with pytest.raises(spb.PayloadError):
        spb.decode_command(b"\xff\xff\xff")
    now = psp.get_current_timestamp()
    cmd = psp.NCmd(timestamp=now, metrics=(psp.Metric(timestamp=now, name=spb.REBIRTH, datatype=psp.DataType.BOOLEAN,
                                                       value=True),))
    assert spb.decode_command(cmd.encode(include_dtypes=True)) == [spb.Command(spb.REBIRTH, None, True)]
    assert spb.decode_state(b'{"online": true, "timestamp": 5}') == spb.HostState(True, 5)
    for bad in (b"nope", b"[]", b'{"online": 1, "timestamp": 5}', b'{"online": true}'):
        with pytest.raises(spb.PayloadError):
            spb.decode_state(bad)


def test_report_by_exception_matches_a_naive_loop() -> None:
    rng = np.random.default_rng(3)
    n = 2000
    sent = rng.normal(size=n)
    new = sent + rng.normal(scale=0.1, size=n)
    new[rng.random(n) < 0.1] = np.nan
    sent[rng.random(n) < 0.1] = np.nan
    new[:50] = sent[:50]
    thr = np.where(rng.random(n) < 0.5, 0.0, 0.08)
    q_new = rng.integers(0, 3, n).astype(np.uint8)
    q_sent = np.where(rng.random(n) < 0.8, q_new, 0).astype(np.uint8)
    got = exceptions(new, q_new, sent, q_sent, thr)
    want = np.zeros(n, dtype=bool)
    for i in range(n):
        a, b = new[i], sent[i]
        if q_new[i] != q_sent[i] or np.isnan(a) != np.isnan(b):
            want[i] = True
        elif not np.isnan(a):
            want[i] = abs(a - b) > thr[i]
    np.testing.assert_array_equal(got, want)


def test_deadband_rules_and_plc_mapping(table: SignalTable) -> None:
    s = SparkplugSettings(group_id=GROUP, edge_node_id=NODE, devices=DeviceMapping.PLC, deadband_absolute=0.01,
                          deadbands=[{"match": ["*.discharge_pressure"], "percent": 1.0},
                                     {"match": ["*pressure*"], "absolute": 0.5}])
    cat = build(table, s, with_health=False)
    assert len(cat.device_ids) == len(table.devices)
    i = table.ids.index("line1.compressor01.discharge_pressure")
    assert cat.threshold[i] == pytest.approx(0.35)  # 1 % of 0..35 bar
    assert cat.threshold[table.ids.index("line1.compressor01.suction_pressure")] == 0.5
    assert cat.threshold[table.ids.index("line1.compressor01.oil_temp")] == 0.01
    assert cat.metrics.name[i] == "line1.compressor01/discharge_pressure"
    assert len(set(cat.metrics.alias.tolist())) == cat.n_metrics


# -- the node on a real broker ------------------------------------------------------------------------

class _Run:
    def __init__(self, node: SparkplugNode, host: Host, table: SignalTable) -> None:
        self.node, self.host, self.table = node, host, table
        self.t_ns = time.time_ns()

    def frame(self, value: np.ndarray, quality: int = 0) -> None:
        """One sample of every signal, 1 s after the previous frame."""
        self.t_ns += 1_000_000_000
        n = len(self.table)
        self.node.on_frame(np.full(n, self.t_ns, dtype=np.int64), np.arange(n, dtype=np.uint32), value,
                           np.full(n, quality, dtype=np.uint8))

    def wait(self, pred, what: str):  # type: ignore[no-untyped-def]
        """Wait on the host while ticking the node (history replay runs on the tick, as in the daemon)."""
        deadline = time.monotonic() + WAIT_S
        while True:
            self.node.tick()
            try:
                return self.host.wait(pred, 0.2, what)
            except AssertionError:
                if time.monotonic() > deadline:
                    raise


@pytest.fixture
def run(request: pytest.FixtureRequest, table: SignalTable, mosquitto: Mosquitto, tmp_path: Path) -> Iterator[_Run]:
    over = getattr(request, "param", {})
    settings = SparkplugSettings(group_id=GROUP, edge_node_id=NODE, **over)
    node = SparkplugNode(settings, MqttSettings(port=mosquitto.port), table, tmp_path, with_health=True)
    host = Host(mosquitto.port, GROUP, NODE, host_id=settings.primary_host_id)
    host.start(online=False)
    r = _Run(node, host, table)
    node.start()
    try:
        yield r
    finally:
        node.stop()
        host.stop()


def _births(host: Host, since: int, n_dev: int) -> bool:
    nb = host.of("NBIRTH", since)
    return bool(nb) and host.count("DBIRTH", host.seen.index(nb[-1])) >= n_dev


@pytest.mark.integration
@pytest.mark.parametrize("run", [{"deadband_absolute": 0.5}], indirect=True)
def test_deadbands_quality_analytics_and_plc_loss(run: _Run, table: SignalTable) -> None:
    node, host = run.node, run.host
    cat = node.catalogue
    n_dev = len(cat.device_ids)
    run.wait(lambda: _births(host, 0, n_dev), "births")
    base = np.arange(len(table), dtype=np.float64)
    mark = len(host.seen)
    run.frame(base)
    host.wait(lambda: sum(len(s.payload.metrics) for s in host.of("DDATA", mark)) >= len(table), WAIT_S, "first")
    mark = len(host.seen)
    run.frame(base + 0.4)  # inside the deadband: nothing
    run.frame(base + 0.4)
    moved = base.copy()
    moved[[0, 5]] += 0.6  # outside: reported
    run.frame(moved, quality=0)
    host.wait(lambda: host.count("DDATA", mark) >= 1, WAIT_S, "DDATA over the deadband")
    data = host.of("DDATA", mark)
    assert len(data) == 1 and len(data[0].payload.metrics) == 2, data
    dev0 = cat.device_ids[cat.device_of[0]]
    assert host.view[dev0][cat.metrics.name[0]] == 0.6

    mark = len(host.seen)
    run.frame(moved, quality=int(Quality.BAD))  # quality change alone is reported, for every signal
    host.wait(lambda: sum(len(s.payload.metrics) for s in host.of("DDATA", mark)) >= len(table), WAIT_S, "quality")

    # Alarm events and a health tick become metrics of their device.
    ev = np.zeros(2, dtype=EVENT_DTYPE)
    ev["entity"] = [0, 1]  # two signals of the first machine
    ev["scope"] = Scope.SIGNAL
    ev["phase"] = Phase.OPEN
    ev["ts_start"] = run.t_ns
    node.on_events(ev)
    m0 = int(table.machine[0])
    node.on_health(run.t_ns, np.array([m0]), (np.array([0.8]), np.array([120.0]), np.array([90.0]),
                                              np.array([150.0])))
    dev_m0 = cat.device_ids[cat.device_of[cat.alarm_metric(np.array([m0]))[0]]]
    host.wait(lambda: host.view[dev_m0].get("Alarms/Active") == 2 and host.view[dev_m0].get("Health/RUL") == 120.0,
              WAIT_S, "analytics metrics")
    assert host.view[dev_m0]["Health/Index"] == 0.8

    # A PLC lost: DDEATH for its devices; back: DBIRTH with current values.
    plc = int(cat.plc_of_device[0])
    up = np.ones(len(table.devices), dtype=bool)
    up[plc] = False
    mark = len(host.seen)
    node.set_plc_connected(up)
    gone = {cat.device_ids[d] for d in np.flatnonzero(cat.plc_of_device == plc).tolist()}
    host.wait(lambda: {s.device for s in host.of("DDEATH", mark)} == gone, WAIT_S, "DDEATH of the PLC's devices")
    assert not any(host.devices_online[d] for d in gone)
    up[plc] = True
    node.set_plc_connected(up)
    host.wait(lambda: {s.device for s in host.of("DBIRTH", mark)} == gone, WAIT_S, "DBIRTH when it is back")
    assert host.errors == []


@pytest.mark.integration
@pytest.mark.parametrize("run", [{"primary_host_id": "scada-1"}], indirect=True)
def test_primary_host_state_gates_publishing_and_history_replays_in_order(run: _Run, table: SignalTable) -> None:
    node, host = run.node, run.host
    n = len(table)
    # Connected, host not online: nothing published, frames stored.
    deadline = time.monotonic() + WAIT_S
    while node.phase is not NodePhase.AWAITING_HOST:
        assert time.monotonic() < deadline, "node never connected"
        time.sleep(0.05)
    for k in range(3):
        run.frame(np.full(n, float(k)))
        node.tick()
    assert node.stats.metrics_stored == 3 * n
    assert host.count("NBIRTH") == 0 and host.count("DDATA") == 0

    # Host online: births with the latest values, then the stored values as historical DDATA, in order.
    host.publish_state(True)
    run.wait(lambda: sum(len(v) for d in host.historical.values() for v in d.values()) >= 3 * n, "history")
    nb = host.seen.index(host.of("NBIRTH")[0])
    first_hist = next(i for i, s in enumerate(host.seen) if s.kind == "DDATA")
    assert first_hist > nb
    dev0 = node.catalogue.device_ids[node.catalogue.device_of[0]]
    series = host.historical[dev0][node.catalogue.metrics.name[0]]
    assert [v for _, v in series] == [0.0, 1.0, 2.0]
    assert [t for t, _ in series] == sorted(t for t, _ in series)
    assert host.view[dev0][node.catalogue.metrics.name[0]] == 2.0  # from the DBIRTH: the current value
    assert node.stats.metrics_historical == 3 * n

    # A stale offline STATE (older timestamp) is ignored; a current one makes the node leave and wait.
    bd = host.bd_seq
    host.raw_publish("spBv1.0/STATE/scada-1", spb.encode_state(False, 1))
    run.frame(np.full(n, 3.0))
    host.wait(lambda: host.count("DDATA", first_hist) >= 1, WAIT_S, "live DDATA")
    mark = len(host.seen)
    host.publish_state(False)
    host.wait(lambda: host.count("NDEATH", mark) == 1, WAIT_S, "NDEATH on host offline")
    assert host.of("NDEATH", mark)[0].payload.bd_seq_metric.value == bd
    run.wait(lambda: node.phase is NodePhase.AWAITING_HOST, "reconnect, waiting for the host")
    run.frame(np.full(n, 4.0))
    assert host.count("NBIRTH", mark) == 0
    host.publish_state(True)
    run.wait(lambda: host.count("NBIRTH", mark) == 1 and series[-1][1] == 4.0, "births and history again")
    assert host.bd_seq == (bd + 1) % 256
    assert host.count("STATE") >= 3  # decoded by pysparkplug: online, offline, online
    assert host.errors == []


@pytest.mark.integration
def test_bad_commands_are_counted_and_rebirth_answered(run: _Run) -> None:
    node, host = run.node, run.host
    n_dev = len(node.catalogue.device_ids)
    run.wait(lambda: _births(host, 0, n_dev), "births")
    for payload in (b"\x08", b"\xff\xfe garbage"):
        host.raw_publish(f"spBv1.0/{GROUP}/NCMD/{NODE}", payload)
    host.dcmd(node.catalogue.device_ids[0], node.catalogue.metrics.name[0], 1.0)
    mark = len(host.seen)
    host.rebirth()
    host.wait(lambda: _births(host, mark, n_dev), WAIT_S, "rebirth")
    assert {"DCMD", "NCMD"} <= {s.kind for s in host.seen}  # pysparkplug decoded its own commands too
    rejected = node.stats.commands_rejected
    assert rejected["dcmd_not_writable"] == 1 and rejected["bad_payload"] >= 1, rejected
    assert node.stats.rebirths == 1 and host.errors == []


def test_config_section_is_optional_and_validated(tmp_path: Path) -> None:
    from edge.config import EdgeConfig
    from plantwire.configfile import ConfigError, validate

    assert validate(EdgeConfig, {"gateway_id": "g", "plant": "p.yaml"}, "edge.yaml").sparkplug is None
    cfg = validate(EdgeConfig, {"gateway_id": "g", "plant": "p.yaml", "sparkplug": {
        "group_id": "plant-a", "edge_node_id": "edge-1", "devices": "plc", "primary_host_id": "scada",
        "deadbands": [{"match": ["*temp*"], "absolute": 0.2}]}}, "edge.yaml")
    assert cfg.sparkplug is not None and cfg.sparkplug.devices is DeviceMapping.PLC
    with pytest.raises(ConfigError) as err:
        validate(EdgeConfig, {"gateway_id": "g", "plant": "p.yaml",
                              "sparkplug": {"group_id": "a/b", "edge_node_id": "e", "devices": "line"}}, "edge.yaml")
    report = err.value.report()
    assert "sparkplug.group_id" in report and "sparkplug.devices" in report, report


def test_history_store_is_bounded_and_counts_what_it_drops(table: SignalTable, tmp_path: Path) -> None:
    from plantwire.ports import free_port

    settings = SparkplugSettings(group_id=GROUP, edge_node_id=NODE, store_max_bytes=256 * 1024)
    node = SparkplugNode(settings, MqttSettings(port=free_port()), table, tmp_path)  # no broker there
    node.start()
    try:
        r = _Run(node, None, table)  # type: ignore[arg-type]
        rng = np.random.default_rng(1)
        for _ in range(80):
            r.frame(rng.normal(size=len(table)))
            node.tick()
        st = node._store.stats_dict()  # type: ignore[union-attr]
        assert node.phase is NodePhase.DISCONNECTED
        assert node.stats.metrics_stored == 80 * len(table)
        assert st["dropped_samples"] > 0 and st["bytes"] <= 256 * 1024
        assert st["samples"] + st["dropped_samples"] == node.stats.metrics_stored
    finally:
        node.stop()


def test_feed_merges_adjacent_frames_keeps_order_and_bounds_memory(table: SignalTable, tmp_path: Path) -> None:
    from edge.sinks.sparkplug_feed import SparkplugFeed, _latest_per_signal
    from plantwire.ports import free_port

    rng = np.random.default_rng(5)
    sig = rng.integers(0, 50, 400).astype(np.uint32)
    ts = np.arange(400, dtype=np.int64)
    got = _latest_per_signal(ts, sig, ts.astype(np.float64), np.zeros(400, dtype=np.uint8))
    want = {int(s): i for i, s in enumerate(sig.tolist())}  # naive: the last index of each signal
    assert dict(zip(got[1].tolist(), got[0].tolist(), strict=True)) == want
    assert np.all(np.diff(got[0]) > 0)  # arrival order kept

    settings = SparkplugSettings(group_id=GROUP, edge_node_id=NODE, history="drop")
    node = SparkplugNode(settings, MqttSettings(port=free_port()), table, tmp_path)  # no broker there
    feed = SparkplugFeed(node)  # worker not started yet: the queue is observable
    n = len(table)
    r = _Run(node, None, table)  # type: ignore[arg-type]
    frame = (np.full(n, r.t_ns, dtype=np.int64), np.arange(n, dtype=np.uint32), np.ones(n),
             np.zeros(n, dtype=np.uint8))
    feed.frame(*frame)
    feed.frame(*frame)
    feed.call(node.tick)
    for _ in range(3):
        feed.frame(*frame)
    assert [fn.__name__ for fn, _ in feed._queue] == ["on_frame", "tick", "on_frame"]
    assert feed._queue[0][1][1].shape[0] == 2 * n  # two frames merged
    assert feed._queue[2][1][1].shape[0] == n  # three frames merged, then shrunk to one sample per signal
    assert feed.frames_merged == 3
    feed.start()
    feed.close()
    assert feed.errors == 0 and feed.pending == 0
    assert node.stats.metrics_dropped == n  # history: drop, never connected; the same values only once

    from edge.sinks.sparkplug_settings import FeedMode

    node2 = SparkplugNode(settings, MqttSettings(port=free_port()), table, tmp_path / "inline")
    inline = SparkplugFeed(node2, FeedMode.INLINE)
    inline.start()
    inline.frame(*frame)  # runs at once on this thread
    assert node2.stats.metrics_dropped == n and inline.pending == 0
    inline.close()
