"""The likelihood stage inside the detector stack: off by default, folded into scores and alarms, checkpointed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from edge.detectors import checkpoint
from edge.detectors.events import Phase
from edge.detectors.settings import AnalyticsSettings, LikelihoodMode, LikelihoodTails
from edge.detectors.stack import STATE_VERSION, DetectorStack
from edge.kernels import likelihood as lk
from edge.kernels.kinds import Kind

T0 = 1_700_000_000_000_000_000
REPLACE = AnalyticsSettings.model_validate({"likelihood": {"mode": "replace"}})


def _frames(n_sig: int, n_frames: int, seed: int = 0):
    """One sample per signal per 1 s frame: noise of different sizes per signal, a burst on signal 0 late on."""
    rng = np.random.default_rng(seed)
    sig = np.arange(n_sig, dtype=np.uint32)
    q = np.zeros(n_sig, dtype=np.uint8)
    size = 1.0 + np.arange(n_sig)
    for f in range(n_frames):
        v = rng.normal(size=n_sig) * size
        if 1500 <= f < 1530:
            v[0] = rng.normal() * 3.0  # larger changes, within the range already seen
        yield sig, v, q, np.full(n_sig, T0 + f * 1_000_000_000, dtype=np.int64)


def _run(stack: DetectorStack, frames) -> tuple[np.ndarray, list]:
    scores, events = [], []
    for sig, v, q, ts in frames:
        r = stack.process(sig, v, q, ts)
        scores.append(r.score.copy())
        events += list(r.events)
    return np.array(scores), events


def test_off_by_default_and_the_stack_is_unchanged():
    assert AnalyticsSettings().likelihood.mode is LikelihoodMode.OFF
    a = DetectorStack(4, np.full(4, -1))
    b = DetectorStack(4, np.full(4, -1), AnalyticsSettings.model_validate({"likelihood": {"mode": "off",
                                                                                          "learn": 5}}))
    sa, _ = _run(a, _frames(4, 300))
    sb, _ = _run(b, _frames(4, 300))
    np.testing.assert_array_equal(sa, sb)
    assert not b.lk_state.any()  # the stage does not run at all


def test_replace_mode_scores_the_burst_and_alarms_on_it():
    stack = DetectorStack(4, np.full(4, -1), REPLACE)
    scores, events = _run(stack, _frames(4, 2000))
    assert scores[1500:1530, 0].max() >= 0.5
    opened = [e for e in events if e["phase"] == Phase.OPEN]
    assert any(int(e["entity"]) == 0 and 1500 <= (int(e["ts_start"]) - T0) // 10**9 < 1530 for e in opened)
    assert (scores[400:1500] >= 0.5).mean() < 0.01  # each signal judged against its own noise
    assert {int(e["kind"]) for e in opened} <= {int(Kind.RATE), int(Kind.RANGE), int(Kind.STUCK)}


def test_max_mode_keeps_the_larger_score():
    base = DetectorStack(2, np.full(2, -1))
    both = DetectorStack(2, np.full(2, -1), AnalyticsSettings.model_validate({"likelihood": {"mode": "max"}}))
    sa, _ = _run(base, _frames(2, 1600))
    sb, _ = _run(both, _frames(2, 1600))
    assert (sb >= sa).all() and (sb > sa).any()


def test_checkpoint_round_trips_the_likelihood_state(tmp_path: Path):
    frames = list(_frames(3, 1600))
    whole, _ = _run(DetectorStack(3, np.full(3, -1), REPLACE), frames)
    first = DetectorStack(3, np.full(3, -1), REPLACE)
    _run(first, frames[:1000])
    first.save(tmp_path / "ck.npz")
    second = DetectorStack(3, np.full(3, -1), REPLACE)
    second.restore(tmp_path / "ck.npz")
    assert not second.likelihood_cold
    np.testing.assert_array_equal(second.lk_state, first.lk_state)
    np.testing.assert_array_equal(second.lk_season, first.lk_season)
    assert np.isfinite(first.lk_season[:, lk.S_BINS::2]).any()  # the seasonal bins learned
    rest, _ = _run(second, frames[1000:])
    np.testing.assert_array_equal(rest, whole[1000:])  # warm: identical to never having stopped


def test_checkpoint_without_likelihood_state_restores_the_rest_warm(tmp_path: Path):
    """A checkpoint written before the stage existed: the other stages resume, the new one starts cold."""
    old = DetectorStack(3, np.full(3, -1), REPLACE)
    _run(old, _frames(3, 500))
    checkpoint.save(tmp_path / "old.npz", STATE_VERSION, old.fingerprint, old._arrays())
    new = DetectorStack(3, np.full(3, -1), REPLACE)
    new.restore(tmp_path / "old.npz")
    assert new.likelihood_cold
    np.testing.assert_array_equal(new.state, old.state)
    assert not new.lk_state.any()
    new.save(tmp_path / "new.npz")
    again = DetectorStack(3, np.full(3, -1), REPLACE)
    again.restore(tmp_path / "new.npz")
    assert not again.likelihood_cold


def test_other_season_size_restores_all_but_the_seasonal_bins(tmp_path: Path):
    frames = list(_frames(3, 500))
    a = DetectorStack(3, np.full(3, -1), REPLACE)
    _run(a, frames)
    a.save(tmp_path / "a.npz")
    b = DetectorStack(3, np.full(3, -1), AnalyticsSettings.model_validate({"likelihood": {"mode": "replace",
                                                                                          "season_bins": 48}}))
    b.restore(tmp_path / "a.npz")
    assert b.likelihood_cold
    np.testing.assert_array_equal(b.lk_state, a.lk_state)  # the one-step chain stays warm
    assert b.lk_season.shape == (3, lk.S_BINS + 2 * 48)
    assert not np.isfinite(b.lk_season[:, lk.S_BINS::2]).any()  # the seasonal bins start cold


def test_settings_are_validated():
    with pytest.raises(ValidationError):
        AnalyticsSettings.model_validate({"likelihood": {"mode": "sometimes"}})
    with pytest.raises(ValidationError):
        AnalyticsSettings.model_validate({"likelihood": {"long_alpha": 0}})
    s = AnalyticsSettings.model_validate({"likelihood": {"mode": "replace", "novelty_margin": None, "tails": "upper"}})
    assert s.likelihood.mode is LikelihoodMode.REPLACE and s.likelihood.novelty_margin is None
    assert s.likelihood.tails is LikelihoodTails.UPPER
    with pytest.raises(ValidationError):
        AnalyticsSettings.model_validate({"likelihood": {"tails": "lower"}})
