"""The InfluxDB 1.x we run carries plantwire's storage settings, and an acknowledged write survives a crash.

``plantwire.services.InfluxTuning`` sets the Go runtime's ``GOGC`` and ``[data]`` keys of influxdb.conf
(bench/influx_cost.py measured them). These tests check, on the session's real influxd, that the
settings reach the running process (its environment and the config it was started with), and, on a
server of their own, that a write answered 204 is still there after influxd is killed with SIGKILL
and started again: the acknowledgement the ingestor gives the edge rests on exactly that.
"""

from __future__ import annotations

import dataclasses
import urllib.request
from pathlib import Path

import pytest

from plantwire.services import STOCK_INFLUX, InfluxDB1, InfluxTuning


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def test_running_influxd_has_the_tuning(influxdb: InfluxDB1) -> None:
    tuning = influxdb.tuning
    assert tuning == InfluxTuning()
    assert influxdb.pid is not None
    env = _environ(influxdb.pid)
    if tuning.gogc is None:
        assert "GOGC" not in env
    else:
        assert env.get("GOGC") == str(tuning.gogc)
    conf = influxdb.config_path.read_text()
    data = conf.split("[data]", 1)[1].split("\n[", 1)[0]
    assert f'wal-fsync-delay = "{tuning.wal_fsync_delay}"' in data
    assert f'cache-snapshot-memory-size = "{tuning.cache_snapshot_memory_size}"' in data
    assert f'index-version = "{tuning.index_version}"' in data
    assert f"max-concurrent-compactions = {tuning.max_concurrent_compactions}" in data


def test_stock_leaves_gogc_to_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOGC", "50")  # an operator's shell must not leak into the server either way
    assert "GOGC" not in InfluxDB1(tmp_path, tuning=STOCK_INFLUX)._env()
    tuned = InfluxDB1(tmp_path, tuning=dataclasses.replace(STOCK_INFLUX, gogc=300))
    assert tuned._env()["GOGC"] == "300"


def test_acknowledged_write_survives_sigkill(tmp_path: Path) -> None:
    influx = InfluxDB1(tmp_path / "influx").start()
    try:
        influx.query('CREATE DATABASE "d"')
        t0_ns = 1_700_000_000_000_000_000
        lines = "".join(f"samples,signal=s{i % 50} value={i}.5,quality=0i {t0_ns + i}\n" for i in range(2000))
        req = urllib.request.Request(f"{influx.url}/write?db=d&precision=ns", data=lines.encode(), method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 204
        influx.kill()  # SIGKILL right after the 204: no clean shutdown, no snapshot
        influx.start()
        rows = influx.rows("SELECT count(quality) FROM samples", "d")
        assert rows and rows[0]["count"] == 2000
    finally:
        influx.stop()
