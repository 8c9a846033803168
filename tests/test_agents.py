"""The agent seam (edge/agents): declared inputs and derived signals, isolation, time budget, checkpoints.

Agents here are small stand-ins written against the public interface, the way docs/agents.md tells a
newcomer to write one; no servers (the gateway path is covered by tests/test_agents_e2e.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from edge.agents import Agent, AgentContext, AgentSettings, DerivedSignal, Emitter
from edge.agents.runner import AgentRunner
from edge.agents.settings import AgentsSettings
from edge.agents.table import with_derived
from edge.detectors.events import EVENT_DTYPE
from edge.frames import Frame
from plantwire.configfile import load_plant
from plantwire.metrics import Registry
from plantwire.plant import expand

ROOT = Path(__file__).resolve().parents[1]


class Doubler(Agent):
    """Emits 2 x motor_power of every compressor as ``<machine>.double_kw``; counts frames in its state."""

    name = "doubler"

    def __init__(self, ctx: AgentContext, settings: AgentSettings) -> None:
        self.machines = ctx.machines_of(["compressor"])
        self.rows = ctx.select(self.machines, ["motor_power"])[:, 0]
        self.local = np.full(len(ctx.table), -1, dtype=np.int64)
        self.local[self.rows] = np.arange(self.rows.shape[0])
        self.ids = [ctx.table.machine_ids[m] for m in self.machines.tolist()]
        self.frames = np.zeros(1, dtype=np.int64)

    def consumes(self) -> np.ndarray:
        return self.rows

    def derived(self) -> list[DerivedSignal]:
        return [DerivedSignal(m, "double_kw", "kW") for m in self.ids]

    def process(self, frame: Frame, events: np.ndarray, out: Emitter) -> None:
        self.frames[0] += 1
        out.samples(frame.ts_ns, self.local[frame.signal].astype(np.uint32), 2.0 * frame.value)
        if events.shape[0]:
            out.event({"type": "alarm", "state": "open", "kind": "seen", "start_ns": 1, "end_ns": None, "peak": 0.0})

    def state(self) -> dict[str, np.ndarray]:
        return {"frames": self.frames}


class Breaks(Doubler):
    name = "breaks"

    def derived(self) -> list[DerivedSignal]:
        return [DerivedSignal(m, "broken", "") for m in self.ids]

    def process(self, frame: Frame, events: np.ndarray, out: Emitter) -> None:
        out.samples(frame.ts_ns, np.zeros(len(frame), dtype=np.uint32), frame.value)  # discarded with the failure
        raise RuntimeError("boom")


class Slow(Doubler):
    name = "slow"

    def derived(self) -> list[DerivedSignal]:
        return []

    def process(self, frame: Frame, events: np.ndarray, out: Emitter) -> None:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.002:
            pass


class NoBuild(Doubler):
    name = "nobuild"

    def __init__(self, ctx: AgentContext, settings: AgentSettings) -> None:
        raise ValueError("no machine fits")


class _Settings(AgentsSettings):
    doubler: AgentSettings | None = AgentSettings()
    breaks: AgentSettings | None = AgentSettings()
    slow: AgentSettings | None = AgentSettings()
    nobuild: AgentSettings | None = AgentSettings()


@pytest.fixture(scope="module")
def plant():  # type: ignore[no-untyped-def]
    return load_plant(ROOT / "configs" / "dev" / "plant.yaml")


def _frame(table, names: list[str], ts_ns: int, values: list[float]) -> Frame:  # type: ignore[no-untyped-def]
    sig = np.array([table.ids.index(n) for n in names], dtype=np.uint32)
    return Frame(np.full(len(names), ts_ns, dtype=np.int64), sig, np.array(values, dtype=np.float64),
                 np.zeros(len(names), dtype=np.uint8))


def _runner(plant, tmp: Path | None, **kw: object) -> AgentRunner:  # type: ignore[no-untyped-def]
    classes = {c.name: c for c in (Doubler, Breaks, Slow, NoBuild)}
    return AgentRunner.build(expand(plant), plant, _Settings(**kw), tmp, classes=classes)  # type: ignore[arg-type]


def test_derived_signals_extend_the_table_and_carry_the_agents_output(plant, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base = expand(plant)
    r = _runner(plant, tmp_path, breaks=None, slow=None, nobuild=None)
    t = r.table
    assert t.ids[: len(base)] == base.ids and len(t) == len(base) + 8
    assert t.ids[len(base)] == "line1.compressor01.double_kw" and t.kinds[-1] == "derived"
    assert t.device[len(base):].tolist() == [-1] * 8 and np.isnan(t.scale[len(base):]).all()
    assert t.table_hash() != base.table_hash()
    # Only its own signals reach the agent; other samples in the frame are not its business.
    f = _frame(base, ["line1.compressor02.motor_power", "line1.press01.tonnage", "line1.compressor01.motor_power"],
               5, [10.0, 800.0, 11.5])
    r.run(f)
    assert r.pending == 2
    out = r.take()
    assert out is not None and r.pending == 0 and r.take() is None
    assert [t.ids[i] for i in out.signal.tolist()] == ["line1.compressor02.double_kw", "line1.compressor01.double_kw"]
    assert out.value.tolist() == [20.0, 23.0] and out.ts_ns.tolist() == [5, 5]
    # Derived samples in a frame (indices past the plant's, however far) never reach an agent.
    n = len(base)
    sig = np.array([n, base.ids.index("line1.compressor03.motor_power"), len(t) - 1, 2**32 - 1], dtype=np.uint32)
    r.run(Frame(np.full(4, 7, dtype=np.int64), sig, np.array([1.0, 2.0, 3.0, 4.0]), np.zeros(4, dtype=np.uint8)))
    out = r.take()
    assert out is not None and [t.ids[i] for i in out.signal.tolist()] == ["line1.compressor03.double_kw"]
    assert out.value.tolist() == [4.0]
    # Events of the frame reach it, and what it emits is tagged with its name.
    r.run(_frame(base, [], 6, []), np.zeros(1, dtype=EVENT_DTYPE))
    assert [e["agent"] for e in r.take_events()] == ["doubler"]


def test_a_failing_agent_is_disabled_with_an_event_and_the_others_carry_on(plant) -> None:  # type: ignore[no-untyped-def]
    r = _runner(plant, None, slow=None)
    base = r.plant_table
    f = _frame(base, ["line1.compressor01.motor_power"], 7, [3.0])
    r.run(f)
    r.run(f)
    docs = r.take_events()
    kinds = sorted((d["signal"], d["kind"]) for d in docs)
    assert kinds == [("agent.breaks", "agent_failed"), ("agent.nobuild", "agent_failed")]
    assert any("boom" in d["detail"] for d in docs) and any("no machine fits" in d["detail"] for d in docs)
    out = r.take()
    assert out is not None and out.value.tolist() == [6.0, 6.0]  # the doubler twice; nothing of "breaks"
    m = Registry("t")
    r.export_metrics(m)
    text = m.render()
    assert 't_agent_enabled{agent="breaks"} 0' in text and 't_agent_enabled{agent="doubler"} 1' in text
    assert 't_agent_failures_total{agent="breaks"} 1' in text


def test_an_agent_over_its_time_budget_is_disabled_after_the_configured_frames(plant) -> None:  # type: ignore[no-untyped-def]
    r = _runner(plant, None, breaks=None, nobuild=None, frame_budget_ms=0.5, overrun_frames=3)
    f = _frame(r.plant_table, ["line1.compressor01.motor_power"], 7, [3.0])
    for _ in range(2):
        r.run(f)
    assert not r.take_events()
    r.run(f)
    docs = r.take_events()
    assert [(d["signal"], d["kind"]) for d in docs] == [("agent.slow", "agent_overrun")]
    slow = next(s for s in r.slots if s.name == "slow")
    assert not slow.stats.enabled and slow.stats.overruns == 3
    r.run(f)  # not called any more; the doubler still is
    assert slow.stats.frames == 3 and next(s for s in r.slots if s.name == "doubler").stats.frames == 4


def test_state_is_checkpointed_and_restored_warm(plant, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = _runner(plant, tmp_path, breaks=None, slow=None, nobuild=None)
    f = _frame(r.plant_table, [], 1, [])
    for _ in range(3):
        r.run(f)
    r.close()
    assert (tmp_path / "agents" / "doubler.npz").exists()
    again = _runner(plant, tmp_path, breaks=None, slow=None, nobuild=None)
    agent = again.slots[0].agent
    assert isinstance(agent, Doubler) and agent.frames[0] == 3 and not again.cold_reasons
    # A corrupt checkpoint: cold start, said once, never a crash.
    (tmp_path / "agents" / "doubler.npz").write_bytes(b"junk")
    cold = _runner(plant, tmp_path, breaks=None, slow=None, nobuild=None)
    assert cold.slots[0].agent.frames[0] == 0 and "unreadable" in cold.cold_reasons[0]  # type: ignore[union-attr]


def test_derived_ids_must_be_new(plant) -> None:  # type: ignore[no-untyped-def]
    base = expand(plant)
    with pytest.raises(ValueError, match="clashes"):
        with_derived(base, [DerivedSignal("line1.compressor01", "motor_power")])


def test_the_gateway_encodes_derived_samples_in_its_batches_and_counts_them(plant, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Through EdgeGateway._flush (no servers): the frame goes out first, then (same flush, once the agents ran)
    the derived samples, in batches with their own sequence numbers, counted per signal like read samples."""
    import edge.agents.runner as runner_mod
    from edge.app import EdgeGateway
    from edge.config import load_edge
    from plantwire import wire

    monkeypatch.setattr(runner_mod, "agent_classes", lambda: {"doubler": Doubler})
    cfg, plant_cfg = load_edge(ROOT / "configs" / "dev" / "edge.yaml")
    cfg = cfg.model_copy(update={"state_dir": tmp_path, "agents": _Settings(breaks=None, slow=None, nobuild=None)})
    gw = EdgeGateway(cfg, plant_cfg)
    sent: list[bytes] = []
    gw.forwarder.submit = lambda payload, seq, epoch, n: sent.append(payload)  # type: ignore[method-assign]
    try:
        n_plant = len(gw.plant_table)
        assert len(gw.table) == n_plant + 8
        sig = np.array([gw.table.ids.index("line1.compressor03.motor_power")], dtype=np.uint32)
        gw._on_samples(10, sig, np.array([4.0]), 0)
        gw._flush()
        assert len(sent) == 2 and gw.agents.pending == 0  # not held for the next flush (a whole interval later)
        gw._flush()  # nothing read, nothing derived: nothing sent
        assert len(sent) == 2 and gw.agents.pending == 0
        batches = [wire.decode_batch(p) for p in sent]
        assert [b.seq for b in batches] == [0, 1]
        assert batches[1].table_hash == gw.table_hash == gw.table.table_hash()
        d = int(batches[1].signal[0])
        assert gw.table.ids[d] == "line1.compressor03.double_kw" and batches[1].value.tolist() == [8.0]
        assert gw.read_count[d] == 1 and int(gw.read_count.sum()) == 2
        assert wire.decode_signal_table(gw._signals_payload).ids[d] == "line1.compressor03.double_kw"
    finally:
        gw.spool.close()
        gw.mark.close(stopped=True)


