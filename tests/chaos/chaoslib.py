"""What every chaos test needs: run the dev plant, break things at seeded random moments, account.

The accounting rule the suite proves (issue 6): InfluxDB holds exactly the samples the edge read,
signal by signal, minus the drops the edge counted and reported. An edge run is told from the next
by sample time: a run killed at wall time ``T`` read only samples stamped before ``T`` (Modbus
samples are stamped at read time, OPC-UA samples by the server, and a restart takes seconds), and
every later run reads only samples stamped after it.

What an edge run read:

- a run that stopped cleanly wrote ``stats.json`` (``read_per_signal``), kept by
  :meth:`plantwire.pipeline.Pipeline.restart` as ``stats.run<N>.json``;
- a run killed with SIGKILL wrote nothing, so its metrics are scraped just before the kill.
  ``samples_read_total`` is counted in the same call that appends the batch to the write-ahead log
  (edge/app.py ``_flush``, once per ``batch_interval_ms`` at a wall-clock boundary), so a scrape taken
  mid-interval and followed at once by the kill is exact: every sample it counts is on disk, and the
  samples still in the frame buffer were never counted as read. That crash window (at most one
  batch interval of samples, in memory only) is the one loss a SIGKILL may cause, and it is not a
  "read" sample. The edge's run mark (edge/runmark.py) counts it, and the next run reports it as
  ``previous_run.buffer_samples`` and back-fills the OPC-UA part from history; the mark also holds
  the killed run's exact per-signal read and dropped counts (tests/chaos/test_disk_full.py uses them).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plantwire.configfile import load_plant
from plantwire.pipeline import Pipeline, health, scrape
from plantwire.plant import Protocol, expand

ROOT = Path(__file__).resolve().parents[2]
DEV = ROOT / "configs" / "dev"
#: Every chaos pipeline re-sends unacknowledged records after this (the default 60 s outlasts a test).
RESEND_TIMEOUT_S = 5.0


def make_pipeline(state: Path, **edge_overrides: Any) -> Pipeline:
    """The dev plant (1,000 signals, 1 Hz) with a short re-send timeout and the given edge settings."""
    spool = {"resend_timeout_s": RESEND_TIMEOUT_S, **edge_overrides.pop("spool", {})}
    return Pipeline(DEV, state, edge_overrides={"spool": spool, **edge_overrides})


def wait_until(pred: Callable[[], bool], timeout_s: float, what: str, pipe: Pipeline | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            extra = ""
            if pipe is not None:
                extra = f"\nedge: {_safe(lambda: health(pipe.edge_metrics_port))}\nprogress: {pipe.progress()}"
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}{extra}")
        time.sleep(0.25)


def _safe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except OSError as exc:
        return f"({exc})"


def edge_up(pipe: Pipeline, *, mqtt: bool = True) -> bool:
    """The edge serves health, every source is connected and (if asked) so is the broker."""
    try:
        h = health(pipe.edge_metrics_port)
    except OSError:
        return False
    ok = bool(h.get("sources")) and h.get("sources_connected") == h.get("sources")
    return ok and (bool(h.get("mqtt_connected")) or not mqtt)


def edge_metric(pipe: Pipeline, name: str) -> float:
    return scrape(pipe.edge_metrics_port).get(name, 0.0)


@dataclass
class Run:
    """One edge process: when it ended, and what it read (per signal if it stopped cleanly)."""

    ended_ns: int
    killed: bool
    samples_read: int
    dropped_samples: int
    read_per_signal: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def kill_edge_between_flushes(pipe: Pipeline, batch_interval_s: float = 1.0) -> Run:
    """SIGKILL the edge mid-way between two flushes, right after reading its counters (see module doc)."""
    for _ in range(20):
        phase = time.time() % batch_interval_s
        if not 0.35 * batch_interval_s <= phase <= 0.6 * batch_interval_s:
            time.sleep((0.45 * batch_interval_s - phase) % batch_interval_s)
            continue
        m = scrape(pipe.edge_metrics_port)
        pipe.kill("edge")
        ended_ns = time.time_ns()
        if (ended_ns / 1e9) % batch_interval_s < 0.85 * batch_interval_s:  # no flush can have run in between
            return Run(
                ended_ns=ended_ns,
                killed=True,
                samples_read=int(m.get("plantwire_edge_samples_read_total", m.get("samples_read_total", 0))),
                dropped_samples=int(_dropped(m)),
                metrics=m,
            )
        raise AssertionError("the kill landed too close to a flush; the read count would be inexact")
    raise AssertionError("could not find a moment between two flushes")


def _dropped(m: dict[str, float]) -> float:
    return sum(v for k, v in m.items() if k.endswith("spool_dropped_samples_total"))


def halt_edge(pipe: Pipeline) -> Run:
    """Stop the edge cleanly (SIGTERM) and read its stats.json."""
    code = pipe.halt("edge")
    assert code == 0, f"edge exited with {code}"
    stats = pipe.edge_stats()
    assert stats, "a cleanly stopped edge must write stats.json"
    return Run(
        ended_ns=time.time_ns(),
        killed=False,
        samples_read=int(stats["samples_read"]),
        dropped_samples=int(stats["spool"].get("dropped_samples", 0)),
        read_per_signal={k: int(v) for k, v in stats["read_per_signal"].items()},
        metrics=stats,
    )


def restart_edge(pipe: Pipeline, *, mqtt: bool = True, timeout_s: float = 90.0) -> None:
    pipe.restart("edge")
    wait_until(lambda: edge_up(pipe, mqtt=mqtt), timeout_s, "the restarted edge", pipe)


def wait_cloud_acked_everything(pipe: Pipeline, timeout_s: float = 90.0, max_age_s: float = 3.0) -> None:
    """The back-log is gone: nothing waits for replay and the oldest batch the cloud has not acked (in
    InfluxDB) is younger than ``max_age_s`` (live batches are always a moment away from their ack)."""

    def done() -> bool:
        try:
            m = scrape(pipe.edge_metrics_port)
        except OSError:
            return False
        return (
            m.get("plantwire_edge_mqtt_connected") == 1.0
            and m.get("plantwire_edge_spool_backlog_records", 1.0) == 0.0
            and m.get("plantwire_edge_spool_oldest_unacked_age_s", 1e9) < max_age_s
        )

    wait_until(done, timeout_s, "the cloud to acknowledge the back-log", pipe)


@dataclass
class Verdict:
    """Per edge run: samples read, stored in its time window, and counted as dropped."""

    runs: list[tuple[Run, int]]  # (run, stored in its time window)
    mismatched: dict[str, tuple[int, int]]  # clean runs: signal -> (read, stored)
    reread: list[int] = field(default_factory=list)  # per run: OPC-UA initial values stamped before it began

    def report(self) -> str:
        rows = [
            f"run {i} ({'killed' if r.killed else 'stopped'}): read {r.samples_read}, stored {s}, "
            f"dropped (counted) {r.dropped_samples}"
            for i, (r, s) in enumerate(self.runs)
        ]
        shown = dict(list(self.mismatched.items())[:5])
        rows.append(f"OPC-UA initial values stamped before the restart, per run: {self.reread}")
        return "\n".join([*rows, f"{len(self.mismatched)} signals differ: {shown}"])

    @property
    def exact(self) -> bool:
        """Every run stored what it read minus its counted drops, except that a run may hold up to as many
        extra points as the next run has OPC-UA initial values stamped before that next run began."""
        nxt = [*self.reread[1:], 0]
        return not self.mismatched and all(
            0 <= stored - (run.samples_read - run.dropped_samples - reread) <= extra
            for (run, stored), reread, extra in zip(self.runs, self.reread, nxt, strict=True)
        )


def opcua_signals(pipe: Pipeline) -> set[str]:
    table = expand(load_plant(pipe.state_dir / "config" / "plant.yaml"))
    opc = {d.index for d in table.devices if d.protocol == Protocol.OPCUA}
    return {sid for sid, dev in zip(table.ids, table.device.tolist(), strict=True) if dev in opc}


def account(pipe: Pipeline, runs: list[Run], started_ns: int) -> Verdict:
    """InfluxDB counts per edge run (by sample time) against what that run read.

    One sample per OPC-UA signal may fall on the other side of the line: a restarted edge subscribes
    afresh, and OPC-UA delivers each monitored item's current value first, stamped with the time the
    server last changed it, which can be before the restart. Either the previous run had read it (same
    series and timestamp: one point in InfluxDB, a harmless duplicate) or it had not (the value changed
    just before the kill and was still in the killed edge's memory: the new run recovers it, and its
    point lands in the previous run's window). So a run after a restart may store one point fewer than
    it read for an OPC-UA signal (never for Modbus, never more), and the run before it may store up to
    that many more than it read, never fewer.
    """
    out: list[tuple[Run, int]] = []
    mismatched: dict[str, tuple[int, int]] = {}
    opc = opcua_signals(pipe)
    reread: list[int] = []
    since = started_ns
    for i, run in enumerate(runs):
        stored = pipe.influx_counts(since, run.ended_ns)
        out.append((run, sum(stored.values())))
        reread.append(0)
        if not run.killed:
            for sid, n in run.read_per_signal.items():
                got = stored.get(sid, 0)
                if i and sid in opc and got == n - 1:
                    reread[-1] += 1
                elif got != n:
                    mismatched[sid] = (n, got)
            mismatched.update({sid: (0, n) for sid, n in stored.items() if sid not in run.read_per_signal})
        since = run.ended_ns
    late = pipe.influx_counts(since, None)
    if late:
        mismatched.update({sid: (0, n) for sid, n in late.items()})
    return Verdict(out, mismatched, reread)


def sleep_random(rng: random.Random, lo_s: float, hi_s: float) -> None:
    """A seeded random moment, so a failing run can be replayed with the same seed."""
    time.sleep(rng.uniform(lo_s, hi_s))


def dump(pipe: Pipeline) -> str:
    return json.dumps({"edge": _safe(lambda: health(pipe.edge_metrics_port)), "progress": pipe.progress()})[:3000]
