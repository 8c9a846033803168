"""The edge's flush runs off the event loop: Modbus polls keep their ticks while a frame is judged.

A slow frame handler (the detectors' ``process`` made to take 0.4 s, sleeping as a ``nogil`` kernel would,
so the GIL is free) on a real pymodbus server at 10 Hz: polls must complete *while* the flush runs. On the
event loop (as before edge/judge.py) not one can. A frame's batches reach the write-ahead log while it is
still being scored (encoded first, handed off early), not after the whole job. And nothing the slow flushes
held is lost or reordered: every sample of every poll is in a batch, and the batches reach the write-ahead
log in sequence order.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edge.app as app_mod
from edge.app import EdgeGateway
from edge.config import load_edge
from plantwire.plant import expand
from plantwire.services import Mosquitto
from tests.test_modbus_source import MIXED_TEMPLATE, device_image, free_port, start_server

pytestmark = pytest.mark.integration

SLOW_S = 0.4  # one frame's judgement; four 100 ms ticks pass meanwhile


def _write_config(tmp_path: Path, modbus_port: int, mqtt_port: int | None = None) -> Path:
    plant = {
        "site": "test",
        "templates": {"mixed": MIXED_TEMPLATE},
        "devices": [{"name": "plc0", "protocol": "modbus", "port": modbus_port, "unit_id": 1}],
        "machines": [{"name": "m{i}", "template": "mixed", "count": 2, "device": "plc0"}],
    }
    (tmp_path / "plant.yaml").write_text(json.dumps(plant))
    edge = {
        "kind": "edge", "gateway_id": "gw-flush", "plant": "plant.yaml", "state_dir": str(tmp_path / "state"),
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port or free_port()},
        "publish": {"batch_interval_ms": 200, "flush_phase_ms": 50},
        "modbus": {"period_ms": 100, "timeout_s": 0.5, "max_gap": 4},
        "metrics": {"port": 0},
    }
    path = tmp_path / "edge.yaml"
    path.write_text(json.dumps(edge))
    return path


def test_polls_keep_their_ticks_while_a_slow_flush_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        mosquitto: Mosquitto) -> None:
    monkeypatch.setattr(app_mod, "SHUTDOWN_DRAIN_TIMEOUT_S", 0.1)  # no cloud here: no acks to wait for
    port = free_port()
    cfg, plant = load_edge(_write_config(tmp_path, port, mosquitto.port))
    table = expand(plant)
    polls_during: list[int] = []
    handed_during: list[int] = []  # batches handed to the log while a frame was being scored
    submitted: list[int] = []

    async def main() -> None:
        server = await start_server(port, 1, device_image(table, 0))
        gw = EdgeGateway(cfg, plant)
        real_process = gw.analytics.process
        real_submit = gw.forwarder.submit

        def slow_process(*args: Any) -> Any:
            st = gw.source_stats["plc0"]
            before = st.polls
            time.sleep(SLOW_S)
            polls_during.append(st.polls - before)
            job = gw._inflight
            if len(args[0]) and job is not None:  # a frame with samples (the first job may hold none)
                handed_during.append(len(submitted) - job.first_seq)  # this job's batches logged so far
            return real_process(*args)

        def record_submit(payload: bytes, seq: int, epoch: int, n: int) -> None:
            submitted.append(seq)
            real_submit(payload, seq, epoch, n)

        gw.analytics.process = slow_process  # type: ignore[method-assign]
        gw.forwarder.submit = record_submit  # type: ignore[method-assign]
        stop = asyncio.Event()
        task = asyncio.create_task(gw.run(stop))
        deadline = time.monotonic() + 60.0
        try:
            while len(polls_during) < 2 and time.monotonic() < deadline and not task.done():
                await asyncio.sleep(0.05)
        finally:
            gw.analytics.process = real_process  # type: ignore[method-assign]
            stop.set()
            await task
            await server.shutdown()
        assert len(polls_during) >= 2, "two slow flushes within 60 s"
        # On the event loop a flush holds every poll: none completes during it. Off the loop ~4 do; 2 leaves room
        # for a loaded box.
        assert min(polls_during[:2]) >= 2, polls_during
        # The frame being scored was encoded first and its batches handed off meanwhile (edge/judge.py): at the
        # job's end they would have waited the whole 0.4 s.
        assert handed_during and min(handed_during) >= 1, handed_during
        st = gw.source_stats["plc0"]
        n_signals = len(table.signals_of(0))
        assert int(gw.read_count.sum()) == st.polls * n_signals  # every sample of every poll is in a batch
        assert submitted == list(range(gw.seq)) and gw.seq >= 2  # logged in sequence order, none skipped
        stats = json.loads((tmp_path / "state" / "stats.json").read_text())
        assert stats["samples_read"] == st.polls * n_signals

    asyncio.run(main())


def test_frames_held_over_a_full_buffer_keep_their_order(tmp_path: Path) -> None:
    """A full frame buffer never blocks the poll that fills it: its frame waits for the next job, in order;
    beyond one more buffer's worth the loop catches up inline (bounded memory), still in order."""
    cfg, plant = load_edge(_write_config(tmp_path, free_port()))
    cfg = cfg.model_copy(update={"publish": cfg.publish.model_copy(update={"buffer_samples": 1000})})
    gw = EdgeGateway(cfg, plant)
    submitted: list[tuple[int, np.ndarray]] = []
    from plantwire import wire

    def record_submit(payload: bytes, seq: int, epoch: int, n: int) -> None:
        submitted.append((seq, wire.decode_batch(payload).ts_ns))

    gw.forwarder.submit = record_submit  # type: ignore[method-assign]
    sig = table_signals = gw.plant_table.signals_of(0).astype(np.uint32)
    try:
        ts = 1_000_000_000
        for _ in range(40):  # 40 polls of 28 signals: 1,120 samples, one buffer and a bit
            ts += 100_000_000
            gw._on_samples(ts, sig, np.ones(len(sig)), 0)
        assert gw.buffer_overflows == 1 and gw.inline_flushes == 0 and not submitted  # held, not flushed
        for _ in range(40):  # over one more buffer's worth: caught up inline
            ts += 100_000_000
            gw._on_samples(ts, sig, np.ones(len(sig)), 0)
        assert gw.inline_flushes == 1 and submitted
        gw._flush()
        seqs = [s for s, _ in submitted]
        assert seqs == list(range(len(seqs)))
        all_ts = np.concatenate([t for _, t in submitted])
        assert (np.diff(all_ts) >= 0).all() and len(all_ts) == 80 * len(table_signals)
        assert int(gw.read_count.sum()) == 80 * len(table_signals)
    finally:
        gw.judge.close()
        gw.spool.close()
        gw.mark.close(stopped=True)


