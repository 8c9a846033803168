"""Run the whole pipeline on one machine: simulator, Mosquitto, InfluxDB, edge and ingestor.

Used by ``plantwire demo``, the end-to-end test and ``bench/e2e.py``, so the three exercise the
same start-up and accounting. Every process runs in its own session (``start_new_session``) with
its log under ``state_dir/logs``, is stopped by PID, gets SIGTERM from the kernel if the process
that started it dies (``plantwire.lifeline``: a killed harness leaves nothing behind), and every
port is a free loopback port unless the caller points at an existing broker or InfluxDB.

Accounting at stop: the edge stops first and writes ``stats.json`` (samples read per signal);
the ingestor is given time to write everything the broker acknowledged; then InfluxDB is
asked for the count of points per signal, and the two are compared signal by signal.

Chaos hooks (tests/chaos, bench/recovery.py): ``kill(name)`` is a crash (SIGKILL, no clean shutdown),
``halt(name)`` a clean stop (SIGTERM), ``restart(name)`` starts the component again with the same
config, and for Mosquitto and InfluxDB on the same port and data directory. Names: ``sim``, ``edge``,
``ingest``, ``mosquitto``, ``influxdb``. An edge restart is a new process whose ``stats.json`` would
overwrite the previous run's, so the previous one is kept as ``stats.run<N>.json`` and listed in
``edge_runs``; a killed edge writes no stats at all, which is why the caller scrapes its metrics
before the kill (``samples_read_total`` counts exactly the samples already in the write-ahead log).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from plantwire.configfile import load_plant, read_yaml
from plantwire.lifeline import die_with_parent
from plantwire.plant import relocate_ports
from plantwire.ports import free_port, free_port_block


@dataclass
class Summary:
    samples_read: int
    samples_in_influx: int
    signals: int
    signals_mismatched: int
    mismatches: dict[str, tuple[int, int]] = field(default_factory=dict)  # signal -> (read, stored)
    edge: dict[str, Any] = field(default_factory=dict)
    ingest: dict[str, float] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return self.samples_read - self.samples_in_influx


def scrape(port: int, timeout_s: float = 2.0) -> dict[str, float]:
    """Prometheus text from a local /metrics endpoint, summed over labels."""
    out: dict[str, float] = {}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as resp:
        for line in resp.read().decode().splitlines():
            if not line or line.startswith("#"):
                continue
            name_labels, _, value = line.rpartition(" ")
            name = name_labels.split("{", 1)[0]
            out[name] = out.get(name, 0.0) + float(value)
    return out


def health(port: int, timeout_s: float = 2.0) -> dict[str, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/health")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:  # 503 carries the same JSON
        return dict(json.loads(exc.read()))


class Pipeline:
    def __init__(
        self,
        config_dir: Path,
        state_dir: Path,
        *,
        modbus_rate_hz: float = 1.0,
        opcua_rate_hz: float = 1.0,
        seed: int = 0,
        broker: tuple[str, int] | None = None,
        influx_url: str | None = None,
        edge_argv: list[str] | None = None,
        ingest_argv: list[str] | None = None,
        edge_overrides: dict[str, Any] | None = None,
        sim_args: list[str] | None = None,
        cloud_overrides: dict[str, Any] | None = None,
    ) -> None:
        """``edge_argv``/``ingest_argv`` replace ``python -m plantwire.cli edge|ingest`` (the config path is
        appended); bench/e2e.py runs the naive baseline this way against the same servers. ``edge_overrides``
        is merged (recursively) into the edge config, e.g. ``{"spool": {"max_bytes": 65536}}``; ``cloud_overrides``
        likewise into the ingestor's (``{"ingest": {"linger_ms": 50}}``)."""
        self.config_dir = config_dir
        self.edge_argv = edge_argv
        self.edge_overrides = edge_overrides or {}
        self.cloud_overrides = cloud_overrides or {}
        self.sim_args = list(sim_args or [])  # extra `plantwire sim` options, e.g. ["--faults", "faults.yaml"]
        self.edge_runs: list[Path] = []  # stats.json of earlier edge runs that ended cleanly
        self._spawn_args: dict[str, tuple[tuple[str, ...], list[str] | None]] = {}
        self.mosquitto: Any = None
        self.ingest_argv = ingest_argv
        self.state_dir = state_dir.resolve()
        self.logs = self.state_dir / "logs"
        self.modbus_rate_hz = modbus_rate_hz
        self.opcua_rate_hz = opcua_rate_hz
        self.seed = seed
        self._external_broker = broker
        self._external_influx = influx_url
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.services: list[Any] = []
        self.edge_metrics_port = free_port()
        self.ingest_metrics_port = free_port()
        self.console_port: int | None = None  # the edge's web console, when edge.yaml has a console section
        self.database = "plantwire"
        self.broker: tuple[str, int] = ("127.0.0.1", 0)
        self.influx_url = ""
        self.influx: Any = None
        self.started_ns: int | None = None

    # -- start --------------------------------------------------------------------------------
    def _write_configs(self) -> tuple[Path, Path, Path]:
        cfg_dir = self.state_dir / "config"
        cfg_dir.mkdir(parents=True, exist_ok=True)
        plant = relocate_ports(load_plant(self.config_dir / "plant.yaml"), free_port_block,
                               avoid=(self.edge_metrics_port, self.ingest_metrics_port))
        plant_path = cfg_dir / "plant.yaml"
        plant_path.write_text(yaml.safe_dump(plant.model_dump(mode="json"), sort_keys=False))

        edge = read_yaml(self.config_dir / "edge.yaml")
        edge["plant"] = str(plant_path)
        edge["state_dir"] = str(self.state_dir / "edge")
        edge.setdefault("mqtt", {}).update(host=self.broker[0], port=self.broker[1])
        edge["metrics"] = {"host": "127.0.0.1", "port": self.edge_metrics_port}
        edge.setdefault("modbus", {})["period_ms"] = max(10, round(1000 / self.modbus_rate_hz))
        edge.setdefault("opcua", {})["publishing_interval_ms"] = max(10, round(1000 / self.opcua_rate_hz))
        _merge(edge, self.edge_overrides)
        if isinstance(edge.get("console"), dict):  # the configured port when free (a bookmark works), else any
            con = edge["console"]
            con["port"] = self.console_port = _free_or_any(con.get("host", "127.0.0.1"), int(con.get("port", 0)))
        edge_path = cfg_dir / "edge.yaml"
        edge_path.write_text(yaml.safe_dump(edge, sort_keys=False))

        cloud = read_yaml(self.config_dir / "cloud.yaml")
        cloud["state_dir"] = str(self.state_dir / "ingest")
        cloud.setdefault("mqtt", {}).update(host=self.broker[0], port=self.broker[1])
        cloud.setdefault("influx", {})["url"] = self.influx_url
        self.database = cloud["influx"].get("database", "plantwire")
        cloud["metrics"] = {"host": "127.0.0.1", "port": self.ingest_metrics_port}
        _merge(cloud, self.cloud_overrides)
        cloud_path = cfg_dir / "cloud.yaml"
        cloud_path.write_text(yaml.safe_dump(cloud, sort_keys=False))
        return plant_path, edge_path, cloud_path

    def _spawn(self, name: str, *args: str, argv: list[str] | None = None) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen(
            [*argv, *args[1:]] if argv else [sys.executable, "-m", "plantwire.cli", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),  # SIGTERM to it when we die, even by SIGKILL
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        self.procs[name] = proc
        self._spawn_args[name] = (args, argv)
        return proc

    def _check_alive(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is not None:
            tail = (self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-30:]
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n" + "\n".join(tail))

    def start(self, timeout_s: float = 120.0) -> None:
        from plantwire.services import InfluxDB1, Mosquitto

        self.state_dir.mkdir(parents=True, exist_ok=True)
        # The summary counts only points stamped from now on: a persistent InfluxDB (a second demo
        # run, or an external server) holds earlier runs' points that this run's edge never read.
        self.started_ns = time.time_ns()
        if self._external_broker is None:
            mosq = Mosquitto(self.state_dir / "mosquitto")
            mosq.start()
            self.services.append(mosq)
            self.mosquitto = mosq
            self.broker = ("127.0.0.1", mosq.port)
        else:
            self.broker = self._external_broker
        if self._external_influx is None:
            influx = InfluxDB1(self.state_dir / "influxdb")
            influx.start()
            self.services.append(influx)
            self.influx = influx
            self.influx_url = influx.url
        else:
            self.influx_url = self._external_influx
        plant_path, edge_path, cloud_path = self._write_configs()
        ready = self.state_dir / "sim.ready"
        ready.unlink(missing_ok=True)
        self._spawn(
            "sim", "sim", str(plant_path), "--ready-file", str(ready), "--seed", str(self.seed),
            "--modbus-rate", str(self.modbus_rate_hz), "--opcua-rate", str(self.opcua_rate_hz),
            "--labels", str(self.state_dir / "labels.jsonl"), *self.sim_args,
        )
        deadline = time.monotonic() + timeout_s
        while not ready.exists():
            self._check_alive("sim")
            if time.monotonic() > deadline:
                raise TimeoutError("simulator did not become ready")
            time.sleep(0.1)
        self._spawn("ingest", "ingest", str(cloud_path), argv=self.ingest_argv)
        self._spawn("edge", "edge", str(edge_path), argv=self.edge_argv)
        while True:
            self._check_alive("edge")
            self._check_alive("ingest")
            try:
                h = health(self.edge_metrics_port)
                if h.get("sources") and h.get("sources_connected") == h.get("sources") and h.get("mqtt_connected"):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("edge did not connect to every source and the broker")
            time.sleep(0.2)

    @property
    def console_url(self) -> str | None:
        return None if self.console_port is None else f"http://127.0.0.1:{self.console_port}/"

    # -- run ------------------------------------------------------------------------------------
    def progress(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for port in (self.edge_metrics_port, self.ingest_metrics_port):
            try:
                out.update(scrape(port))
            except OSError:
                pass
        return out

    def influx_counts(self, since_ns: int | None = None, until_ns: int | None = None) -> dict[str, int]:
        """Points per signal in InfluxDB, optionally only those with ``since_ns <= time < until_ns`` (to tell
        one edge run from the next): :func:`influx_counts`."""
        return influx_counts(self.influx_url, self.database, since_ns, until_ns)

    # -- chaos --------------------------------------------------------------------------------
    def _service(self, name: str) -> Any:
        svc = {"mosquitto": self.mosquitto, "influxdb": self.influx}.get(name)
        if svc is None:
            raise KeyError(f"no managed service {name!r} (external, or not one of mosquitto, influxdb)")
        return svc

    def kill(self, name: str) -> None:
        """SIGKILL one component, as a crash or power cut of that process would."""
        if name in self.procs:
            proc = self.procs[name]
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        else:
            self._service(name).kill()

    def halt(self, name: str, timeout_s: float = 60.0) -> int | None:
        """Stop one component cleanly (SIGTERM; the edge then writes its ``stats.json``)."""
        if name in self.procs:
            return self._terminate(name, timeout_s)
        return self._service(name).stop(timeout_s)

    def restart(self, name: str) -> None:
        """Start a killed or halted component again with the same config (services: same port and data)."""
        if name not in self.procs:
            self._service(name).start()
            return
        if self.procs[name].poll() is None:
            raise RuntimeError(f"{name} is still running; kill() or halt() it first")
        if name == "edge":
            stats = self.state_dir / "edge" / "stats.json"
            if stats.exists():  # the previous run ended cleanly: keep its accounting
                kept = stats.with_name(f"stats.run{len(self.edge_runs)}.json")
                stats.replace(kept)
                self.edge_runs.append(kept)
        args, argv = self._spawn_args[name]
        self._spawn(name, *args, argv=argv)

    def edge_stats(self) -> dict[str, Any]:
        """The current edge run's ``stats.json`` (written when it stopped cleanly), or {}."""
        path = self.state_dir / "edge" / "stats.json"
        return dict(json.loads(path.read_text())) if path.exists() else {}

    # -- stop -----------------------------------------------------------------------------------
    def _terminate(self, name: str, timeout_s: float) -> int | None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else None
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(5)

    def stop(self, drain_timeout_s: float = 60.0) -> Summary:
        """Stop the edge, let the ingestor drain, compare InfluxDB with what the edge read."""
        try:
            self._terminate("edge", 60.0)
            stats_path = self.state_dir / "edge" / "stats.json"
            edge_stats: dict[str, Any] = json.loads(stats_path.read_text()) if stats_path.exists() else {}
            target = int(edge_stats.get("samples_acked", 0))
            deadline = time.monotonic() + drain_timeout_s
            ingest: dict[str, float] = {}
            while time.monotonic() < deadline:
                try:
                    ingest = scrape(self.ingest_metrics_port)
                except OSError:
                    break
                if ingest.get("plantwire_ingest_samples_written_total", 0) >= target and not ingest.get(
                    "plantwire_ingest_pending_messages", 0
                ):
                    break
                time.sleep(0.25)
            self._terminate("ingest", 30.0)
            self._terminate("sim", 30.0)
            read: dict[str, int] = edge_stats.get("read_per_signal", {})
            stored = self.influx_counts(self.started_ns) if self.influx_url else {}
            mismatches = {
                sid: (n, stored.get(sid, 0)) for sid, n in read.items() if n != stored.get(sid, 0)
            }
            mismatches.update({sid: (0, n) for sid, n in stored.items() if sid not in read})
            return Summary(
                samples_read=int(edge_stats.get("samples_read", 0)),
                samples_in_influx=sum(stored.values()),
                signals=len(read),
                signals_mismatched=len(mismatches),
                mismatches=mismatches,
                edge={k: v for k, v in edge_stats.items() if k != "read_per_signal"},
                ingest=ingest,
            )
        finally:
            self.close()

    def close(self) -> None:
        """Kill whatever is still running (also the path taken after a failed start)."""
        for name in list(self.procs):
            self._terminate(name, 10.0)
        for svc in reversed(self.services):
            svc.stop()
        self.services.clear()


def _free_or_any(host: str, port: int) -> int:
    import socket

    if port > 0:
        with socket.socket() as s:
            try:
                s.bind((host, port))
                return port
            except OSError:
                pass
    return free_port(host)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> None:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def influx_counts(url: str, database: str, since_ns: int | None = None, until_ns: int | None = None) -> dict[str, int]:
    """Samples per signal in InfluxDB's ``samples``. Every point has exactly one of ``value`` (finite) and
    ``nonfinite``; ``quality`` is only on points that are not good (since 2026-12-03, cloud/sinks/lineproto.py;
    older points have it on every point), so it no longer counts samples. Both forms count right."""
    where = []
    if since_ns is not None:
        where.append(f"time >= {int(since_ns)}")
    if until_ns is not None:
        where.append(f"time < {int(until_ns)}")
    cond = f" WHERE {' AND '.join(where)}" if where else ""
    q = f"SELECT count(value), count(nonfinite) FROM samples{cond} GROUP BY signal"
    # Counting every point of a 10 Hz run (~15 M) takes InfluxDB 1.6 tens of seconds on a busy 2-core box.
    doc = _influx_query(url, q, database, timeout_s=180.0)
    counts: dict[str, int] = {}
    for result in doc.get("results", []):
        for series in result.get("series", []) or []:
            _, finite, nonfinite = series["values"][0]  # time, count(value), count(nonfinite); null when none
            counts[series["tags"]["signal"]] = int(finite or 0) + int(nonfinite or 0)
    return counts


def _influx_query(url: str, q: str, db: str, timeout_s: float = 30.0) -> dict[str, Any]:
    from urllib.parse import urlencode

    with urllib.request.urlopen(f"{url}/query?{urlencode({'db': db, 'q': q})}", timeout=timeout_s) as resp:
        return dict(json.loads(resp.read()))
