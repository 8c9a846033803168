"""The machine stage in the detector stack: self-fit from its first hour, alarms naming contributors, checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.detectors.events import Phase, Scope
from edge.detectors.settings import AnalyticsSettings, MachineSelfFit, MachineSettings
from edge.detectors.stack import DetectorStack

N = 12  # machines 0 (signals 0..5) and 1 (6..11)
SETTINGS = AnalyticsSettings(machine=MachineSettings(period_s=1.0, fit_after_s=300.0, lags=1,
                                                     self_fit=MachineSelfFit.ON))


def _rows(n: int, seed: int, break_at: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(0).normal(size=(2, 6))  # the machines' physics
    lat = rng.normal(size=(n, 4))
    x = np.hstack([lat[:, :2] @ mix, lat[:, 2:] @ mix]) + 0.1 * rng.normal(size=(n, N)) + 50.0
    if break_at is not None:
        x[break_at:, 3] = 100.0 - x[break_at:, 3]  # signal 3 mirrors: each value in range, relation broken
    return x


def _run(stack: DetectorStack, x: np.ndarray, t0: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    sig = np.arange(N, dtype=np.uint32)
    q = np.zeros(N, np.uint8)
    scores = np.zeros((x.shape[0], 2))
    events = []
    for i, row in enumerate(x):
        r = stack.process(sig, row, q, np.full(N, (t0 + i) * 1_000_000_000, np.int64))
        scores[i, r.machine] = r.machine_score
        events += [e.copy() for e in r.events if e["scope"] == Scope.MACHINE]
        if stack.machine_stage.recording and i % 50 == 0:
            stack.machine_stage.wait_fit(5.0)  # tests only: the edge never waits (the fit runs on a thread)
    return scores, events


def test_self_fit_then_a_broken_relation_alarms_names_the_signal_and_is_not_absorbed():
    stack = DetectorStack(N, np.repeat(np.arange(2), 6), SETTINGS)
    scores, events = _run(stack, _rows(2000, seed=1, break_at=1200))
    assert stack.machine_stage.fits_done == 2
    assert np.all(scores[:300] == 0.0)  # nothing scored while the baseline is recorded
    opened = [e for e in events if e["phase"] == Phase.OPEN]
    before = [e for e in opened if e["ts_start"] < 1200 * 1_000_000_000]
    assert len(before) <= 2  # the healthy hour after the fit is (nearly) quiet
    fault = [e for e in opened if e["ts_start"] >= 1200 * 1_000_000_000 and e["entity"] == 0]
    assert fault and fault[0]["ts_start"] <= 1215 * 1_000_000_000
    assert int(fault[0]["top"][0]) == 3
    # a persistent fault stays in alarm: the fitted baseline never learns it
    assert np.mean(scores[1250:, 0] >= 0.5) > 0.95
    assert not [e for e in events if e["phase"] == Phase.CLOSE and e["ts_start"] == fault[0]["ts_start"]]


def test_without_self_fit_only_modelled_machines_score_and_a_rebaseline_still_refits():
    s = AnalyticsSettings(machine=MachineSettings(period_s=1.0, fit_after_s=300.0, lags=1))  # self_fit off
    stack = DetectorStack(N, np.repeat(np.arange(2), 6), s)
    scores, _ = _run(stack, _rows(700, seed=6))
    assert stack.machine_stage.fits_done == 0 and np.all(scores == 0.0)
    stack.machine_stage.rebaseline([1])
    scores, _ = _run(stack, _rows(700, seed=7), t0=700)
    assert [m is not None for m in stack.machine_stage.models] == [False, True]


def test_rebaseline_records_afresh_and_then_accepts_the_new_normal():
    stack = DetectorStack(N, np.repeat(np.arange(2), 6), SETTINGS)
    x = _rows(1600, seed=2, break_at=500)
    scores, _ = _run(stack, x[:600])
    assert np.mean(scores[520:600, 0] >= 0.5) > 0.9
    stack.machine_stage.rebaseline([0])  # the change was confirmed (a new part fitted, say)
    scores, _ = _run(stack, x[600:], t0=600)
    assert np.all(scores[:300, 0] == 0.0)
    assert np.mean(scores[400:, 0] >= 0.5) < 0.05


def test_checkpoint_restores_the_fitted_baseline_warm(tmp_path: Path):
    x = _rows(900, seed=3, break_at=700)
    whole = DetectorStack(N, np.repeat(np.arange(2), 6), SETTINGS)
    ref, _ = _run(whole, x)
    first = DetectorStack(N, np.repeat(np.arange(2), 6), SETTINGS)
    _run(first, x[:600])
    first.save(tmp_path / "detectors.npz")
    second = DetectorStack(N, np.repeat(np.arange(2), 6), SETTINGS)
    second.restore(tmp_path / "detectors.npz")
    assert not second.machine_cold and second.machine_stage.fits_done == 0
    got, _ = _run(second, x[600:], t0=600)
    np.testing.assert_allclose(got, ref[600:], atol=1e-12)
    # a checkpoint without the machine stage's file (older edge) restores the rest; that stage alone is cold
    (tmp_path / "detectors.machine.npz").unlink()
    third = DetectorStack(N, np.repeat(np.arange(2), 6), SETTINGS)
    third.restore(tmp_path / "detectors.npz")
    assert third.machine_cold
    np.testing.assert_array_equal(third.state, first.state)


def test_recording_a_long_baseline_keeps_rows_bounded_and_spread_over_the_whole_time():
    """lags 0: a 3,000-tick baseline in 100 rows; a regime seen only late in it is still part of the model."""
    s = AnalyticsSettings(machine=MachineSettings(period_s=1.0, fit_after_s=3000.0, fit_rows=100, lags=0,
                                                  self_fit=MachineSelfFit.ON))
    stack = DetectorStack(N, np.repeat(np.arange(2), 6), s)
    x = _rows(3600, seed=5)
    x[2500:, :6] += 3.0 * np.random.default_rng(0).normal(size=6)  # a second operating point, late in the baseline
    scores, _ = _run(stack, x)
    stage = stack.machine_stage
    assert stage.fits_done == 2
    assert all(mo.rows <= 100 for m in stage.models for mo in m.modes)
    assert np.mean(scores[3050:, 0] >= 0.5) < 0.05  # the late regime is known: it was sampled


def test_edge_publishes_a_machine_alarm_with_its_contributors():
    """The events lane: a machine alarm names its top contributors, the first one as the stored signal tag."""
    from types import SimpleNamespace

    from edge.detectors.event_docs import alarm_documents
    from edge.detectors.events import EVENT_DTYPE
    from plantwire import wire

    table = SimpleNamespace(ids=["m0.flow", "m0.current", "m0.temp"], machine_ids=["m0"], machine=np.zeros(3, int),
                            device=np.zeros(3, int), devices=[SimpleNamespace(name="plc1")])
    ev = np.zeros(2, dtype=EVENT_DTYPE)
    ev["top"] = -1
    ev[0] = (5, -1, 0, int(Scope.MACHINE), int(Phase.OPEN), 6, 0.9, (1, 0, -1))
    ev[1] = (5, -1, 2, int(Scope.SIGNAL), int(Phase.OPEN), 1, 0.7, (-1, -1, -1))
    # Through the wire's own encoding, as the gateway sends them
    _, _, docs = wire.decode_events(wire.encode_events("gw", 1, alarm_documents(ev, table)))
    assert docs[0]["machine"] == "m0" and docs[0]["signal"] == "m0.current"
    assert docs[0]["contributors"] == ["m0.current", "m0.flow"]
    assert docs[1]["signal"] == "m0.temp" and "contributors" not in docs[1]
    # Traceability (issue 17): the machine model that raised it ("local": not a shipped bundle); null for the
    # unfitted signal stack.
    assert docs[0]["model_version"] == "local" and docs[1]["model_version"] is None


def test_rows_with_a_member_in_alarm_are_not_learned():
    """A baseline recorded while one member is in alarm leaves those rows out (guarded learning)."""
    from edge.detectors.machine import MachineStage

    s = MachineSettings(period_s=1.0, fit_after_s=400.0, lags=0, self_fit=MachineSelfFit.ON)
    stage = MachineStage(6, np.zeros(6, np.int64), np.array([0, 6]), np.arange(6), s)
    x = _rows(500, seed=8)[:, :6]
    in_alarm = np.zeros(6)
    sig = np.arange(6, dtype=np.uint32)
    for i, row in enumerate(x):
        in_alarm[2] = 1.0 if 100 <= i < 250 else 0.0  # signal 2 in alarm for 150 of the 400 recorded ticks
        stage.process(sig, row, np.zeros(6, np.uint8), i * 1_000_000_000, in_alarm)
        stage.wait_fit(5.0)
    assert stage.fits_done == 1
    assert stage.models[0].modes[0].rows == 401 - 150  # ticks 0..400 recorded, 150 of them left out


def test_rebaseline_command_reaches_the_edge_through_its_state_dir(tmp_path: Path):
    from edge.detectors.analytics import EdgeAnalytics
    from edge.detectors.machine import REBASELINE_FILE
    from plantwire.cli import main as cli_main

    stack = DetectorStack(N, np.repeat(np.arange(2), 6), SETTINGS, machine_ids=["line1.pump01", "line1.fan01"])
    an = EdgeAnalytics(stack, SETTINGS, tmp_path, None)
    _run(stack, _rows(400, seed=9))
    assert all(m is not None for m in stack.machine_stage.models)
    assert cli_main(["rebaseline", "--state-dir", str(tmp_path), "line1.fan*"]) == 0
    an.tick(1.0)
    assert [m is not None for m in stack.machine_stage.models] == [True, False]
    assert not (tmp_path / REBASELINE_FILE).exists()
