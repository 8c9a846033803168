"""Real servers (Mosquitto, InfluxDB 1.x, VictoriaMetrics) on free loopback ports, for tests and the demo.

Each server gets a generated config and all of its state under ``state_dir``, runs in its own
session (``start_new_session=True``, so a Ctrl-C or a killed process group elsewhere does not take
it down: shared/MEASURED.md trap 13) yet dies with the process that started it, even by SIGKILL
(``plantwire.lifeline.die_with_parent``: a test run or demo that crashes leaves no server behind),
with stdout and stderr appended to a log file there, and is
stopped by its PID: SIGTERM, then SIGKILL after a timeout. A failed start raises
:class:`ServiceError` carrying the last lines of that log, because "did not start" alone sends
everyone to guess.

The configs close the traps measured in shared/MEASURED.md: Mosquitto never drops queued QoS 1
messages (``max_queued_messages 0`` and ``max_queued_bytes 0`` both mean "no limit" in
mosquitto.conf(5) of 2.0.11), InfluxDB 1.6 binds its RPC service on another free loopback port and
its ifql service is disabled, and nothing listens on a fixed port.

Ports are chosen when the object is made, so ``stop()`` then ``start()`` brings a server back on the
same address with the same data (tests stop InfluxDB mid-stream that way). When the first start of
a server whose port we picked fails because someone took the port in between, new ports are picked
and the start is tried again.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from plantwire.lifeline import die_with_parent, stop_process
from plantwire.ports import free_port, wait_port

__all__ = ["InfluxDB1", "InfluxTuning", "Mosquitto", "ServiceError", "VictoriaMetrics", "free_port"]

_LOG_TAIL_LINES = 30
_ADDRESS_IN_USE = ("address already in use", "address in use")


class ServiceError(RuntimeError):
    """A server that could not be started or answered a request with an error."""


def _which(name: str, *fallbacks: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for path in fallbacks:
        if os.access(path, os.X_OK):
            return path
    raise ServiceError(f"{name} not found: install its Debian package (`make deps` does)")


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class _Service:
    """One child server process: config, start with a readiness check, stop by PID."""

    name = "service"
    start_timeout_s = 30.0

    def __init__(self, state_dir: Path, port: int | None = None, *, host: str = "127.0.0.1") -> None:
        self.state_dir = Path(state_dir).resolve()
        self.host = host
        self._auto_port = port is None
        self.port = free_port(host) if port is None else port
        self.log_path = self.state_dir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_once = False

    # -- to be provided by each server -----------------------------------------------------------
    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _write_config(self) -> None:
        """Write the config file(s); called before every start."""

    def _is_ready(self) -> bool:
        return wait_port(self.host, self.port, 0.2)

    def _repick_ports(self) -> None:
        self.port = free_port(self.host)

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Start the server and block until it serves; raises ServiceError with its log tail."""
        if self.running:
            return self
        attempts = 3 if (self._auto_port and not self._started_once) else 1
        for attempt in range(attempts):
            try:
                self._start_once()
                self._started_once = True
                return self
            except ServiceError as exc:
                in_use = any(s in str(exc).lower() for s in _ADDRESS_IN_USE)
                if not in_use or attempt == attempts - 1:
                    raise
                self._repick_ports()
        raise AssertionError("unreachable")

    def _start_once(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        log = open(self.log_path, "ab")
        try:
            self._proc = subprocess.Popen(
                self._argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),
                cwd=self.state_dir,
                env=self._env(),
            )
        finally:
            log.close()
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                raise ServiceError(
                    f"{self.name} exited with {code} during start-up; last lines of {self.log_path}:\n"
                    + _log_tail(self.log_path)
                )
            if self._is_ready():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise ServiceError(
                    f"{self.name} did not become ready on {self.host}:{self.port} within "
                    f"{self.start_timeout_s:.0f} s; last lines of {self.log_path}:\n" + _log_tail(self.log_path)
                )
            time.sleep(0.05)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM by PID, SIGKILL after ``timeout_s``; returns the exit code (None if not running)."""
        proc = self._proc
        if proc is None:
            return None
        code = stop_process(proc, timeout_s)
        self._proc = None
        return code

    def kill(self) -> int | None:
        """SIGKILL by PID, as a crash would (no clean shutdown, no final save)."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        self._proc = None
        return proc.returncode

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        return _log_tail(self.log_path, lines)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.host}:{self.port} pid={self.pid} state={self.state_dir}>"


