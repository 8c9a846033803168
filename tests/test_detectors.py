"""The detector stack as the edge runs it: built from a plant, frames in, scores and events out, checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import streams

from edge.detectors.checkpoint import CheckpointError
from edge.detectors.events import Phase, Scope
from edge.detectors.settings import AnalyticsSettings
from edge.detectors.stack import DetectorStack
from edge.kernels.kinds import EN_STATE, Kind
from plantwire.configfile import load_plant
from plantwire.plant import expand

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000_000_000_000


def _frames(table, n_frames: int, seed: int = 0, fault: tuple[int, int] | None = None):
    """One sample per signal per 1 s frame around the simulator's base values; ``fault`` = (signal, frame)."""
    rng = np.random.default_rng(seed)
    n = len(table)
    sig = np.arange(n, dtype=np.uint32)
    q = np.zeros(n, dtype=np.uint8)
    for f in range(n_frames):
        v = table.base + np.where(table.noise > 0, table.noise, 0.01) * rng.normal(size=n)
        if fault is not None and f >= fault[1]:
            v[fault[0]] += 50 * max(table.noise[fault[0]], 0.01)
        yield sig, v, q, np.full(n, T0 + f * 1_000_000_000, dtype=np.int64)


@pytest.fixture(scope="module")
def table():
    return expand(load_plant(ROOT / "configs" / "dev" / "plant.yaml"))


def test_built_from_the_plant_table_and_scores_every_sample(table):
    stack = DetectorStack.from_table(table, AnalyticsSettings(alarm_settle=0, settle_s=0))
    assert stack.n_signals == len(table) and stack.n_machines == len(table.machine_ids)
    state_sig = [i for i, k in enumerate(table.kinds) if k == "state"]
    if state_sig:
        assert int(stack.cfg[state_sig[0], 2]) == EN_STATE
    target = int(np.flatnonzero(table.noise > 0)[0])
    opened = []
    ticks = np.zeros(stack.n_machines, dtype=np.int64)
    for sig, v, q, ts in _frames(table, 120, fault=(target, 100)):
        r = stack.process(sig, v, q, ts)
        assert r.score.shape == (len(table),) and ((r.score >= 0) & (r.score <= 1)).all()
        opened += [e for e in r.events if e["phase"] == Phase.OPEN and e["scope"] == Scope.SIGNAL]
        ticks += np.bincount(r.machine, minlength=stack.n_machines)
    assert any(int(e["entity"]) == target and int(e["ts_start"]) == T0 + 100 * 1_000_000_000 for e in opened)
    # every machine ticks once per machine period (10 s) of sample time: 120 one-second frames, 12 ticks
    assert (ticks == 12).all()


def test_noisy_episode_raises_one_event_not_a_storm():
    stack = DetectorStack(1, np.array([-1]), AnalyticsSettings(warmup=20, settle_s=0))
    rng = np.random.default_rng(4)
    x = rng.normal(size=600)
    x[300:360] += rng.choice([0.0, 9.0], size=60)  # an episode of intermittent spikes
    res = [stack.process(np.zeros(1, np.uint32), x[i : i + 1], np.zeros(1, np.uint8),
                         np.array([T0 + i * 10**9], dtype=np.int64)) for i in range(600)]
    events = np.concatenate([r.events for r in res])
    opens = events[events["phase"] == Phase.OPEN]
    # One event for the burst; at most one more while the baseline, pulled up by the burst, settles back.
    assert 1 <= opens.shape[0] <= 2 and opens["ts_start"][0] == T0 + 300 * 10**9
    assert opens["ts_start"].min() >= T0 + 300 * 10**9 and opens["ts_start"].max() < T0 + 420 * 10**9
    assert [int(p) for p in events["phase"]] == [Phase.OPEN, Phase.CLOSE] * opens.shape[0]


@pytest.mark.parametrize("bad_s", [0.0, 3.0])
def test_bad_and_non_finite_samples_teach_nothing_and_score_only_data_quality(bad_s):
    """Bad samples change no state; they score only as data quality (kind BAD), and not at all with bad_s 0."""
    s = streams.mixed(4, 300)
    settings = AnalyticsSettings(quality={"bad_s": bad_s})
    a = DetectorStack(4, np.zeros(4, dtype=np.int64), settings)
    b = DetectorStack(4, np.zeros(4, dtype=np.int64), settings)
    ra = a.process(s["signal"], s["value"], s["quality"], s["ts"])
    junk = (s["quality"] == 2) | ~np.isfinite(s["value"])
    if bad_s == 0.0:
        assert (ra.score[junk] == 0).all() and (ra.kind[junk] == Kind.NONE).all()
    else:
        assert np.isin(ra.kind[junk], [Kind.NONE, Kind.BAD]).all() and (ra.kind[junk] == Kind.BAD).any()
    keep = ~junk
    b.process(s["signal"][keep], s["value"][keep], s["quality"][keep], s["ts"][keep])
    np.testing.assert_array_equal(a.state, b.state)


