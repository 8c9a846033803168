"""``plantwire models fit`` from a real InfluxDB holding a small simulated history (v1 / InfluxQL path).

Half an hour of a 4-machine plant (two compressors, two presses) in the ingestor's schema, one point per signal
per 10 s (the last second of each machine tick: the rows the fit reads are those of 1 Hz history). One
compressor's oil temperature is corrupted inside an alarm episode stored in ``events``, and an alarm of the
other compressor is out of service for a while (``incident_transitions``): the fit must leave both periods
out (the baseline never sees the corrupt value, the kept ticks drop by exactly those periods),
sign one bundle per template and kind, and the machine_pca bundle's arrays must load as the edge's
machine model and score like the edge.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cloud import retention
from cloud.models.cli import main
from cloud.models.keys import generate
from cloud.sinks.influx import InfluxV1Sink
from cloud.sinks.lineproto import escape_tag_value
from edge.models import machine as mm
from plantwire import bundle
from plantwire.services import InfluxDB1
from simulators.influx_history import EPOCH_NS, write_episode, write_history

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
SECONDS = 1800
NS = 1_000_000_000


def _plant(tmp_path: Path) -> Path:
    p = tmp_path / "plant.yaml"
    p.write_text(f"""kind: plant
site: ac-fit
imports: [{ROOT / "configs" / "templates" / "ac_factory.yaml"}]
devices:
  - {{name: "plc{{i}}", protocol: modbus, count: 1, port: 15020, unit_id: 1, byte_order: ABCD}}
machines:
  - {{name: "line1.compressor{{i:02d}}", template: compressor, count: 2, device: "plc{{i}}"}}
  - {{name: "line1.press{{i:02d}}", template: press, count: 2, device: "plc{{i}}"}}