def test_a_poll_that_overran_polls_the_latest_tick_late_and_counts_the_ones_it_skips() -> None:
    """A poll ending after its next tick: that tick is polled at once (late, with its own timestamp), not lost;
    a poll that overran by several periods polls the latest passed tick and counts the older ones as missed."""
    from edge.sources.modbus import ModbusSource
    from edge.sources.stats import SourceStats
    from tests.test_modbus_source import Collector, fast_settings, make_table

    table = make_table([(free_port(), 1, "ABCD")])
    stats = SourceStats()
    source = ModbusSource(table.devices[0], table, fast_settings(period_ms=100), Collector(), stats)
    ticks: list[int] = []

    async def poll(tick_ns: int) -> None:
        ticks.append(tick_ns)
        if len(ticks) == 2:
            await asyncio.sleep(0.12)  # into the next tick by a fifth of a period
        elif len(ticks) == 4:
            await asyncio.sleep(0.35)  # two and a half periods

    async def main() -> None:
        source._poll = poll  # type: ignore[method-assign]
        task = asyncio.create_task(source.run())
        deadline = time.monotonic() + 20.0
        while len(ticks) < 6 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert len(ticks) >= 6
    steps = [(b - a) // 100_000_000 for a, b in itertools.pairwise(ticks)]
    assert steps[1] == 1  # the tick the second poll ran into was polled, late
    assert steps[3] >= 3  # the fourth poll overran by 2.5 periods: the latest passed tick polled, older skipped
    assert stats.missed_ticks == sum(s - 1 for s in steps)  # every tick neither polled nor late is counted
    assert stats.late_polls >= 2


def test_gil_switch_interval_is_a_validated_setting(tmp_path: Path) -> None:
    """``judge.switch_interval_ms`` defaults to 1 ms and a bad value is refused with its path."""
    from plantwire.configfile import ConfigError

    path = _write_config(tmp_path, free_port())
    cfg, _ = load_edge(path)
    assert cfg.judge.switch_interval_ms == 1.0
    doc = json.loads(path.read_text())
    doc["judge"] = {"switch_interval_ms": 0}
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as info:
        load_edge(path)
    assert any(e.startswith("judge.switch_interval_ms") for e in info.value.errors), info.value.errors