class Mosquitto(_Service):
    """Mosquitto 2.x that never drops queued QoS 1 messages, with persistence under ``state_dir``.

    ``max_queued_messages 0`` and ``max_queued_bytes 0`` lift the per-client queue limits whose
    default (1000 messages) silently drops QoS 1 messages for a slow subscriber. ``max_inflight_messages``
    is raised from 20 to 1000 so that publishers can keep a useful window in flight; MQTT 5
    subscribers set their own window with Receive Maximum. When run as root, mosquitto 2.x would
    switch to the ``mosquitto`` user and then fail to write ``state_dir``; the config names the
    current user instead.
    """

    name = "mosquitto"

    def __init__(
        self,
        state_dir: Path,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        autosave_interval_s: int = 30,
        max_inflight_messages: int = 1000,
    ) -> None:
        super().__init__(state_dir, port, host=host)
        self.autosave_interval_s = autosave_interval_s
        self.max_inflight_messages = max_inflight_messages
        self.config_path = self.state_dir / "mosquitto.conf"
        self._binary = _which("mosquitto", "/usr/sbin/mosquitto")

    def _write_config(self) -> None:
        user = pwd.getpwuid(os.geteuid()).pw_name
        self.config_path.write_text(
            "\n".join(
                [
                    "# generated by plantwire.services.Mosquitto",
                    f"user {user}",
                    f"listener {self.port} {self.host}",
                    "allow_anonymous true",
                    "persistence true",
                    f"persistence_location {self.state_dir}/",
                    "persistence_file mosquitto.db",
                    f"autosave_interval {self.autosave_interval_s}",
                    "max_queued_messages 0",
                    "max_queued_bytes 0",
                    f"max_inflight_messages {self.max_inflight_messages}",
                    "log_dest stderr",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    "log_type information",
                    "log_timestamp_format %Y-%m-%dT%H:%M:%S",
                    "connection_messages true",
                    "",
                ]
            )
        )

    def _argv(self) -> list[str]:
        return [self._binary, "-c", str(self.config_path)]

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class InfluxTuning:
    """The storage settings of the InfluxDB 1.x we run, as measured for the cost of a stored sample.

    Fields map one to one onto influxdb.conf keys (``[data]``), except ``gogc``, the Go runtime's
    ``GOGC`` (the heap grows by that percentage before the next collection; None: Go's 100).
    The defaults are influxd's own: ``bench/influx_cost.py`` (influxd's CPU seconds per million
    points, alone, the demo plant's 15,000 series; bench/RESULTS.md, "InfluxDB's cost per stored
    sample") found no setting here that pays once the ingestor sends 50,000-line requests (that,
    ``ingest.lines_per_request``, took ~1/3 off): ``gogc`` 200-400 saved ~20 % at 10,000-line
    requests but nothing measurable at 50,000, for +130-350 MB of RSS; a 100 ms ``wal_fsync_delay``,
    a 256 MB snapshot size and the tsi1 index saved nothing. The class stays so that benchmarks and
    operators can compare without editing the generator.

    Durability, should anyone set ``wal_fsync_delay``: it only batches fsyncs. InfluxDB 1.x answers a
    write only after the fsync that covers it (``tsm1.WAL.writeToLog`` waits on its sync waiter), so a
    204 still means the points are on disk and the ingestor's acknowledgement to the edge stays
    honest; each write waits up to the delay longer.
    """

    wal_fsync_delay: str = "0s"
    cache_snapshot_memory_size: str = "25m"
    cache_snapshot_write_cold_duration: str = "10m"
    max_concurrent_compactions: int = 0
    index_version: str = "inmem"
    gogc: int | None = None

    def data_lines(self) -> str:
        return "\n".join(
            [
                f'  wal-fsync-delay = "{self.wal_fsync_delay}"',
                f'  cache-snapshot-memory-size = "{self.cache_snapshot_memory_size}"',
                f'  cache-snapshot-write-cold-duration = "{self.cache_snapshot_write_cold_duration}"',
                f"  max-concurrent-compactions = {self.max_concurrent_compactions}",
                f'  index-version = "{self.index_version}"',
            ]
        )


#: influxd 1.6's own defaults, for comparison in benchmarks (today the same as ``InfluxTuning()``).
STOCK_INFLUX = InfluxTuning()


