"""The naive baseline: the same job done the way a Python user would write it by hand.

Two processes, run by ``bench/e2e.py --naive`` in place of plantwire's edge and ingestor, against
the same simulator, broker and InfluxDB:

- ``gateway EDGE.yaml``: one pymodbus ``AsyncModbusTcpClient`` per device polling each machine's
  register range with one read (the coalescing a careful user does by hand: a machine's registers
  are contiguous), each value decoded with ``struct`` in Python; asyncua ``read_values`` of every
  node of each OPC-UA server once per period; **one JSON message per sample** published with
  paho-mqtt at QoS 1 on ``naive/<gateway>/<signal>``.
- ``ingest CLOUD.yaml``: paho-mqtt subscriber, ``json.loads`` per message, one influxdb-client
  ``Point`` per sample, serialised with ``Point.to_line_protocol()`` and posted in batches of
  5,000 to ``/write`` (influxdb-client's own write API posts to ``/api/v2/write``, which
  InfluxDB 1.6 does not have; see shared/MEASURED.md trap 6, so the Points are posted raw).

Both expose the metric names and health keys ``plantwire.pipeline`` reads (the edge's
``samples_read_total``/``samples_acked_total`` and the ingestor's ``samples_written_total``/
``pending_messages``) and the gateway writes ``stats.json`` with per-signal read counts, so the
same loss accounting applies. No analytics, no write-ahead log, no delivery accounting beyond
QoS 1: the baseline does strictly less work than plantwire.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import struct
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402

from plantwire.configfile import load_plant, read_yaml  # noqa: E402
from plantwire.metrics import MetricsServer, Registry  # noqa: E402
from plantwire.plant import BYTE_ORDER_ORDER, REGISTER_WIDTH, TABLE_ORDER, TYPE_ORDER, expand  # noqa: E402

log = logging.getLogger("naive")

_STRUCT = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "int64": ">q", "float32": ">f",
           "float64": ">d"}


def _decode(regs: list[int], rtype: str, order: str, bit: int) -> float:
    """One value from its registers, the hand-written way (struct per value)."""
    if rtype in ("bool",):
        return float(regs[0] != 0)
    if rtype == "bit":
        return float((regs[0] >> bit) & 1)
    words = list(regs)
    if order in ("CDAB", "DCBA"):
        words.reverse()
    raw = b"".join(struct.pack(">H", w) for w in words)
    if order in ("BADC", "DCBA"):
        raw = b"".join(raw[i + 1 : i + 2] + raw[i : i + 1] for i in range(0, len(raw), 2))
    return float(struct.unpack(_STRUCT[rtype], raw)[0])


class NaiveGateway:
    def __init__(self, edge_path: Path) -> None:
        edge = read_yaml(edge_path)
        self.gateway = edge["gateway_id"]
        self.state_dir = Path(edge["state_dir"])
        self.period_modbus = edge.get("modbus", {}).get("period_ms", 1000) / 1000
        self.period_opcua = edge.get("opcua", {}).get("publishing_interval_ms", 1000) / 1000
        self.mqtt_host = edge["mqtt"]["host"]
        self.mqtt_port = int(edge["mqtt"]["port"])
        self.plant = load_plant(Path(edge["plant"]))
        self.table = expand(self.plant)
        self.read_count = np.zeros(len(self.table.ids), dtype=np.int64)
        self.connected: dict[str, bool] = {}
        self.published = 0
        self.bytes_published = 0
        self.acked = 0
        self._lock = threading.Lock()
        reg = Registry("plantwire_edge")
        self.m_read = reg.counter("samples_read_total", "samples read")
        self.m_pub = reg.counter("samples_published_total", "samples published")
        self.m_acked = reg.counter("samples_acked_total", "samples acked")
        self.registry = reg
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"naive-{self.gateway}")
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.on_publish = self._on_publish
        self.mqtt_connected = False
        self.client.on_connect = lambda *a: setattr(self, "mqtt_connected", True)

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        self.acked += 1
        self.m_acked.set(self.acked)

    def health(self) -> dict[str, Any]:
        return {"sources": len(self.connected), "sources_connected": sum(self.connected.values()),
                "mqtt_connected": self.mqtt_connected}

    def _publish(self, signal_id: str, ts_ns: int, value: float, quality: int) -> None:
        msg = json.dumps({"signal": signal_id, "ts": ts_ns, "value": value, "quality": quality})
        self.client.publish(f"naive/{self.gateway}/{signal_id}", msg, qos=1)
        self.published += 1
        self.bytes_published += len(msg)

    async def _modbus(self, dev: Any) -> None:
        from pymodbus.client import AsyncModbusTcpClient

        client = AsyncModbusTcpClient(dev.host, port=dev.port)
        rows = self.table.signals_of(dev.index)
        by_machine: dict[int, list[int]] = {}
        for r in rows:
            by_machine.setdefault(int(self.table.machine[r]), []).append(int(r))
        self.connected[dev.name] = False
        while True:
            if not client.connected:
                self.connected[dev.name] = await client.connect()
            t0 = time.time()
            ts = time.time_ns()
            for machine_rows in by_machine.values():
                for table_idx in {int(self.table.table[r]) for r in machine_rows}:
                    trows = [r for r in machine_rows if int(self.table.table[r]) == table_idx]
                    kind = TABLE_ORDER[table_idx].value
                    start = min(int(self.table.address[r]) for r in trows)
                    end = max(int(self.table.address[r]) + REGISTER_WIDTH[TYPE_ORDER[int(self.table.reg_type[r])]]
                              for r in trows)
                    try:
                        fn = {"holding": client.read_holding_registers, "input": client.read_input_registers,
                              "coil": client.read_coils, "discrete": client.read_discrete_inputs}[kind]
                        resp = await fn(start, count=end - start, device_id=dev.unit_id)
                        data = resp.bits if kind in ("coil", "discrete") else resp.registers
                        ok = not resp.isError()
                    except Exception as e:  # the naive script logs and goes on
                        log.warning("%s: %s", dev.name, e)
                        ok, data = False, []
                    for r in trows:
                        sid = self.table.ids[r]
                        if not ok:
                            self._publish(sid, ts, float("nan"), 2)
                            continue
                        a = int(self.table.address[r]) - start
                        rtype = TYPE_ORDER[int(self.table.reg_type[r])].value
                        if kind in ("coil", "discrete"):
                            v = float(bool(data[a]))
                        else:
                            v = _decode(data[a : a + REGISTER_WIDTH[TYPE_ORDER[int(self.table.reg_type[r])]]], rtype,
                                        BYTE_ORDER_ORDER[int(self.table.byte_order[r])].value, int(self.table.bit[r]))
                        v = v * float(self.table.scale[r]) + float(self.table.value_offset[r])
                        self._publish(sid, ts, v, 0)
                    self.read_count[trows] += 1
                    self.m_read.inc(len(trows))
            await asyncio.sleep(max(0.0, self.period_modbus - (time.time() - t0)))

    async def _opcua(self, dev: Any) -> None:
        from asyncua import Client

        rows = self.table.signals_of(dev.index)
        self.connected[dev.name] = False
        async with Client(dev.endpoint, timeout=30) as client:
            ns = await client.get_namespace_index(dev.namespace)
            nodes = [client.get_node(f"ns={ns};s={self.table.ids[r]}") for r in rows]
            self.connected[dev.name] = True
            while True:
                t0 = time.time()
                values = await client.read_values(nodes)
                ts = time.time_ns()
                for r, v in zip(rows, values, strict=True):
                    self._publish(self.table.ids[r], ts, float(v), 0)
                self.read_count[rows] += 1
                self.m_read.inc(len(rows))
                await asyncio.sleep(max(0.0, self.period_opcua - (time.time() - t0)))

    async def run(self, metrics_port: int) -> None:
        server = MetricsServer(self.registry, "127.0.0.1", metrics_port, self.health)
        server.start()
        self.client.connect(self.mqtt_host, self.mqtt_port)
        self.client.loop_start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        tasks = [asyncio.create_task(self._modbus(d) if d.protocol == "modbus" else self._opcua(d))
                 for d in self.table.devices]
        pub_task = asyncio.create_task(self._report())
        await stop.wait()
        self._write_stats()  # first: pymodbus may swallow a cancellation and hang the gather below
        for t in [*tasks, pub_task]:
            t.cancel()
        await asyncio.wait([*tasks, pub_task], timeout=5)
        deadline = time.monotonic() + 30
        while self.acked < self.published and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        self._write_stats()
        self.client.loop_stop()
        server.stop()

    def _write_stats(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        stats = {"samples_read": int(self.read_count.sum()), "samples_published": self.published,
                 "bytes_published": self.bytes_published,
                 "samples_acked": self.acked,
                 "read_per_signal": dict(zip(self.table.ids, self.read_count.tolist(), strict=True))}
        (self.state_dir / "stats.json").write_text(json.dumps(stats))

    async def _report(self) -> None:
        while True:
            self.m_pub.set(self.published)
            await asyncio.sleep(1)


class NaiveIngestor:
    def __init__(self, cloud_path: Path) -> None:
        from influxdb_client import Point, WritePrecision

        self.Point, self.precision = Point, WritePrecision.NS
        cloud = read_yaml(cloud_path)
        self.url = cloud["influx"]["url"].rstrip("/")
        self.database = cloud["influx"].get("database", "plantwire")
        self.buffer: list[Any] = []
        self.lock = threading.Lock()
        self.written = 0
        reg = Registry("plantwire_ingest")
        self.m_written = reg.counter("samples_written_total", "samples written")
        self.m_pending = reg.gauge("pending_messages", "buffered points")
        self.m_latency = reg.histogram("sample_latency_seconds", "sample time to InfluxDB write accepted")
        self.lat_bounds = np.array([0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0])
        self.lat_counts = np.zeros(self.lat_bounds.size + 1, dtype=np.int64)
        self.registry = reg
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="naive-ingest")
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *a: c.subscribe("naive/#", qos=1)
        self.host, self.port = cloud["mqtt"]["host"], int(cloud["mqtt"]["port"])
        req = urllib.request.Request(f"{self.url}/query", data=f'q=CREATE DATABASE "{self.database}"'.encode())
        urllib.request.urlopen(req, timeout=10).read()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        doc = json.loads(msg.payload)
        machine, _, _ = doc["signal"].rpartition(".")
        p = (self.Point("samples").tag("signal", doc["signal"]).tag("machine", machine)
             .field("quality", int(doc["quality"])).time(int(doc["ts"]), self.precision))
        if doc["value"] == doc["value"]:
            p = p.field("value", float(doc["value"]))
        with self.lock:
            self.buffer.append(p)

    def _flush(self) -> None:
        with self.lock:
            points, self.buffer = self.buffer, []
        for i in range(0, len(points), 5000):
            chunk = points[i : i + 5000]
            body = "\n".join(p.to_line_protocol() for p in chunk).encode()
            req = urllib.request.Request(f"{self.url}/write?db={self.database}&precision=ns", data=body)
            urllib.request.urlopen(req, timeout=60).read()
            self.written += len(chunk)
            ts = np.array([p._time for p in chunk], dtype=np.int64)
            lat = (time.time_ns() - ts) / 1e9
            self.lat_counts += np.bincount(np.searchsorted(self.lat_bounds, lat, side="left"),
                                           minlength=self.lat_counts.size)
        cum = np.cumsum(self.lat_counts)
        for b, c in zip([*map(repr, self.lat_bounds.tolist()), "+Inf"], cum.tolist(), strict=True):
            self.m_latency.set(c, suffix="_bucket", le=b)
        self.m_written.set(self.written)
        with self.lock:
            self.m_pending.set(len(self.buffer))

    def run(self, metrics_port: int) -> None:
        server = MetricsServer(self.registry, "127.0.0.1", metrics_port, lambda: {"ok": True})
        server.start()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *a: stop.set())
        signal.signal(signal.SIGINT, lambda *a: stop.set())
        self.client.connect(self.host, self.port)
        self.client.loop_start()
        while not stop.is_set():
            stop.wait(1.0)
            self._flush()
        self.client.loop_stop()
        self._flush()
        server.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("role", choices=["gateway", "ingest"])
    p.add_argument("config", type=Path)
    a = p.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metrics_port = int(read_yaml(a.config).get("metrics", {}).get("port", 0))
    if a.role == "gateway":
        asyncio.run(NaiveGateway(a.config).run(metrics_port))
    else:
        NaiveIngestor(a.config).run(metrics_port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
