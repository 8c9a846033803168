"""``plantwire score``: the edge's detector stack over a CSV, bad input counted, checkpoints, RUL option."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.detectors.settings import AnalyticsSettings
from edge.detectors.stack import DetectorStack
from edge.score import Progress, main
from plantwire.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
CMAPSS = ROOT.parent / "shared" / "datasets" / "cmapss"


def _write(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _read(path: Path) -> tuple[list[str], dict[str, np.ndarray], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    head, body = rows[0], rows[1:]
    cols = {}
    for j, h in enumerate(head):
        try:
            cols[h] = np.array([float(r[j]) for r in body])
        except ValueError:
            cols[h] = np.array([r[j] for r in body])
    return head, cols, body


def _series(n: int = 2000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = 20 + 0.2 * rng.normal(size=n)
    if n > 1500:
        x[1500] += 8.0  # spike
    return x


def _edge_per_sample(values: np.ndarray, ts_ns: np.ndarray) -> np.ndarray:
    """What the edge computes for one signal fed one sample per frame."""
    stack = DetectorStack(1, np.zeros(1, dtype=np.int64))
    out = np.empty(values.shape[0])
    for i, v in enumerate(values):
        r = stack.process(np.zeros(1, np.uint32), np.array([v]), np.zeros(1, np.uint8), ts_ns[i : i + 1])
        out[i] = r.score[0]
    return out


def test_single_column_iso_timestamps_equals_the_edge_stack(tmp_path: Path):
    x = _series()
    t0 = np.datetime64("2024-01-01T00:00:00")
    ts = [str(t0 + np.timedelta64(5 * i, "m")).replace("T", " ") for i in range(x.shape[0])]
    src = _write(tmp_path / "in.csv", ["timestamp", "value"], [[t, f"{v:.6f}"] for t, v in zip(ts, x, strict=True)])
    assert main([str(src), "-o", str(tmp_path / "out.csv"), "--events", str(tmp_path / "ev.csv")]) == 0
    head, cols, body = _read(tmp_path / "out.csv")
    assert head == ["timestamp", "score", "kind", "value_score"]
    assert len(body) == x.shape[0] and list(cols["timestamp"][:2]) == ts[:2]
    ts_ns = np.array(ts, dtype="datetime64[ns]").astype(np.int64)
    expect = _edge_per_sample(np.round(x, 6), ts_ns)
    np.testing.assert_allclose(cols["score"], expect, atol=1e-6)
    assert cols["score"][1500] >= 0.5 and cols["kind"][1500] in ("level", "rate")
    assert np.argmax(cols["score"][100:]) + 100 == 1500
    _, ev, _ = _read(tmp_path / "ev.csv")
    assert "open" in list(ev["phase"]) and ts_ns[1500] in set(ev["ts_start_ns"].astype(np.int64))


def test_several_columns_are_one_machine_scored_row_by_row_against_a_fitted_model(tmp_path: Path):
    """fit-machine on the normal part, then score --machine-model: the edge's stack, row = tick, break named."""
    from edge.models import machine
    from edge.models.fit_command import main as fit_main

    rng = np.random.default_rng(2)
    n = 900
    load = rng.normal(size=n)
    vals = load[:, None] * np.array([1.0, 2.0, -1.0, 0.5, 1.5]) + 0.1 * rng.normal(size=(n, 5))
    vals[700:, 2] = load[700:]  # one signal stops following the others (each stays in its range)
    src = _write(tmp_path / "m.csv", ["t", "a", "b", "c", "d", "e"],
                 [[i, *(f"{v:.5f}" for v in row)] for i, row in enumerate(vals)])
    assert fit_main([str(src), "-o", str(tmp_path / "m.npz"), "--rows", ":500", "--name", "pump"]) == 0
    assert main([str(src), "-o", str(tmp_path / "o.csv"), "--no-progress", "--machine-model",
                 str(tmp_path / "m.npz"), "--events", str(tmp_path / "ev.csv")]) == 0
    head, cols, _ = _read(tmp_path / "o.csv")
    assert head[-1] == "machine_score" and head[3:8] == [f"{c}_score" for c in "abcde"]
    # the same stack with the same model, fed one frame per row
    model = machine.load(tmp_path / "m.npz")
    stack = DetectorStack(5, np.zeros(5, dtype=np.int64), machine_models=[model])
    ms = np.zeros(n)
    for i in range(n):
        r = stack.process(np.arange(5, dtype=np.uint32), np.round(vals[i], 5), np.zeros(5, np.uint8),
                          np.full(5, i * 10_000_000_000, dtype=np.int64))
        ms[i] = r.machine_score[0] if r.machine_score.shape[0] else 0.0
    np.testing.assert_allclose(cols["machine_score"], ms, atol=1e-6)
    assert np.mean(cols["machine_score"][:700] >= 0.5) < 0.02  # fitted on :500, quiet on unseen normal rows too
    assert np.mean(cols["machine_score"][710:] >= 0.5) > 0.95  # the broken relation stays in alarm
    _, ev, _ = _read(tmp_path / "ev.csv")
    assert "machine" in set(ev["scope"])
    opened = [i for i in range(len(ev["scope"])) if ev["scope"][i] == "machine" and ev["phase"][i] == "open"]
    assert opened and str(ev["contributors"][opened[-1]]).split(";")[0] == "c"  # the broken signal is named first