class InfluxDB1(_Service):
    """InfluxDB 1.x (Debian's 1.6) speaking the v1 HTTP API: ``/write`` and InfluxQL on ``/query``.

    Meta, data and WAL live under ``state_dir``; HTTP on ``host:port``, the RPC (backup) service on a
    second free loopback port, ifql disabled (and moved to a third), no usage reporting, no ``_internal`` monitor
    database, quiet logs. ``INFLUXDB_*`` environment variables are not passed on, since influxd
    lets them override the config file.
    """

    name = "influxd"

    def __init__(
        self, state_dir: Path, port: int | None = None, *, host: str = "127.0.0.1", tuning: InfluxTuning | None = None
    ) -> None:
        super().__init__(state_dir, port, host=host)
        self.tuning = tuning if tuning is not None else InfluxTuning()
        self.rpc_port = free_port(host)
        self.ifql_port = free_port(host)
        self.config_path = self.state_dir / "influxdb.conf"
        self._binary = _which("influxd", "/usr/bin/influxd")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _repick_ports(self) -> None:
        super()._repick_ports()
        self.rpc_port = free_port(self.host)
        self.ifql_port = free_port(self.host)

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFLUXDB_") and k != "GOGC"}
        if self.tuning.gogc is not None:
            env["GOGC"] = str(self.tuning.gogc)
        return env

    def _write_config(self) -> None:
        d = self.state_dir
        self.config_path.write_text(
            f"""# generated by plantwire.services.InfluxDB1
reporting-disabled = true
bind-address = "{self.host}:{self.rpc_port}"

[meta]
  dir = "{d}/meta"
  logging-enabled = false

[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false
  trace-logging-enabled = false
{self.tuning.data_lines()}

[coordinator]
  log-queries-after = "0s"

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false
  log-enabled = false

[http]
  enabled = true
  bind-address = "{self.host}:{self.port}"
  auth-enabled = false
  log-enabled = false
  suppress-write-log = true
  pprof-enabled = false

[ifql]
  enabled = false
  log-enabled = false
  bind-address = "{self.host}:{self.ifql_port}"

[logging]
  level = "warn"
  suppress-logo = true
"""
        )

    def _argv(self) -> list[str]:
        return [self._binary, "run", "-config", str(self.config_path), "-pidfile", str(self.state_dir / "influxd.pid")]

    def _is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=0.5) as resp:
                return bool(resp.status == 204)
        except (OSError, urllib.error.URLError):
            return False

    def query(self, q: str, db: str | None = None, *, timeout_s: float = 30.0) -> dict[str, Any]:
        """Run InfluxQL via POST ``/query`` and return the decoded JSON; raises ServiceError on errors.

        An error inside a statement's result (``{"results": [{"error": ...}]}``) raises too, so a
        typo in a test's query fails loudly instead of looking like "no rows".
        """
        params = {"q": q, "epoch": "ns"}
        if db is not None:
            params["db"] = db
        body = urllib.parse.urlencode(params).encode()
        req = urllib.request.Request(f"{self.url}/query", data=body, method="POST")
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                doc: dict[str, Any] = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise ServiceError(f"InfluxDB query {q!r} failed with HTTP {exc.code}: {exc.read()[:500]!r}") from exc
        errors = [doc["error"]] if "error" in doc else []
        errors += [r["error"] for r in doc.get("results", []) if "error" in r]
        if errors:
            raise ServiceError(f"InfluxDB query {q!r} failed: {'; '.join(errors)}")
        return doc

    def rows(self, q: str, db: str) -> list[dict[str, Any]]:
        """Flatten a query's series into one dict per row (columns plus the series' tags)."""
        out: list[dict[str, Any]] = []
        for result in self.query(q, db).get("results", []):
            for series in result.get("series", []) or []:
                tags = series.get("tags", {})
                for values in series["values"]:
                    out.append({**tags, **dict(zip(series["columns"], values, strict=True))})
        return out


class VictoriaMetrics(_Service):
    """VictoriaMetrics single node: backs the InfluxDB v2 write API (``/api/v2/write``) in tests.

    It accepts influxdb-client's writes with any token, org and bucket and names each series
    ``<measurement>_<field>`` (shared/MEASURED.md trap 7). Timestamps are kept to the millisecond.
    Read back with :meth:`export` after :meth:`flush`.
    """

    name = "victoria-metrics"

    def __init__(self, state_dir: Path, port: int | None = None, *, host: str = "127.0.0.1") -> None:
        super().__init__(state_dir, port, host=host)
        self._binary = _which("victoria-metrics", "/usr/bin/victoria-metrics")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _argv(self) -> list[str]:
        return [
            self._binary,
            f"-storageDataPath={self.state_dir / 'data'}",
            f"-httpListenAddr={self.host}:{self.port}",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
            "-search.disableCache",
            "-loggerLevel=WARN",
        ]

    def _is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=0.5) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def _get(self, path: str, params: dict[str, str] | None = None, timeout_s: float = 30.0) -> bytes:
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                return bytes(resp.read())
        except urllib.error.HTTPError as exc:
            raise ServiceError(f"VictoriaMetrics {path} failed with HTTP {exc.code}: {exc.read()[:500]!r}") from exc

    def flush(self) -> None:
        """Make everything received so far searchable (``/internal/force_flush``)."""
        self._get("/internal/force_flush")

    def export(self, match: str = '{__name__!=""}') -> list[dict[str, Any]]:
        """Flush, then every series matching ``match`` as ``{"metric", "values", "timestamps"}``."""
        self.flush()
        raw = self._get("/api/v1/export", {"match[]": match})
        return [json.loads(line) for line in raw.splitlines() if line.strip()]
