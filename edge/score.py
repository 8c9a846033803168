"""``plantwire score INPUT.csv``: run the edge's detector stack over a recorded CSV and write per-row scores.

Why this exists: it is how the analytics are evaluated on public labelled data and how an engineer
tunes thresholds on the plant's own history before deploying them. It therefore runs exactly the
edge's code -- ``edge.detectors.stack.DetectorStack`` with an ``AnalyticsSettings`` -- and nothing of
its own: each value column is a signal, all value columns together are one machine, and each CSV row
is one tick (one frame, as a batch interval carries one sample per signal on the edge). With a single
value column there is no machine stage, so rows are fed in large chunks; the scores are identical
because the per-signal kernels are sequential.

Input: a header row, a timestamp column (``--timestamp-column``, default ``timestamp`` or else the
first column; ISO-8601 text, or numbers in ``--time-unit``) and one or more numeric value columns
(``--columns`` picks some). Bad input never aborts the run: an unparseable or empty value is scored
as a bad-quality sample (a gap), a row whose timestamp cannot be read is skipped, a row with the
wrong number of fields is skipped; each is counted and the first few are reported by line and column
on stderr. Timestamps going backwards are counted too, with their line (the rate detector sees them as a
gap). The delimiter is read from the header line (the most frequent of ``,``, ``;`` and tab: European
exports use ``;``) unless ``--delimiter`` says it.

Output (``-o``, default stdout): the timestamp as given, ``score`` (the row's largest score, the
figure to threshold: NAB's ``anomaly_score``), ``kind`` (its anomaly kind), per column
``<col>_score``, then ``machine_score`` when there is a machine stage, and with ``--rul MODEL.npz``
``health``, ``rul``, ``rul_low``, ``rul_high`` (see ``edge.pdm.rul``) for run-to-failure data. With
``--machine-model MODEL.npz`` (``plantwire fit-machine``) the columns are scored as one machine against
that fitted baseline, row by row; without it the machine stage fits its own from the file's first
``machine.fit_after_s`` (nothing scored before). With
``--unit-column`` every change of that column's value starts a new run (state reset, as after a
repair). ``--onset`` adds an ``onset`` column: the peak score on rows where a signal alarm opens (what the
edge's events lane would carry), 0 elsewhere. ``--events FILE`` writes the alarm events; ``--checkpoint FILE``
resumes from and saves the detector state, exactly as the edge does across restarts. A progress line goes to
stderr on long inputs (``--no-progress`` silences it).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from edge.detectors.checkpoint import CheckpointError
from edge.detectors.events import EVENT_DTYPE, Phase, Scope
from edge.detectors.settings import AnalyticsSettings
from edge.detectors.stack import DetectorStack
from edge.kernels.kinds import Kind
from edge.models import machine as machine_models
from edge.models.machine import MachineModel
from plantwire.configfile import ConfigError, read_yaml, validate

CHUNK_ROWS = 8192
DELIMITERS = (",", ";", "\t")
MAX_REPORTED = 5
TIME_UNITS_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "min": 60_000_000_000,
                 "h": 3_600_000_000_000}
KIND_NAMES = [k.name.lower() for k in Kind]


class ScoreError(Exception):
    """Input the command cannot use at all (no header, no value column, unknown column names)."""


@dataclass
class InputProblems:
    """Counts of bad input, with the first few places, so nothing is dropped silently."""

    bad_values: int = 0
    bad_timestamps: int = 0
    bad_rows: int = 0
    backwards: int = 0
    places: list[str] = field(default_factory=list)

    def note(self, what: str) -> None:
        if len(self.places) < MAX_REPORTED:
            self.places.append(what)

    def report(self, source: str) -> str:
        total = self.bad_values + self.bad_timestamps + self.bad_rows + self.backwards
        if not total:
            return ""
        head = (f"{source}: {self.bad_values} unreadable values scored as gaps, {self.bad_timestamps} rows with an "
                f"unreadable timestamp skipped, {self.bad_rows} rows with the wrong number of fields skipped, "
                f"{self.backwards} timestamps going backwards")
        return "\n".join([head, *(f"  {source}:{p}" for p in self.places)])


@dataclass(frozen=True, slots=True)
class Chunk:
    """Parsed rows: text timestamps (echoed to the output), ns timestamps, values (rows x columns), quality."""

    ts_text: list[str]
    lines: list[int]  # line number of each row in the file
    ts_ns: np.ndarray
    values: np.ndarray
    quality: np.ndarray
    units: list[str] | None


def sniff_delimiter(header_line: str) -> str:
    """The most frequent of ``DELIMITERS`` in the header line (``,`` when none occurs)."""
    counts = [header_line.count(d) for d in DELIMITERS]
    return DELIMITERS[counts.index(max(counts))] if max(counts) else ","


class CsvSource:
    """Reads a CSV in chunks of parsed numpy columns; reports the fraction of characters consumed.

    Progress is counted from the lines handed to ``csv.reader`` (``f.tell()`` is not allowed while a text
    file is being iterated), so it is exact in characters and close to bytes for ASCII files.
    """

    def __init__(self, f: TextIO, *, timestamp_column: str | None, columns: Sequence[str] | None,
                 time_unit: str, unit_column: str | None, problems: InputProblems,
                 delimiter: str | None = None) -> None:
        self._f = f
        self.chars_read = 0
        first = f.readline()
        self.chars_read += len(first)
        if not first.strip():
            raise ScoreError("empty file: expected a header row")
        self.delimiter = delimiter or sniff_delimiter(first)
        self._reader = csv.reader(self._counted(f), delimiter=self.delimiter)
        try:
            header = [h.strip() for h in next(csv.reader([first], delimiter=self.delimiter))]
        except StopIteration:
            raise ScoreError("empty file: expected a header row") from None
        self.header = header
        if timestamp_column is None:
            timestamp_column = "timestamp" if "timestamp" in header else header[0]
        if timestamp_column not in header:
            raise ScoreError(f"no timestamp column {timestamp_column!r} in the header {header}")
        self.ts_col = header.index(timestamp_column)
        self.unit_col = None
        if unit_column is not None:
            if unit_column not in header:
                raise ScoreError(f"no unit column {unit_column!r} in the header {header}")
            self.unit_col = header.index(unit_column)
        skip = {self.ts_col, self.unit_col}
        if columns:
            missing = [c for c in columns if c not in header]
            if missing:
                raise ScoreError(f"columns {missing} are not in the header {header}")
            self.value_cols = [header.index(c) for c in columns]
        else:
            self.value_cols = [i for i, h in enumerate(header) if i not in skip]
        if not self.value_cols:
            raise ScoreError(f"no value column with delimiter {self.delimiter!r} (header read as {header}): need a "
                             "timestamp column and at least one value column; see --delimiter")
        self.names = [header[i] for i in self.value_cols]
        self.ns_per_unit = TIME_UNITS_NS[time_unit]
        self.problems = problems
        self.line = 1

    def _counted(self, f: TextIO) -> Iterator[str]:
        for line in f:
            self.chars_read += len(line)
            yield line

    def chunks(self, rows: int = CHUNK_ROWS) -> Iterator[Chunk]:
        width = len(self.header)
        buf: list[list[str]] = []
        lines: list[int] = []
        for rec in self._reader:
            self.line += 1
            if not rec or (len(rec) == 1 and not rec[0].strip()):
                continue
            if len(rec) != width:
                self.problems.bad_rows += 1
                self.problems.note(f"{self.line}: {len(rec)} fields, header has {width}")
                continue
            buf.append(rec)
            lines.append(self.line)
            if len(buf) >= rows:
                yield self._parse(buf, lines)
                buf, lines = [], []
        if buf:
            yield self._parse(buf, lines)

    def _timestamps(self, text: list[str], lines: list[int]) -> np.ndarray:
        try:
            return np.array(text, dtype=np.float64).astype(np.int64) * self.ns_per_unit
        except ValueError:
            pass
        try:
            return np.array(text, dtype="datetime64[ns]").astype(np.int64)
        except ValueError:
            pass
        out = np.empty(len(text), dtype=np.int64)
        for i, t in enumerate(text):
            try:
                out[i] = int(float(t) * self.ns_per_unit)
            except ValueError:
                try:
                    out[i] = np.datetime64(t.strip(), "ns").astype(np.int64)
                except ValueError:
                    out[i] = np.iinfo(np.int64).min
                    self.problems.bad_timestamps += 1
                    self.problems.note(f"{lines[i]}: timestamp {t!r} is neither ISO-8601 nor a number")
        return out

    def _parse(self, buf: list[list[str]], lines: list[int]) -> Chunk:
        ts_text = [r[self.ts_col] for r in buf]
        ts = self._timestamps(ts_text, lines)
        keep = ts != np.iinfo(np.int64).min
        if not keep.all():
            idx = np.flatnonzero(keep)
            buf = [buf[i] for i in idx]
            lines = [lines[i] for i in idx]
            ts_text = [ts_text[i] for i in idx]
            ts = ts[keep]
        n, m = len(buf), len(self.value_cols)
        values = np.empty((n, m), dtype=np.float64)
        quality = np.zeros((n, m), dtype=np.uint8)
        for j, c in enumerate(self.value_cols):
            col = [r[c] for r in buf]
            try:
                values[:, j] = np.array(col, dtype=np.float64)
            except ValueError:
                for i, v in enumerate(col):
                    try:
                        values[i, j] = float(v)
                    except ValueError:
                        values[i, j] = np.nan
                        quality[i, j] = 2
                        self.problems.bad_values += 1
                        self.problems.note(f"{lines[i]}: column {self.header[c]!r}: {v!r} is not a number")
        quality[~np.isfinite(values)] = 2
        units = [r[self.unit_col] for r in buf] if self.unit_col is not None else None
        return Chunk(ts_text, lines, ts, values, quality, units)

    def fraction_done(self, size: int) -> float:
        return min(self.chars_read / size, 1.0) if size else 1.0


class Progress:
    """A single self-overwriting stderr line, at most a few updates per second, only on long inputs."""

    def __init__(self, enabled: bool, out: TextIO = sys.stderr, min_interval_s: float = 0.5) -> None:
        self.enabled = enabled
        self.out = out
        self.min_interval_s = min_interval_s
        self.t0 = time.monotonic()
        self.last = self.t0
        self.shown = False

    def update(self, frac: float, rows: int) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < self.min_interval_s:
            return
        self.last = now
        self.shown = True
        el = now - self.t0
        eta = el * (1 - frac) / frac if frac > 0 else 0.0
        bar = "#" * int(30 * frac)
        self.out.write(f"\rscore [{bar:<30}] {100 * frac:5.1f}% {rows:,} rows {el:5.1f}s eta {eta:4.0f}s")
        self.out.flush()

    def close(self, rows: int) -> None:
        if self.shown:
            self.out.write(f"\rscore [{'#' * 30}] 100.0% {rows:,} rows {time.monotonic() - self.t0:5.1f}s\n")
            self.out.flush()


class TableScorer:
    """Feeds rows of a table (columns = signals of one machine) through a ``DetectorStack``, row = tick.

    The public helper behind the CLI and the benchmarks: ``score_rows(ts_ns, values, quality)`` returns
    per-row arrays, in the same order, of the row score, its kind, the per-column scores and the machine
    score; events go to ``self.events`` (a list of structured arrays) and ``self.events_dropped``.
    """

    def __init__(self, n_columns: int, settings: AnalyticsSettings | None = None,
                 machine_model: MachineModel | None = None) -> None:
        self.n = n_columns
        s = settings or AnalyticsSettings()
        # A row is a machine tick here, whatever the file's sampling period; a fit (without a model: from
        # the first ``fit_after_s`` of the file) is waited for, so offline scores are reproducible.
        s = s.model_copy(update={"machine": s.machine.model_copy(update={"period_s": 1e-9})})
        self.stack = DetectorStack(n_columns, np.zeros(n_columns, dtype=np.int64), s,
                                   machine_models=None if machine_model is None else [machine_model])
        # A machine of one column has no co-variation to monitor (the machine stage skips it); without a
        # machine stage chunks of rows give identical scores, much faster.
        self.per_row_frames = len(self.stack.m_sig) > 1
        self.events: list[np.ndarray] = []
        self.events_dropped = 0
        self._sig_row = np.arange(n_columns, dtype=np.uint32)

    def score_rows(self, ts_ns: np.ndarray, values: np.ndarray,
                   quality: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rows, m = values.shape
        col_score = np.zeros((rows, m), dtype=np.float64)
        col_kind = np.zeros((rows, m), dtype=np.uint8)
        mach = np.zeros(rows, dtype=np.float64)
        if self.per_row_frames:
            ts_row = np.empty(m, dtype=np.int64)
            for i in range(rows):
                ts_row[:] = ts_ns[i]
                r = self.stack.process(self._sig_row, values[i], quality[i], ts_row)
                if self.stack.machine_stage.recording:
                    self.stack.machine_stage.wait_fit()
                col_score[i] = r.score
                col_kind[i] = r.kind
                if r.machine_score.shape[0]:
                    mach[i] = r.machine_score[0]
                self._keep_events(r.events, r.events_dropped)
        else:
            sig = np.tile(self._sig_row, rows)
            r = self.stack.process(sig, values.reshape(-1), quality.reshape(-1), np.repeat(ts_ns, m))
            col_score[:] = r.score.reshape(rows, m)
            col_kind[:] = r.kind.reshape(rows, m)
            self._keep_events(r.events, r.events_dropped)
        best = np.argmax(col_score, axis=1)
        row_score = col_score[np.arange(rows), best]
        row_kind = col_kind[np.arange(rows), best]
        use_m = mach > row_score
        row_score = np.where(use_m, mach, row_score)
        row_kind = np.where(use_m, np.uint8(Kind.MACHINE), row_kind)
        return row_score, row_kind, col_score, mach

    def _keep_events(self, events: np.ndarray, dropped: int) -> None:
        if events.shape[0]:
            self.events.append(events.copy())
        self.events_dropped += dropped


def load_settings(path: Path | None) -> AnalyticsSettings:
    """``AnalyticsSettings`` from a YAML file (the same block as the edge config's), or the defaults."""
    if path is None:
        return AnalyticsSettings()
    return validate(AnalyticsSettings, read_yaml(path), str(path))


def _fmt(a: np.ndarray, spec: str = ".6g") -> list[str]:
    return [format(v, spec) for v in a.tolist()]


def _write_events(path: Path, events: list[np.ndarray], names: list[str]) -> int:
    ev = np.concatenate(events) if events else np.empty(0, dtype=EVENT_DTYPE)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["phase", "scope", "entity", "kind", "ts_start_ns", "ts_end_ns", "peak", "contributors"])
        for e in ev:
            scope = Scope(int(e["scope"]))
            entity = names[int(e["entity"])] if scope == Scope.SIGNAL else "machine"
            top = ";".join(names[t] for t in e["top"].tolist() if 0 <= t < len(names))  # root-cause hint
            w.writerow([Phase(int(e["phase"])).name.lower(), scope.name.lower(), entity, KIND_NAMES[int(e["kind"])],
                        int(e["ts_start"]), int(e["ts_end"]), f"{float(e['peak']):.4f}", top])
    return int(ev.shape[0])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="plantwire score", description=__doc__.split("\n\n")[0])
    p.add_argument("input", type=Path, help="CSV with a header, a timestamp column and value columns")
    p.add_argument("-o", "--output", type=Path, help="per-row scores CSV (default: stdout)")
    p.add_argument("--settings", type=Path, help="YAML with the edge's analytics settings (AnalyticsSettings)")
    p.add_argument("--timestamp-column", help="name of the timestamp column (default: timestamp, else the first)")
    p.add_argument("--columns", nargs="+", help="value columns to score (default: all but timestamp/unit)")
    p.add_argument("--time-unit", choices=sorted(TIME_UNITS_NS), default="s",
                   help="unit of numeric timestamps (default s; a cycle count can be read as s)")
    p.add_argument("--events", type=Path, help="write the alarm events (open/close) to this CSV")
    p.add_argument("--checkpoint", type=Path, help="resume from this detector state if it fits, save it at the end")
    p.add_argument("--machine-model", type=Path, metavar="MODEL.npz",
                   help="score the columns as one machine against this fitted model (plantwire fit-machine); "
                        "its signals are the value columns unless --columns says otherwise")
    p.add_argument("--rul", type=Path, metavar="MODEL.npz", help="also estimate health and remaining useful life")
    p.add_argument("--unit-column", help="run-to-failure data: a new value in this column starts a new run")
    p.add_argument("--delimiter", help="field delimiter (default: read from the header line: ',', ';' or tab)")
    p.add_argument("--onset", action="store_true",
                   help="add an onset column: the peak score on rows where a signal alarm opens, else 0")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``plantwire score``; returns 0, or 2 when the input or settings cannot be used."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    try:
        settings = load_settings(args.settings)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    try:
        return _run(args, settings)
    except ScoreError as exc:
        print(f"plantwire score: {args.input}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"plantwire score: {exc}", file=sys.stderr)
        return 2


def _machine_model(path: Path | None) -> MachineModel | None:
    """The fitted machine model of ``--machine-model`` (None without the option)."""
    if path is None:
        return None
    try:
        return machine_models.load(path)
    except machine_models.MachineModelError as exc:
        raise ScoreError(str(exc)) from exc


def _run(args: argparse.Namespace, settings: AnalyticsSettings) -> int:
    from edge.pdm.rul import RulEstimator, RulModel, RulModelError  # lazy: only needed with --rul

    problems = InputProblems()
    size = os.path.getsize(args.input)
    machine_model = _machine_model(args.machine_model)
    columns = args.columns or (list(machine_model.signals) if machine_model is not None else None)
    with open(args.input, newline="") as fin:
        src = CsvSource(fin, timestamp_column=args.timestamp_column, columns=columns, time_unit=args.time_unit,
                        unit_column=args.unit_column, problems=problems, delimiter=args.delimiter)
        if machine_model is not None and machine_model.d != len(src.names):
            raise ScoreError(f"--machine-model has {machine_model.d} signals, {len(src.names)} columns are scored")
        scorer = TableScorer(len(src.names), settings, machine_model)
        if args.checkpoint is not None and args.checkpoint.exists():
            try:
                scorer.stack.restore(args.checkpoint)
            except CheckpointError as exc:
                print(f"plantwire score: starting cold: {exc}", file=sys.stderr)
        rul = None
        if args.rul is not None:
            try:
                model = RulModel.load(args.rul)
                rul = RulEstimator(model, 1, np.array([model.input_index(src.names)], dtype=np.int64))
            except RulModelError as exc:
                raise ScoreError(str(exc)) from exc
        out = open(args.output, "w", newline="") if args.output else sys.stdout
        try:
            w = csv.writer(out)
            head = [src.header[src.ts_col]]
            if src.unit_col is not None:
                head.append(src.header[src.unit_col])
            head += ["score", "kind", *(f"{c}_score" for c in src.names)]
            if scorer.per_row_frames:
                head.append("machine_score")
            if rul is not None:
                head += ["health", "rul", "rul_low", "rul_high"]
            if args.onset:
                head.append("onset")
            w.writerow(head)
            progress = Progress(not args.no_progress and size > 4_000_000)
            rows = 0
            last_ts = np.iinfo(np.int64).min
            last_unit: str | None = None
            for ch in src.chunks():
                for lo, hi, new_run in _runs(ch.units, last_unit):
                    if new_run:
                        last_ts = np.iinfo(np.int64).min
                        if rows + lo > 0:  # a repaired or replaced machine: learn it afresh
                            scorer.stack.reset()
                            if rul is not None:
                                rul.reset()
                    seg = ch.ts_ns[lo:hi]
                    if seg.shape[0]:
                        back = np.flatnonzero(seg < np.concatenate([[last_ts], seg[:-1]]))
                        problems.backwards += int(back.size)
                        for i in back[:MAX_REPORTED].tolist():
                            problems.note(f"{ch.lines[lo + i]}: timestamp {ch.ts_text[lo + i]!r} goes backwards")
                        last_ts = int(seg[-1])
                    _score_rows(w, scorer, rul, ch, lo, hi, src.unit_col is not None, args.onset)
                if ch.units:
                    last_unit = ch.units[-1]
                rows += len(ch.ts_text)
                progress.update(src.fraction_done(size), rows)
            progress.close(rows)
        finally:
            if out is not sys.stdout:
                out.close()
            else:
                out.flush()
    if args.checkpoint is not None:
        scorer.stack.save(args.checkpoint)
    if args.events is not None:
        n_ev = _write_events(args.events, scorer.events, src.names)
        print(f"plantwire score: {n_ev} events written to {args.events}", file=sys.stderr)
    if scorer.events_dropped:
        print(f"plantwire score: {scorer.events_dropped} events over max_events per frame were dropped",
              file=sys.stderr)
    rep = problems.report(str(args.input))
    if rep:
        print(rep, file=sys.stderr)
    return 0


def _runs(units: list[str] | None, last_unit: str | None) -> Iterator[tuple[int, int, bool]]:
    """Split a chunk where the unit column changes: yields (start, end, starts_a_new_run)."""
    if units is None:
        yield 0, 1 << 62, False
        return
    starts = [i for i, u in enumerate(units) if u != (units[i - 1] if i else last_unit)]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
        new = [False] + [True] * (len(starts) - 1)
    else:
        new = [True] * len(starts)
    bounds = [*starts, len(units)]
    for k in range(len(starts)):
        yield bounds[k], bounds[k + 1], new[k]


def onsets(ts_ns: np.ndarray, events: list[np.ndarray]) -> np.ndarray:
    """Per row: the peak score of signal alarms that OPEN with their first sample on that row's timestamp, else 0.

    An alarm's start is its first sample at or above the threshold (with ``on_count`` 1, the row that opens it).
    """
    out = np.zeros(ts_ns.shape[0])
    for ev in events:
        ev = ev[(ev["phase"] == Phase.OPEN) & (ev["scope"] == Scope.SIGNAL)]
        if ev.shape[0]:
            hit = np.isin(ts_ns, ev["ts_start"])
            for i in np.flatnonzero(hit).tolist():
                out[i] = max(out[i], float(ev["peak"][ev["ts_start"] == ts_ns[i]].max()))
    return out


def _score_rows(w: csv.writer, scorer: TableScorer, rul: object | None, ch: Chunk, lo: int, hi: int,
                with_unit: bool, with_onset: bool = False) -> None:
    hi = min(hi, len(ch.ts_text))
    if hi <= lo:
        return
    ts, vals, q = ch.ts_ns[lo:hi], ch.values[lo:hi], ch.quality[lo:hi]
    n_ev = len(scorer.events)
    row_score, row_kind, col_score, mach = scorer.score_rows(ts, vals, q)
    cols: list[list[str]] = [ch.ts_text[lo:hi]]
    if with_unit and ch.units is not None:
        cols.append(ch.units[lo:hi])
    cols += [_fmt(row_score), [KIND_NAMES[k] for k in row_kind.tolist()]]
    cols += [_fmt(col_score[:, j]) for j in range(col_score.shape[1])]
    if scorer.per_row_frames:
        cols.append(_fmt(mach))
    if rul is not None:
        hidx, r, rlo, rhi = rul.run_rows(vals)  # type: ignore[attr-defined]
        cols += [_fmt(hidx, ".5f"), _fmt(r, ".4f"), _fmt(rlo, ".4f"), _fmt(rhi, ".4f")]
    if with_onset:
        cols.append(_fmt(onsets(ts, scorer.events[n_ev:]), ".4g"))
    w.writerows(zip(*cols, strict=True))
