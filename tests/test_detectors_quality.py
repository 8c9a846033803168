"""Data-quality alarms (BAD, SILENT) and cold start by time, through the whole DetectorStack."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.detectors.events import Phase
from edge.detectors.settings import AnalyticsSettings
from edge.detectors.stack import DetectorStack
from edge.kernels.kinds import Kind

T0 = 1_790_000_000_000_000_000


def _run(stack: DetectorStack, n_sig: int, seconds: float, hz: float, *, t_from: float = 0.0, spike_at: float = -1.0,
         bad: tuple[float, float] = (-1.0, -1.0), drop_sig: int = -1, drop: tuple[float, float] = (-1.0, -1.0),
         seed: int = 0) -> list[tuple[float, int, int, int]]:
    """Frames of ``n_sig`` noise signals at ``hz``; returns (t_s, phase, entity, kind) of every event."""
    rng = np.random.default_rng(seed)
    out = []
    period = 1.0 / hz
    for i in range(round(seconds * hz)):
        t = t_from + i * period
        sig = np.arange(n_sig, dtype=np.uint32)
        v = rng.normal(size=n_sig)
        q = np.zeros(n_sig, np.uint8)
        if abs(t - spike_at) < period / 2:
            v[0] = 40.0
        if bad[0] <= t < bad[1]:
            v[0] = np.nan
            q[0] = 2
        if drop[0] <= t < drop[1]:
            keep = sig != drop_sig
            sig, v, q = sig[keep], v[keep], q[keep]
        r = stack.process(sig, v, q, np.full(sig.shape[0], T0 + round(t * 1e9), dtype=np.int64))
        out += [(t, int(e["phase"]), int(e["entity"]), int(e["kind"])) for e in r.events]
    return out


def test_cold_start_waits_settle_s_at_10_hz_not_just_300_samples():
    stack = DetectorStack(3, np.full(3, -1), AnalyticsSettings(settle_s=120.0))
    ev = _run(stack, 3, 200.0, 10.0, spike_at=60.0)  # 600 samples in, but only 60 s
    assert not [e for e in ev if e[1] == Phase.OPEN]
    ev = _run(stack, 3, 20.0, 10.0, t_from=200.0, spike_at=210.0)
    assert [e[2] for e in ev if e[1] == Phase.OPEN] == [0]


def test_restart_from_checkpoint_opens_no_burst_and_stays_settled(tmp_path: Path):
    s = AnalyticsSettings(settle_s=120.0)
    first = DetectorStack(20, np.full(20, -1), s)
    _run(first, 20, 400.0, 1.0)  # past settle_s and alarm_settle (300 samples)
    first.save(tmp_path / "d.npz")
    second = DetectorStack(20, np.full(20, -1), s)
    second.restore(tmp_path / "d.npz")
    # ten minutes later (the gateway was down), the same plant: no burst; a spike during restart_settle_s (120 s)
    # is held, one after it alarms at once
    ev = _run(second, 20, 200.0, 1.0, t_from=800.0, spike_at=830.0, seed=5)
    assert not [e for e in ev if e[1] == Phase.OPEN]
    ev = _run(second, 20, 30.0, 1.0, t_from=1000.0, spike_at=1010.0, seed=6)
    assert [(e[0], e[2], e[3]) for e in ev if e[1] == Phase.OPEN] == [(1010.0, 0, int(Kind.LEVEL))]


def test_old_checkpoint_without_first_seen_restores_warm(tmp_path: Path):
    s = AnalyticsSettings(settle_s=120.0)
    first = DetectorStack(2, np.full(2, -1), s)
    _run(first, 2, 400.0, 1.0)
    first.save(tmp_path / "d.npz")
    with np.load(tmp_path / "d.npz") as z:
        arrays = {k: z[k] for k in z.files if k != "first_ns"}
    np.savez(tmp_path / "old.npz", **arrays)
    second = DetectorStack(2, np.full(2, -1), s)
    second.restore(tmp_path / "old.npz")
    assert (second.first_ns == 0).all()
    ev = _run(second, 2, 150.0, 1.0, t_from=400.0, spike_at=530.0)  # after restart_settle_s
    assert [e[2] for e in ev if e[1] == Phase.OPEN] == [0]


def test_a_dropout_opens_one_bad_alarm_after_bad_s_even_while_settling():
    stack = DetectorStack(2, np.full(2, -1), AnalyticsSettings(quality={"bad_s": 3.0}))
    ev = _run(stack, 2, 120.0, 1.0, bad=(50.0, 60.0))
    opens = [e for e in ev if e[1] == Phase.OPEN]
    assert opens == [(52.0, Phase.OPEN, 0, int(Kind.BAD))]  # last good at 49 s, 3 s later
    assert [e[1] for e in ev if e[2] == 0] == [Phase.OPEN, Phase.CLOSE]


def test_a_signal_that_stops_arriving_raises_silent_and_clears_when_back():
    stack = DetectorStack(3, np.full(3, -1), AnalyticsSettings(quality={"silent_s": 30.0}, settle_s=0))
    ev = _run(stack, 3, 200.0, 1.0, drop_sig=1, drop=(100.0, 160.0))
    mine = [e for e in ev if e[2] == 1]
    assert mine[0][1] == Phase.OPEN and mine[0][3] == int(Kind.SILENT) and 129.0 <= mine[0][0] <= 131.0
    assert [e[1] for e in mine] == [Phase.OPEN, Phase.CLOSE]
    assert all(e[2] == 1 for e in ev)


def test_silence_is_not_blamed_on_signals_for_the_gateways_own_downtime(tmp_path: Path):
    s = AnalyticsSettings(quality={"silent_s": 30.0}, settle_s=0)
    first = DetectorStack(3, np.full(3, -1), s)
    _run(first, 3, 100.0, 1.0)
    first.save(tmp_path / "d.npz")
    second = DetectorStack(3, np.full(3, -1), s)
    second.restore(tmp_path / "d.npz")
    # back an hour later; signal 2 arrives only after 10 s: not silent (the gateway was down, not the signal)
    ev = _run(second, 3, 20.0, 1.0, t_from=3700.0, drop_sig=2, drop=(3700.0, 3710.0))
    assert not [e for e in ev if e[1] == Phase.OPEN]


def test_a_persistent_step_stays_in_alarm_until_rebaselined():
    """Guarded learning keeps a 10-sigma step an open alarm for its whole duration; a re-baseline accepts it."""
    stack = DetectorStack(2, np.full(2, -1), AnalyticsSettings(settle_s=0, level={"guard": 0.01}))
    rng = np.random.default_rng(3)
    sig = np.arange(2, dtype=np.uint32)
    q = np.zeros(2, np.uint8)
    phases = []
    for i in range(2400):
        if i == 1800:
            stack.rebaseline(np.array([0]))
        v = rng.normal(size=2) + np.array([10.0 if i >= 600 else 0.0, 0.0])
        r = stack.process(sig, v, q, np.full(2, T0 + i * 10**9, dtype=np.int64))
        phases += [(i, int(e["phase"])) for e in r.events if int(e["entity"]) == 0]
    assert phases[0] == (600, Phase.OPEN)
    assert [p for _, p in phases] == [Phase.OPEN, Phase.CLOSE] and 1800 < phases[1][0] < 1900


def test_rebaseline_command_rewrites_the_checkpoint_of_the_matching_signals(tmp_path: Path,
                                                                              capsys) -> None:
    """``plantwire rebaseline`` on a copy of the dev config: refuses without a checkpoint, then re-baselines."""
    import shutil

    import yaml

    from edge.config import load_edge
    from edge.detectors.analytics import DETECTORS_FILE
    from plantwire.cli import main as cli_main
    from plantwire.plant import expand

    root = Path(__file__).resolve().parents[1]
    for name in ("edge.yaml", "plant.yaml"):
        shutil.copy(root / "configs" / "dev" / name, tmp_path / name)
    shutil.copytree(root / "configs" / "templates", tmp_path.parent / "templates", dirs_exist_ok=True)
    doc = yaml.safe_load((tmp_path / "edge.yaml").read_text())
    doc["state_dir"] = str(tmp_path / "state")
    (tmp_path / "edge.yaml").write_text(yaml.safe_dump(doc))
    plant = (tmp_path / "plant.yaml").read_text().replace("../templates/", str(tmp_path.parent / "templates") + "/")
    (tmp_path / "plant.yaml").write_text(plant)
    assert cli_main(["rebaseline", str(tmp_path / "edge.yaml"), "line1.press01.*"]) == 2
    assert "no usable checkpoint" in capsys.readouterr().err
    cfg, plant_cfg = load_edge(tmp_path / "edge.yaml")
    table = expand(plant_cfg)
    stack = DetectorStack.from_table(table, cfg.analytics)
    n = len(table)
    rng = np.random.default_rng(0)
    for i in range(40):
        stack.process(np.arange(n, dtype=np.uint32), rng.normal(size=n), np.zeros(n, np.uint8),
                      np.full(n, T0 + i * 10**9, dtype=np.int64))
    stack.save(cfg.state_dir / DETECTORS_FILE)
    assert cli_main(["rebaseline", str(tmp_path / "edge.yaml"), "line1.press01.*"]) == 0
    after = DetectorStack.from_table(table, cfg.analytics)
    after.restore(cfg.state_dir / DETECTORS_FILE)
    press = np.array([i for i, s in enumerate(table.ids) if s.startswith("line1.press01.")])
    other = np.setdiff1d(np.arange(n), press)
    assert (after.state[press, 2] == 0).all()  # level count: learning afresh
    np.testing.assert_array_equal(after.state[other], stack.state[other])


def _device_run(stack: DetectorStack, seconds: int, *, t_from: int = 0, bad_dev: tuple[int, int] = (-1, -1),
                silent_dev: tuple[int, int] = (-1, -1), bad_sig: tuple[int, int] = (-1, -1)) -> list[tuple]:
    """6 noise signals at 1 Hz: 0-3 on device 0, 4-5 on device 1. Device 0's polls fail (all BAD) in ``bad_dev``,
    or deliver nothing in ``silent_dev``; signal 4 alone is bad in ``bad_sig``. Returns (t, phase, scope, entity,
    kind) of every event."""
    rng = np.random.default_rng(t_from)
    out = []
    for t in range(t_from, t_from + seconds):
        sig = np.arange(6, dtype=np.uint32)
        v = rng.normal(size=6)
        q = np.zeros(6, np.uint8)
        if bad_dev[0] <= t < bad_dev[1]:
            v[:4], q[:4] = np.nan, 2
        if bad_sig[0] <= t < bad_sig[1]:
            v[4], q[4] = np.nan, 2
        if silent_dev[0] <= t < silent_dev[1]:
            sig, v, q = sig[4:], v[4:], q[4:]
        r = stack.process(sig, v, q, np.full(sig.shape[0], T0 + t * 10**9, dtype=np.int64))
        out += [(t, int(e["phase"]), int(e["scope"]), int(e["entity"]), int(e["kind"])) for e in r.events]
    return out


def _device_stack() -> DetectorStack:
    return DetectorStack(6, np.full(6, -1), AnalyticsSettings(settle_s=0, alarm_settle=30),
                         device_of=np.array([0, 0, 0, 0, 1, 1]))


def test_a_device_without_good_polls_raises_one_device_alarm_not_one_per_signal():
    from edge.detectors.events import Scope

    stack = _device_stack()
    ev = _device_run(stack, 400, bad_dev=(200, 300))
    assert [(p, sc, e, k) for _, p, sc, e, k in ev] == [(Phase.OPEN, Scope.DEVICE, 0, Kind.DEVICE),
                                                        (Phase.CLOSE, Scope.DEVICE, 0, Kind.DEVICE)]
    t_open, t_close = ev[0][0], ev[1][0]
    assert t_open == 199 + 3  # device_s 3 s after the last good poll (at 199)
    assert 300 <= t_close <= 300 + 15  # closes through its hysteresis once the polls are good again


def test_a_silent_device_raises_one_device_alarm_and_folds_its_signals_silence():
    from edge.detectors.events import Scope

    stack = _device_stack()
    ev = _device_run(stack, 500, silent_dev=(100, 400))
    opened = [(t, sc, e, k) for t, p, sc, e, k in ev if p == Phase.OPEN]
    assert [(sc, e, k) for _, sc, e, k in opened] == [(Scope.DEVICE, 0, Kind.DEVICE)]
    assert 100 + 119 <= opened[0][0] <= 100 + 121  # silent_s 120 s: a quiet device is judged like a quiet signal


def test_one_bad_signal_on_a_healthy_device_is_its_own_alarm():
    stack = _device_stack()
    ev = _device_run(stack, 300, bad_sig=(100, 150))
    assert [(p, e, k) for _, p, _, e, k in ev if p == Phase.OPEN] == [(Phase.OPEN, 4, Kind.BAD)]


def test_edge_publishes_a_device_alarm_with_the_device_and_the_machines_it_serves():
    """The events lane: a DEVICE alarm names its device and the machines it serves; Sparkplug (per machine) skips it."""
    from types import SimpleNamespace

    from edge.detectors.event_docs import alarm_documents, per_machine_events
    from edge.detectors.events import EVENT_DTYPE, Scope
    from plantwire import wire

    table = SimpleNamespace(ids=["m0.a", "m1.a", "m2.a"], machine_ids=["m0", "m1", "m2"],
                            machine=np.array([0, 1, 2]), device=np.array([0, 0, 1]),
                            devices=[SimpleNamespace(name="plc1"), SimpleNamespace(name="plc2")])
    ev = np.zeros(3, dtype=EVENT_DTYPE)
    ev["top"] = -1
    ev[0] = (5, -1, 0, int(Scope.DEVICE), int(Phase.OPEN), int(Kind.DEVICE), 0.6, (-1, -1, -1))
    ev[1] = (5, -1, 1, int(Scope.DEVICE), int(Phase.OPEN), int(Kind.DEVICE), 0.6, (-1, -1, -1))
    ev[2] = (5, -1, 2, int(Scope.SIGNAL), int(Phase.OPEN), int(Kind.BAD), 0.6, (-1, -1, -1))
    _, _, docs = wire.decode_events(wire.encode_events("gw", 1, alarm_documents(ev, table)))
    assert docs[0]["kind"] == "device" and docs[0]["device"] == "plc1" and docs[0]["machines"] == ["m0", "m1"]
    assert docs[0]["machine"] is None and "signal" not in docs[0]
    assert docs[1]["device"] == "plc2" and docs[1]["machine"] == "m2"
    assert docs[2]["signal"] == "m2.a"
    assert [int(e["scope"]) for e in per_machine_events(ev)] == [int(Scope.SIGNAL)]