def test_restart_from_checkpoint_is_warm_and_identical(tmp_path: Path, table):
    frames = list(_frames(table, 90, seed=1, fault=(5, 70)))
    whole = DetectorStack.from_table(table)
    ref_scores, ref_mach = [], []
    for f in frames:  # results are views valid until the next call: copy them
        r = whole.process(*f)
        ref_scores.append(r.score.copy())
        ref_mach.append(r.machine_score.copy())
    ref_scores, ref_mach = ref_scores[60:], ref_mach[60:]
    first = DetectorStack.from_table(table)
    for f in frames[:60]:
        first.process(*f)
    first.save(tmp_path / "ck" / "detectors.npz")
    second = DetectorStack.from_table(table)
    second.restore(tmp_path / "ck" / "detectors.npz")
    for i, f in enumerate(frames[60:]):
        r = second.process(*f)
        np.testing.assert_array_equal(r.score, ref_scores[i])
        np.testing.assert_array_equal(r.machine_score, ref_mach[i])
    np.testing.assert_array_equal(second.machine_stage.bank.mach_f, whole.machine_stage.bank.mach_f)
    np.testing.assert_array_equal(second.machine_stage.x_last, whole.machine_stage.x_last)


def test_checkpoint_for_another_configuration_is_refused(tmp_path: Path):
    a = DetectorStack(3, np.zeros(3, dtype=np.int64))
    a.process(np.arange(3, dtype=np.uint32), np.ones(3), np.zeros(3, np.uint8), np.zeros(3, np.int64))
    a.save(tmp_path / "a.npz")
    other = DetectorStack(4, np.zeros(4, dtype=np.int64))
    before = other.state.copy()
    with pytest.raises(CheckpointError, match="another configuration"):
        other.restore(tmp_path / "a.npz")
    np.testing.assert_array_equal(other.state, before)
    (tmp_path / "bad.npz").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="unreadable"):
        a.restore(tmp_path / "bad.npz")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        a.restore(tmp_path / "none.npz")
    # retuning thresholds keeps the state usable
    c = DetectorStack(3, np.zeros(3, dtype=np.int64), AnalyticsSettings(level={"threshold": 3.0}))
    c.restore(tmp_path / "a.npz")


def test_events_beyond_capacity_are_counted_not_lost_silently():
    n = 50
    stack = DetectorStack(n, np.full(n, -1), AnalyticsSettings(warmup=5, max_events=10, alarm_settle=0, settle_s=0))
    sig = np.arange(n, dtype=np.uint32)
    q = np.zeros(n, np.uint8)
    rng = np.random.default_rng(0)
    for i in range(30):
        stack.process(sig, rng.normal(size=n), q, np.full(n, T0 + i * 10**9, dtype=np.int64))
    open_before = int((stack.sig_alarm_f[:, 0] == 1).sum())
    r = stack.process(sig, np.full(n, 100.0), q, np.full(n, T0 + 31 * 10**9, dtype=np.int64))
    opened = int((stack.sig_alarm_f[:, 0] == 1).sum()) - open_before
    assert opened > 10 and r.events.shape[0] == 10 and r.events_dropped == opened - 10


def test_alarms_wait_until_a_signal_has_settled_but_scores_do_not():
    """A cold start must not raise a storm: alarms open only after ``alarm_settle`` samples per signal."""
    n = 20
    settings = AnalyticsSettings(warmup=10, alarm_settle=60, settle_s=0)
    stack = DetectorStack(n, np.full(n, -1), settings)
    sig = np.arange(n, dtype=np.uint32)
    q = np.zeros(n, np.uint8)
    rng = np.random.default_rng(1)
    early_scores, opened_at = [], []
    for i in range(120):
        v = rng.normal(size=n)
        if i in (40, 100):
            v[3] = 50.0  # the same spike, once before and once after the signal has settled
        r = stack.process(sig, v, q, np.full(n, T0 + i * 10**9, dtype=np.int64))
        if i == 40:
            early_scores.append(float(r.score[3]))
        opened_at += [i for e in r.events if e["phase"] == Phase.OPEN and int(e["entity"]) == 3]
    assert early_scores[0] >= settings.signal_alarm.on_threshold, "the early spike must still be scored"
    assert 40 not in opened_at and 100 in opened_at


def test_alarm_score_holds_signals_that_are_still_settling_at_zero():
    """Scores start after warm-up, alarms after alarm_settle: alarm_score is what may open one."""
    s = AnalyticsSettings(warmup=30, alarm_settle=100, settle_s=0)
    stack = DetectorStack(2, np.full(2, -1), s)
    rng = np.random.default_rng(3)
    sig = np.arange(2, dtype=np.uint32)
    q = np.zeros(2, dtype=np.uint8)
    for f in range(140):
        v = rng.normal(size=2)
        if f in (60, 130):
            v[0] = 50.0  # a spike before and after signal 0 has settled
        r = stack.process(sig, v, q, np.full(2, f * 10**9, dtype=np.int64))
        assert r.alarm_score is not None
        if f == 60:
            assert r.score[0] > 0.5 and r.alarm_score[0] == 0.0  # hot, but still settling
        if f == 130:
            assert r.score[0] > 0.5 and r.alarm_score[0] == r.score[0]
        if f >= 100:
            np.testing.assert_array_equal(r.alarm_score, r.score)