def test_a_failure_episode_closes_when_a_later_runner_runs_the_agent_again(plant, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Disabled (or broken), then enabled and fixed by a reload: the agent_failed alarm closes, same start."""
    r1 = _runner(plant, tmp_path, doubler=None, slow=None, breaks=None)  # nobuild fails to build
    (opened,) = r1.take_events()
    assert (opened["kind"], opened["state"]) == ("agent_failed", "open")
    r2 = _runner(plant, tmp_path, doubler=None, slow=None, breaks=None, nobuild=None)  # turned off: stays open
    assert r2.take_events() == []
    r3 = _runner(plant, tmp_path, doubler=None, slow=None, breaks=None)  # failing again: the same episode
    (again,) = r3.take_events()
    assert again["state"] == "open" and again["start_ns"] == opened["start_ns"]

    class Fixed(Doubler):
        name = "nobuild"

    r4 = AgentRunner.build(r1.plant_table, plant, _Settings(doubler=None, slow=None, breaks=None), tmp_path,
                           classes={"nobuild": Fixed})
    (closed,) = r4.take_events()
    assert (closed["kind"], closed["state"], closed["signal"]) == ("agent_failed", "closed", "agent.nobuild")
    assert closed["start_ns"] == opened["start_ns"] and closed["end_ns"] >= closed["start_ns"]
    r5 = AgentRunner.build(r1.plant_table, plant, _Settings(doubler=None, slow=None, breaks=None), tmp_path,
                           classes={"nobuild": Fixed})
    assert r5.take_events() == []  # closed once