def test_bad_input_is_counted_and_located_not_fatal(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    x = _series(300)
    rows: list[list[object]] = [[i, f"{v:.4f}", f"{v:.4f}"] for i, v in enumerate(x)]
    rows[50][1] = "n/a"
    rows[51][2] = ""
    rows[60] = [60, "1.0"]  # a field short
    rows[70][0] = "yesterday"
    rows[80][0] = 10  # backwards
    src = _write(tmp_path / "bad.csv", ["ts", "p", "q"], rows)
    assert main([str(src), "-o", str(tmp_path / "o.csv")]) == 0
    err = capsys.readouterr().err
    assert "2 unreadable values scored as gaps" in err
    assert "1 rows with an unreadable timestamp skipped" in err
    assert "1 rows with the wrong number of fields skipped" in err
    assert "1 timestamps going backwards" in err
    assert f"{src}:52: column 'p': 'n/a' is not a number" in err
    assert f"{src}:62: 2 fields, header has 3" in err
    assert f"{src}:72: timestamp 'yesterday'" in err
    assert f"{src}:82: timestamp '10' goes backwards" in err
    _, cols, body = _read(tmp_path / "o.csv")
    assert len(body) == 298
    # a gap is judged on data quality only: 1 s without a usable value, bad_s 3 s -> 1 / (1 + 9)
    assert cols["p_score"][50] == pytest.approx(0.1)


def test_unusable_input_and_settings_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main([str(tmp_path / "missing.csv")]) == 2
    only_ts = _write(tmp_path / "ts.csv", ["timestamp"], [[1], [2]])
    assert main([str(only_ts)]) == 2
    assert "no value column" in capsys.readouterr().err
    ok = _write(tmp_path / "ok.csv", ["timestamp", "v"], [[1, 1.0]])
    assert main([str(ok), "--columns", "w"]) == 2
    assert "['w'] are not in the header" in capsys.readouterr().err
    bad = tmp_path / "s.yaml"
    bad.write_text("level:\n  alpha: 2.0\nmachne: {}\n")
    assert main([str(ok), "--settings", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "level.alpha" in err and "machne: unknown field" in err


def test_settings_file_changes_the_scores(tmp_path: Path):
    x = _series(800)
    src = _write(tmp_path / "in.csv", ["timestamp", "v"], [[i, f"{v:.6f}"] for i, v in enumerate(x)])
    s = tmp_path / "s.yaml"
    s.write_text("level:\n  threshold: 2.0\n")
    main([str(src), "-o", str(tmp_path / "a.csv")])
    main([str(src), "-o", str(tmp_path / "b.csv"), "--settings", str(s)])
    a, b = _read(tmp_path / "a.csv")[1], _read(tmp_path / "b.csv")[1]
    assert b["v_score"].sum() > a["v_score"].sum()
    assert AnalyticsSettings.model_validate({"level": {"threshold": 2.0}}).level.threshold == 2.0


def test_checkpoint_resumes_warm_across_two_runs(tmp_path: Path):
    x = _series(1200)
    rows = [[i, f"{v:.6f}"] for i, v in enumerate(x)]
    whole = _write(tmp_path / "whole.csv", ["timestamp", "v"], rows)
    first = _write(tmp_path / "first.csv", ["timestamp", "v"], rows[:700])
    second = _write(tmp_path / "second.csv", ["timestamp", "v"], rows[700:])
    ck = tmp_path / "state" / "detectors.npz"
    main([str(whole), "-o", str(tmp_path / "w.csv")])
    main([str(first), "-o", str(tmp_path / "1.csv"), "--checkpoint", str(ck)])
    assert ck.exists()
    main([str(second), "-o", str(tmp_path / "2.csv"), "--checkpoint", str(ck)])
    w = _read(tmp_path / "w.csv")[1]["v_score"]
    two = _read(tmp_path / "2.csv")[1]["v_score"]
    np.testing.assert_allclose(two, w[700:], atol=1e-6)
    cold = tmp_path / "cold.csv"
    main([str(second), "-o", str(cold)])
    assert _read(cold)[1]["v_score"][:30].max() == 0.0  # without the checkpoint it warms up again


def test_cli_dispatch_and_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    src = _write(tmp_path / "in.csv", ["timestamp", "v"], [[i, i % 7] for i in range(50)])
    assert cli_main(["score", str(src), "--no-progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "timestamp,score,kind,v_score" and len(out) == 51


def test_semicolon_files_are_read_and_a_wrong_delimiter_is_named(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]):
    x = _series(300)
    src = tmp_path / "eu.csv"
    src.write_text("timestamp;v;w\n" + "".join(f"{i};{v:.4f};{v:.4f}\n" for i, v in enumerate(x)))
    assert main([str(src), "-o", str(tmp_path / "o.csv")]) == 0
    head, cols, _ = _read(tmp_path / "o.csv")
    assert head[:4] == ["timestamp", "score", "kind", "v_score"] and len(cols["v_score"]) == 300
    assert main([str(src), "--delimiter", ",", "-o", str(tmp_path / "p.csv")]) == 2
    assert "no value column with delimiter ','" in capsys.readouterr().err


def test_onset_column_marks_the_rows_where_alarms_open(tmp_path: Path):
    x = _series(2000)
    rows = [[i, f"{v:.6f}"] for i, v in enumerate(x)]
    src = _write(tmp_path / "in.csv", ["timestamp", "v"], rows)
    s = tmp_path / "s.yaml"
    s.write_text("settle_s: 0\n")
    assert main([str(src), "-o", str(tmp_path / "o.csv"), "--onset", "--settings", str(s),
                 "--events", str(tmp_path / "e.csv")]) == 0
    head, cols, _ = _read(tmp_path / "o.csv")
    assert head[-1] == "onset"
    assert cols["onset"][1500] > 0.5  # the spike
    with open(tmp_path / "e.csv") as f:
        n_open = sum(1 for r in csv.DictReader(f) if r["phase"] == "open")
    assert int((cols["onset"] > 0).sum()) == n_open


def test_progress_advances_through_the_file(tmp_path: Path):
    from edge.score import CsvSource, InputProblems

    src = _write(tmp_path / "in.csv", ["timestamp", "v"], [[i, i % 7] for i in range(50_000)])
    size = src.stat().st_size
    with open(src, newline="") as f:
        s = CsvSource(f, timestamp_column=None, columns=None, time_unit="s", unit_column=None,
                      problems=InputProblems())
        seen = [s.fraction_done(size) for _ in s.chunks(rows=10_000)]
    assert seen == sorted(seen) and 0.15 < seen[0] < 0.25 and seen[-1] == 1.0


def test_progress_line_on_long_inputs():
    buf = io.StringIO()
    p = Progress(True, buf, min_interval_s=0.0)
    p.update(0.5, 1000)
    p.close(2000)
    text = buf.getvalue()
    assert "50.0%" in text and "100.0% 2,000 rows" in text and text.endswith("\n")
    quiet = io.StringIO()
    Progress(False, quiet, min_interval_s=0.0).update(0.5, 10)
    assert quiet.getvalue() == ""


@pytest.mark.skipif(not (CMAPSS / "train_FD001.txt.gz").exists(), reason="C-MAPSS not present")
def test_rul_option_on_run_to_failure_units(tmp_path: Path):
    sys.path.insert(0, str(ROOT))
    from edge.pdm.rul import RulEstimator
    from tools.fit_rul import CMAPSS_OPS, CMAPSS_SENSORS, FitSettings, cmapss_runs, fit, read_cmapss

    table = read_cmapss(CMAPSS / "train_FD001.txt.gz")
    runs, ops, sens = cmapss_runs(table)
    model = fit(runs, ops, sens, FitSettings(epochs=3, hidden=8))
    model.save(tmp_path / "rul.npz")
    names = ["unit", "cycle", *CMAPSS_OPS, *(f"sensor_{i}" for i in range(1, 22))]
    sub = table[table[:, 0] <= 2]
    src = _write(tmp_path / "cm.csv", names, [[int(r[0]), int(r[1]), *r[2:]] for r in sub])
    rc = main([str(src), "-o", str(tmp_path / "o.csv"), "--rul", str(tmp_path / "rul.npz"), "--unit-column", "unit",
               "--timestamp-column", "cycle", "--columns", *CMAPSS_OPS, *(f"sensor_{s}" for s in CMAPSS_SENSORS)])
    assert rc == 0
    head, cols, _ = _read(tmp_path / "o.csv")
    assert head[:2] == ["cycle", "unit"] and head[-4:] == ["health", "rul", "rul_low", "rul_high"]
    est = RulEstimator(model, 1, np.arange(model.n_inputs)[None, :])
    for u, x in zip((1, 2), runs[:2], strict=True):
        est.reset()
        r = est.run_rows(x)[1]
        got = cols["rul"][cols["unit"] == u]
        np.testing.assert_allclose(got, r, atol=1e-4)  # unit 2 starts fresh, like a repaired machine
    assert (cols["rul_low"] <= cols["rul"] + 1e-3).all() and (cols["rul_high"] >= cols["rul"] - 1e-3).all()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"junk")
    assert main([str(src), "--rul", str(bad), "--unit-column", "unit"]) == 2
