"""The NAB scorer of bench/nab_eval.py against hand-computed cases of the published rules."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import nab_eval

STANDARD = nab_eval.PROFILES["standard"]


def _truth(n: int = 1000, windows=((500, 599), (800, 849))):
    ts = np.arange(n, dtype=np.int64) * 60_000_000_000
    return nab_eval.file_truth(ts, [(int(ts[a]), int(ts[b])) for a, b in windows])


def test_null_and_perfect_detectors_normalise_to_0_and_100():
    tr = _truth()
    assert tr.probation == 150 and tr.windows == [(500, 599), (800, 849)]
    null = nab_eval.raw_score(tr, np.zeros(tr.n, dtype=bool), STANDARD)
    assert null == (-2.0, 0, 2, 0) and nab_eval.normalised(null[0], 2, STANDARD) == 0.0
    det = np.zeros(tr.n, dtype=bool)
    det[[500, 800]] = True
    perfect = nab_eval.raw_score(tr, det, STANDARD)
    assert perfect[:3] == (2.0, 2, 0) and math.isclose(nab_eval.normalised(perfect[0], 2, STANDARD), 100.0)


def test_late_detection_is_worth_less_and_only_the_first_counts():
    tr = _truth()
    det = np.zeros(tr.n, dtype=bool)
    det[[590, 599, 560]] = True  # first detection in the window is row 560
    raw, tp, fn, fp = nab_eval.raw_score(tr, det, STANDARD)
    w = 100
    expect = float(nab_eval.scaled_sigmoid(-(599 - 560 + 1) / w) / nab_eval.scaled_sigmoid(-1.0)) - 1.0
    assert (tp, fn, fp) == (1, 1, 0) and math.isclose(raw, expect)
    assert 0 < expect + 1.0 < 1.0


def test_false_positives_before_any_window_cost_full_weight_and_fade_after_one():
    tr = _truth()
    det = np.zeros(tr.n, dtype=bool)
    det[[100, 300]] = True  # 100 is in probation: ignored; 300 precedes every window: -fpWeight
    assert math.isclose(nab_eval.raw_score(tr, det, STANDARD)[0], -2.0 - 0.11)
    det[:] = False
    det[600] = True  # right after the first window: A(1/99) ~ -0.025, cheap
    det[790] = True  # far after it: A(191/99) close to -1
    raw = nab_eval.raw_score(tr, det, STANDARD)[0]
    expect = -2.0 + 0.11 * float(nab_eval.scaled_sigmoid(1 / 99) + nab_eval.scaled_sigmoid(191 / 99))
    assert math.isclose(raw, expect) and nab_eval.scaled_sigmoid(4.0) == -1.0
