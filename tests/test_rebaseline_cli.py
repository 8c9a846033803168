"""``plantwire rebaseline``: one command, two forms (signals in a stopped edge's checkpoint; machines through a
running edge's state dir), and a signal re-baseline leaves the machine stage's fitted baselines alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.detectors.settings import AnalyticsSettings, MachineSelfFit, MachineSettings
from edge.detectors.stack import DetectorStack
from edge.kernels import robust, signal_stack
from plantwire.cli import main as cli_main

N = 12  # machines 0 (signals 0..5) and 1 (6..11)
SETTINGS = AnalyticsSettings(settle_s=0, machine=MachineSettings(period_s=1.0, fit_after_s=300.0, lags=1,
                                                                 self_fit=MachineSelfFit.ON))


def _feed(stack: DetectorStack, rows: int, seed: int, t0: int = 0) -> None:
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(0).normal(size=(2, 6))
    sig = np.arange(N, dtype=np.uint32)
    q = np.zeros(N, np.uint8)
    for i in range(rows):
        lat = rng.normal(size=4)
        x = np.concatenate([lat[:2] @ mix, lat[2:] @ mix]) + 0.1 * rng.normal(size=N) + 50.0
        stack.process(sig, x, q, np.full(N, (t0 + i) * 1_000_000_000, np.int64))
        if stack.machine_stage.recording and i % 50 == 0:
            stack.machine_stage.wait_fit(5.0)


def test_machine_form_writes_the_request_for_a_running_edge(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from edge.detectors.machine import REBASELINE_FILE

    assert cli_main(["rebaseline", "--state-dir", str(tmp_path), "line1.fan*", "line2.press03"]) == 0
    assert (tmp_path / REBASELINE_FILE).read_text().split() == ["line1.fan*", "line2.press03"]
    assert "requested in" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["rebaseline"],  # nothing
    ["rebaseline", "edge.yaml"],  # signals: a config but no pattern
    ["rebaseline", "--state-dir", "/nonexistent", "m*", "--dry-run"],  # --dry-run is for signals
])
def test_incomplete_or_mixed_forms_exit_2(argv: list[str]):
    with pytest.raises(SystemExit) as exc:
        cli_main(argv)
    assert exc.value.code == 2


def test_a_signal_rebaseline_keeps_the_machine_baselines_and_first_seen(tmp_path: Path):
    """The checkpoint round trip of ``plantwire rebaseline CONFIG ...``: restore, re-baseline signals, save."""
    ckpt = tmp_path / "detectors.npz"
    first = DetectorStack(N, np.repeat(np.arange(2), 6), SETTINGS)
    _feed(first, 400, seed=1)
    assert all(m is not None for m in first.machine_stage.models)
    first.save(ckpt)

    edited = DetectorStack(N, np.repeat(np.arange(2), 6), SETTINGS)
    edited.restore(ckpt)
    assert not edited.machine_cold
    edited.rebaseline(np.array([0, 7]))
    edited.save(ckpt)

    after = DetectorStack(N, np.repeat(np.arange(2), 6), SETTINGS)
    after.restore(ckpt)
    assert not after.machine_cold and all(m is not None for m in after.machine_stage.models)
    for name, arr in first.machine_stage.arrays().items():
        np.testing.assert_array_equal(after.machine_stage.arrays()[name], arr, err_msg=name)
    np.testing.assert_array_equal(after.first_ns, first.first_ns)  # settle_s is not restarted
    assert (after.state[[0, 7], signal_stack.B_LEVEL + robust.COUNT] == 0).all()  # those two learn afresh
    others = np.setdiff1d(np.arange(N), [0, 7])
    np.testing.assert_array_equal(after.state[others], first.state[others])