""")
    return p


def test_fit_from_influx_excludes_alarms_and_signs_bundles(influxdb: InfluxDB1, influx_db: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    plant = _plant(tmp_path)
    sink = InfluxV1Sink(influxdb.url, influx_db)
    written = write_history(sink, plant, gateway="gw1", seconds=SECONDS, every_s=10)
    assert written.samples == 180 * len(written.world.table)
    # Corrupt compressor01's oil temperature for 5 minutes inside the fitting part, inside an alarm episode.
    machine, sid = "line1.compressor01", "line1.compressor01.oil_temp"
    t_bad = [EPOCH_NS + (600 + 10 * k + 9) * NS for k in range(30)]
    prefix = f"samples,gateway=gw1,machine={escape_tag_value(machine)},signal={escape_tag_value(sid)},site=ac-fit"
    sink.write("".join(f"{prefix} value=5000.0,quality=0i {t}\n" for t in t_bad).encode())
    write_episode(sink, site="ac-fit", gateway="gw1", machine=machine, signal=sid, kind="level",
                  start_ns=EPOCH_NS + 600 * NS, end_ns=EPOCH_NS + 900 * NS)

    # compressor02: one of its alarms taken out of service from 300 s to 500 s (the alarm layer's transitions).
    tr = "incident_transitions,site=ac-fit,gateway=gw1,area=line1,machine=line1.compressor02,priority=low"
    retention.ensure_policies(influxdb.url, influx_db)  # the alarm layer's points live in RP alarms
    InfluxV1Sink(influxdb.url, influx_db, retention_policy=retention.RP_ALARMS).write((
        f'{tr},transition=oos id="i7",seq=2i,out_of_service=1i {EPOCH_NS + 300 * NS}\n'
        f'{tr},transition=return id="i7",seq=3i,out_of_service=0i {EPOCH_NS + 500 * NS}\n').encode())
    key_path, pub_path, _ = generate(tmp_path / "keys" / "sign.key")
    store = tmp_path / "bundles"
    args = ["fit", "--plant", str(plant), "--influx-url", influxdb.url, "--database", influx_db,
            "--start", str(EPOCH_NS), "--end", str(EPOCH_NS + SECONDS * NS), "--signing-key", str(key_path),
            "--store", str(store), "--json"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    by_t = {t["template"]: t for t in report["templates"]}
    assert set(by_t) == {"compressor", "press"}
    comp = by_t["compressor"]
    assert comp["machines_read"] == 2 and comp["ticks"] == 2 * 180
    # fitting part = first 80 % = 144 ticks per machine; the episode (300 s) padded by 120 s each side: 54
    # ticks of compressor01; the out-of-service period (200 s) padded alike: 44 ticks of compressor02.
    assert comp["ticks_kept"] == 2 * 144 - 54 - 44
    assert "rul" in comp["skipped"] and "labels" in comp["skipped"]["rul"]
    kinds = {f["kind"]: f for f in comp["fitted"]}
    assert set(kinds) == {"machine_pca", "signal_baseline"}
    assert kinds["machine_pca"]["rows"] == comp["ticks_kept"]
    assert 0.0 <= kinds["machine_pca"]["validation"]["holdout_over_limit_fraction"] <= 1.0
    assert kinds["machine_pca"]["validation"]["holdout_machines"] == 2
    assert kinds["machine_pca"]["validation"]["holdout_ticks"] == 2 * 36  # the later 20 %: 36 ticks per machine
    assert report["seconds"] > 0 and report["peak_rss_mb"] > 0

    trusted = bundle.load_public_keys([pub_path])
    files = sorted(store.glob("*.pwbundle"))
    assert len(files) == 4
    got = {(b.kind, b.template): b for b in (bundle.read_file(f, trusted) for f in files)}
    base = got[("signal_baseline", "compressor")]
    j = base.signals.index("oil_temp")
    assert base.arrays["max"][j] < 1000.0  # the corrupt value was in an alarm episode: never learned
    assert base.arrays["low"][j] < base.arrays["q_low"][j] <= base.arrays["median"][j] <= base.arrays["q_high"][j]
    assert base.manifest["fitted_to_ns"] == report["validation_from_ns"]
    assert "running" not in base.signals  # a state signal has no baseline

    pca = got[("machine_pca", "press")]
    assert pca.manifest["rows"] == by_t["press"]["ticks_kept"] == 2 * 144
    assert "running" not in pca.signals and len(pca.signals) == len(pca.manifest["machine_model"]["signals"])
    # The arrays plus the embedded machine manifest are exactly a model file of edge.models.machine.
    npz = tmp_path / "press.npz"
    np.savez(npz, **pca.arrays)
    npz.with_suffix(".json").write_text(json.dumps(pca.manifest["machine_model"]))
    model = mm.load(npz)
    assert list(model.signals) == pca.signals and len(model.modes) == len(pca.manifest["modes"])
    score, _, _ = mm.score_table(model, np.full((5, len(pca.signals)), np.nan))
    assert np.all(score == 0.0)

    # A wrong key refuses every bundle (exit 1, reason named).
    other = tmp_path / "other.pub"
    generate(tmp_path / "other.key", other)
    assert main(["verify", str(files[0]), "--public-key", str(other)]) == 1
    assert "unknown_key" in capsys.readouterr().err
    assert main(["verify", *map(str, files), "--public-key", str(pub_path)]) == 0


def test_fit_reports_unreachable_influx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from plantwire.ports import free_port

    plant = _plant(tmp_path)
    rc = main(["fit", "--plant", str(plant), "--influx-url", f"http://127.0.0.1:{free_port()}", "--database", "x",
               "--start", "2026-01-05T00:00", "--end", "2026-01-05T01:00"])
    assert rc == 1
    assert "InfluxDB http://127.0.0.1" in capsys.readouterr().err


def test_large_templates_are_read_in_staggered_windows_covering_every_hour() -> None:
    from cloud.models.fit import FitOptions, _stride, _windows

    week = 7 * 86_400 * NS
    o = FitOptions(read_ticks=400_000)  # (the default is 100,000)
    assert _stride(0, week, 2, o) == 1  # small: everything is read
    assert all(len(w) == 168 for w in _windows(0, week, 2, o))
    k = _stride(0, week, 100, o)  # 100 machines x 60,480 ticks
    assert k == 16
    wins = _windows(0, week, 100, o)
    assert all(10 <= len(w) <= 11 for w in wins)  # each machine about a 16th of the hours
    assert sorted({a for w in wins for a, _ in w}) == list(range(0, week, 3600 * NS))  # together: every hour
