"""The incident engine (edge/alarms) without servers: roll-up, priority, suppression, lifecycle, floods, restarts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.alarms import store
from edge.alarms.commands import CommandError, parse_command
from edge.alarms.engine import SEQ_RESTART_GAP, STATE_OFF, IncidentEngine
from edge.alarms.facts import MachineFacts
from edge.alarms.service import AlarmService
from edge.alarms.settings import AlarmSettings
from edge.detectors.events import EVENT_DTYPE, Phase, Scope
from edge.kernels.kinds import Kind
from edge.sidework import SideWork
from plantwire.configfile import load_plant
from plantwire.plant import Criticality, PlantConfig, SignalTable, expand

ROOT = Path(__file__).resolve().parents[1]
S = 1_000_000_000


@pytest.fixture(scope="module")
def dev() -> tuple[PlantConfig, SignalTable, MachineFacts]:
    plant = load_plant(ROOT / "configs" / "dev" / "plant.yaml")
    table = expand(plant)
    return plant, table, MachineFacts.from_plant(plant, table)


def sig(table: SignalTable, sid: str) -> int:
    return table.ids.index(sid)


def ev(entity: int, phase: Phase, kind: Kind = Kind.LEVEL, start_s: float = 0, end_s: float = -1, peak: float = 0.9,
       scope: Scope = Scope.SIGNAL) -> np.ndarray:
    a = np.zeros(1, dtype=EVENT_DTYPE)
    a["ts_start"], a["ts_end"] = int(start_s * S), int(end_s * S) if end_s >= 0 else -1
    a["entity"], a["scope"], a["phase"], a["kind"], a["peak"], a["top"] = entity, scope, phase, kind, peak, -1
    return a


def state(table: SignalTable, machine: str, value: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    i = sig(table, f"{machine}.running")
    return np.array([i], dtype=np.uint32), np.array([value]), np.zeros(1, dtype=np.uint8)


def cmd(action: str, rid: str = "r1", **kw: Any) -> bytes:
    return json.dumps({"id": rid, "actor": "ann", "ts_ns": 1, "action": action, "reason": "", **kw}).encode()


def seqs_ok(docs: list[dict[str, Any]]) -> bool:
    last: dict[str, int] = {}
    for d in docs:
        if d["seq"] <= last.get(d["id"], 0):
            return False
        last[d["id"]] = d["seq"]
    return True


C1 = "line1.compressor01"


def test_facts_area_criticality_state(dev: tuple[PlantConfig, SignalTable, MachineFacts]) -> None:
    _, table, facts = dev
    m = facts.machine_ids.index(C1)
    assert facts.area[m] == "line1" and facts.criticality[m] is Criticality.HIGH
    assert facts.state_signal[m] == sig(table, f"{C1}.running")
    hvac = facts.machine_ids.index("hall.hvac01")
    assert facts.area[hvac] == "utilities" and facts.criticality[hvac] is Criticality.LOW
    agv = facts.machine_ids.index("logistics.agv01")
    assert facts.area[agv] == "logistics"  # default: the name's first dotted part


def test_rollup_clear_delay_and_flapping(dev: tuple[PlantConfig, SignalTable, MachineFacts]) -> None:
    _, table, facts = dev
    e = IncidentEngine(table, facts, AlarmSettings(clear_delay_s=10))
    a, b = sig(table, f"{C1}.oil_temp"), sig(table, f"{C1}.motor_current")
    docs = e.on_events(ev(a, Phase.OPEN, start_s=1), 2 * S)
    docs += e.on_events(ev(b, Phase.OPEN, Kind.RANGE, start_s=3), 3 * S)
    assert [d["transition"] for d in docs] == ["open", "update"]
    inc = docs[-1]
    assert inc["machine"] == C1 and inc["area"] == "line1" and inc["kinds"] == ["level", "range"]
    assert inc["priority"] == "critical"  # high criticality x range (major)
    assert sorted(inc["signals"]) == sorted([f"{C1}.oil_temp", f"{C1}.motor_current"])
    docs += e.on_events(ev(a, Phase.CLOSE, start_s=1, end_s=5), 5 * S)
    docs += e.on_events(ev(b, Phase.CLOSE, Kind.RANGE, start_s=3, end_s=6), 6 * S)
    docs += e.tick(10 * S)
    # a contributor flapping back within the clear delay continues the incident
    docs += e.on_events(ev(a, Phase.OPEN, start_s=12), 12 * S)
    docs += e.tick(20 * S)
    assert [d["transition"] for d in docs] == ["open", "update"]
    docs += e.on_events(ev(a, Phase.CLOSE, start_s=12, end_s=14), 14 * S)
    assert e.tick(23 * S) == []  # the clear delay runs from the last close (14 s)
    docs += e.tick(24 * S)
    assert docs[-1]["transition"] == "clear" and docs[-1]["active"] is False and docs[-1]["end_ns"] == 14 * S
    assert len({d["id"] for d in docs}) == 1 and seqs_ok(docs)
    # cleared but unacknowledged: still listed until an operator acknowledges it
    assert e.find(docs[0]["id"]) is not None
    out, _, acked = e.apply(parse_command(cmd("ack", incident=docs[0]["id"])), 25 * S)
    assert out == "applied" and acked[0]["transition"] == "ack" and acked[0]["actor"] == "ann"
    assert e.find(docs[0]["id"]) is None


def test_state_suppression_startup_and_data_quality(dev: tuple[PlantConfig, SignalTable, MachineFacts]) -> None:
    _, table, facts = dev
    e = IncidentEngine(table, facts, AlarmSettings(state_settle_s=60))
    a, q = sig(table, f"{C1}.oil_temp"), sig(table, f"{C1}.bearing_temp_1")
    assert e.on_state(*state(table, C1, 0.0), 1 * S) == []
    docs = e.on_events(ev(a, Phase.OPEN, start_s=2), 2 * S)
    assert docs[0]["transition"] == "suppress" and docs[0]["suppressed_by"] == "off"
    # a data-quality contributor is never suppressed by state: the incident is shown
    docs = e.on_events(ev(q, Phase.OPEN, Kind.BAD, start_s=3), 3 * S)
    assert docs[-1]["transition"] == "unsuppress" and docs[-1]["suppressed_by"] is None
    assert "bad" in docs[-1]["kinds"]
    # another machine starting: suppressed for state_settle_s, then shown if still active
    p = "line1.press01"
    e.on_state(*state(table, p, 0.0), 1 * S)
    e.on_state(*state(table, p, 1.0), 10 * S)
    d2 = e.on_events(ev(sig(table, f"{p}.tonnage"), Phase.OPEN, start_s=20), 20 * S)
    assert d2[0]["suppressed_by"] == "startup"
    assert e.tick(69 * S) == []
    d3 = e.tick(71 * S)
    assert [d["transition"] for d in d3] == ["unsuppress"] and d3[0]["machine"] == p
    # running machine going off: its process incident is suppressed
    d4 = e.on_state(*state(table, p, 0.0), 80 * S)
    assert [d["transition"] for d in d4] == ["suppress"] and d4[0]["suppressed_by"] == "off"


def test_at_rest_is_shown_on_an_off_machine_but_maintenance_still_suppresses(
        dev: tuple[PlantConfig, SignalTable, MachineFacts]) -> None:
    """AT_REST is about the off state (a stopped compressor whose current flows): ``off`` does not suppress it."""
    _, table, facts = dev
    e = IncidentEngine(table, facts)
    e.on_state(*state(table, C1, 0.0), 1 * S)
    docs = e.on_events(ev(sig(table, f"{C1}.oil_temp"), Phase.OPEN, start_s=2), 2 * S)
    assert docs[0]["suppressed_by"] == "off"  # a level alarm of an off machine: explained by its state
    docs = e.on_events(ev(sig(table, f"{C1}.motor_current"), Phase.OPEN, Kind.AT_REST, start_s=3), 3 * S)
    assert docs[-1]["transition"] == "unsuppress" and docs[-1]["suppressed_by"] is None
    assert "at_rest" in docs[-1]["kinds"] and e.stats.incidents_annunciated == 1
    out, _, docs = e.apply(parse_command(cmd("maintenance", machine=C1, reason="motor swap")), 4 * S)
    assert out == "applied" and docs[0]["suppressed_by"] == "maintenance"


def test_maintenance_command_suppresses(dev: tuple[PlantConfig, SignalTable, MachineFacts]) -> None:
    _, table, facts = dev
    e = IncidentEngine(table, facts)
    e.on_events(ev(sig(table, f"{C1}.oil_temp"), Phase.OPEN, start_s=1), 1 * S)
    out, _, docs = e.apply(parse_command(cmd("maintenance", machine=C1, reason="bearing change")), 2 * S)
    assert out == "applied" and docs[0]["transition"] == "suppress" and docs[0]["suppressed_by"] == "maintenance"
    assert docs[0]["reason"] == "bearing change"
    out, detail, _ = e.apply(parse_command(cmd("maintenance", machine=C1)), 3 * S)
    assert out == "refused" and "already in maintenance" in detail
    out, _, docs = e.apply(parse_command(cmd("maintenance_end", machine=C1)), 4 * S)
    assert docs[0]["transition"] == "unsuppress"


def test_shelve_oos_and_refusals(dev: tuple[PlantConfig, SignalTable, MachineFacts]) -> None:
    _, table, facts = dev
    e = IncidentEngine(table, facts, AlarmSettings(shelve_max_s=3600))
    d = e.on_events(ev(sig(table, f"{C1}.oil_temp"), Phase.OPEN, start_s=1), 1 * S)
    iid = d[0]["id"]
    out, detail, _ = e.apply(parse_command(cmd("shelve", incident=iid, minutes=61)), 2 * S)
    assert out == "refused" and "longer than the maximum" in detail
    out, _, docs = e.apply(parse_command(cmd("shelve", incident=iid, minutes=10)), 2 * S)
    assert out == "applied" and docs[0]["transition"] == "shelve" and docs[0]["shelved_until_ns"] == 602 * S
    assert e.tick(601 * S) == []
    docs = e.tick(602 * S)
    assert [x["transition"] for x in docs] == ["unshelve"] and docs[0]["shelved_until_ns"] is None
    out, detail, _ = e.apply(parse_command(cmd("unshelve", incident=iid)), 603 * S)
    assert out == "refused" and "not shelved" in detail
    with pytest.raises(CommandError, match="reason"):
        parse_command(cmd("oos", incident=iid))
    out, _, docs = e.apply(parse_command(cmd("oos", incident=iid, reason="sensor replaced next week")), 604 * S)
    assert docs[0]["transition"] == "oos" and docs[0]["out_of_service"] is True
    out, _, docs = e.apply(parse_command(cmd("return", machine=C1)), 605 * S)
    assert docs[0]["transition"] == "return" and docs[0]["out_of_service"] is False
    out, detail, _ = e.apply(parse_command(cmd("ack", incident="nope@1")), 606 * S)
    assert out == "refused" and "not known" in detail
    out, detail, _ = e.apply(parse_command(cmd("ack", machine="no.such")), 606 * S)
    assert out == "refused" and "not a machine" in detail


@pytest.mark.parametrize(("payload", "field"), [
    (b"{not json", "payload"), (b"[1]", "payload"), (json.dumps({"actor": "a", "ts_ns": 1, "action": "ack",
                                                                  "incident": "x"}).encode(), "id"),
    (cmd("explode", incident="x"), "action"), (cmd("ack"), "incident/machine"),
    (cmd("ack", incident="x", machine="y"), "incident/machine"), (cmd("shelve", incident="x"), "duration_s/minutes"),
    (cmd("shelve", incident="x", duration_s=-5), "duration_s/minutes"),
    (json.dumps({"id": "r", "actor": "a", "ts_ns": "soon", "action": "ack", "incident": "x"}).encode(), "ts_ns"),
])
def test_bad_commands_refused_with_field(payload: bytes, field: str) -> None:
    with pytest.raises(CommandError) as exc:
        parse_command(payload)
    assert str(exc.value).startswith(field + ":")


def test_flood_summarises_lower_priority(dev: tuple[PlantConfig, SignalTable, MachineFacts]) -> None:
    _, table, facts = dev
    e = IncidentEngine(table, facts, AlarmSettings(flood_count=3, flood_clear_count=1, flood_window_s=600))
    presses = [m for m in facts.machine_ids if m.startswith("line1.press")]  # medium criticality: level -> low
    docs: list[dict[str, Any]] = []
    for k, mid in enumerate(presses[:6]):
        docs += e.on_events(ev(sig(table, f"{mid}.tonnage"), Phase.OPEN, start_s=10 * k), 10 * k * S)
    tr = [d["transition"] for d in docs]
    assert tr[:3] == ["open"] * 3 and "flood_open" in tr
    flood = next(d for d in docs if d["transition"] == "flood_open")
    assert flood["machine"] is None and flood["area"] == "line1"
    summarised = [d for d in docs if d["transition"] == "suppress"]
    assert len(summarised) == 3 and all(d["suppressed_by"] == "flood" for d in summarised)
    # a critical incident is still annunciated during the flood
    crit = e.on_events(ev(sig(table, f"{C1}.motor_current"), Phase.OPEN, Kind.RANGE, start_s=70), 70 * S)
    assert crit[0]["transition"] == "open" and crit[0]["priority"] == "critical"
    upd = e.tick(71 * S)
    assert upd[0]["transition"] == "update" and upd[0]["flood_count"] == 3
    # the window empties: the flood closes and what it held and is still active is shown
    end = e.tick(700 * S)
    assert end[0]["transition"] == "flood_close"
    assert sum(1 for d in end if d["transition"] == "unsuppress") == 3
    assert seqs_ok(docs + crit + upd + end)


def test_flood_keeps_data_quality_names_members_and_lets_escalations_out(
        dev: tuple[PlantConfig, SignalTable, MachineFacts]) -> None:
    """During a flood a data-quality incident is still shown (low priority, but the operator must know which
    readings are lost), a summarised incident that escalates leaves the summary, and the flood names its members."""
    _, table, facts = dev
    e = IncidentEngine(table, facts, AlarmSettings(flood_count=3, flood_clear_count=1, flood_window_s=600))
    presses = [m for m in facts.machine_ids if m.startswith("line1.press")]  # medium criticality: level -> low
    docs: list[dict[str, Any]] = []
    for k, mid in enumerate(presses[:6]):
        docs += e.on_events(ev(sig(table, f"{mid}.tonnage"), Phase.OPEN, start_s=10 * k, peak=0.5 + 0.01 * k),
                            10 * k * S)
    assert e.in_flood("line1")
    summarised = [d["machine"] for d in docs if d["transition"] == "suppress"]
    assert summarised == presses[3:6]
    dq = e.on_events(ev(sig(table, f"{presses[6]}.oil_temp"), Phase.OPEN, Kind.SILENT, start_s=70), 70 * S)
    assert [(d["transition"], d["priority"], d["suppressed_by"]) for d in dq] == [("open", "low", None)]
    upd = e.tick(71 * S)
    flood = upd[0]
    assert flood["transition"] == "update" and flood["flood_count"] == 3
    # members named, most urgent first: the highest-scoring summarised press leads
    assert flood["signals"] == [f"{m}.tonnage" for m in reversed(presses[3:6])]
    # a summarised incident whose machine now also reports a lost reading is shown on its own
    out = e.on_events(ev(sig(table, f"{presses[4]}.oil_level"), Phase.OPEN, Kind.BAD, start_s=80), 80 * S)
    assert [(d["transition"], d["machine"], d["suppressed_by"]) for d in out] == [("unsuppress", presses[4], None)]
    # one that escalates to the kept priority (a critical range alarm on a high-criticality machine would be one;
    # here flood_keeps=high lets a press's range alarm out)
    e2 = IncidentEngine(table, facts, AlarmSettings(flood_count=3, flood_clear_count=1, flood_keeps="high"))
    d2: list[dict[str, Any]] = []
    for k, mid in enumerate(presses[:5]):
        d2 += e2.on_events(ev(sig(table, f"{mid}.tonnage"), Phase.OPEN, start_s=10 * k, peak=0.5), 10 * k * S)
    assert any(d["transition"] == "suppress" and d["machine"] == presses[4] for d in d2)
    up = e2.on_events(ev(sig(table, f"{presses[4]}.oil_pressure"), Phase.OPEN, Kind.RANGE, start_s=60), 60 * S)
    assert [(d["transition"], d["priority"], d["suppressed_by"]) for d in up] == [("unsuppress", "high", None)]
    assert seqs_ok(docs + dq + upd + out) and seqs_ok(d2 + up)


@pytest.mark.parametrize("reactivation, again", [("off", "open"), ("same_signal", "update")])
def test_chattering_is_marked_and_shelved(dev: tuple[PlantConfig, SignalTable, MachineFacts], reactivation: str,
                                          again: str) -> None:
    """Chattering counts activations, new incidents (reactivation off) or re-activations of one (the default)."""
    _, table, facts = dev
    e = IncidentEngine(table, facts, AlarmSettings(clear_delay_s=2, chatter_shelve_s=600, reactivation=reactivation))
    a = sig(table, f"{C1}.oil_temp")
    docs: list[dict[str, Any]] = []
    for k in range(3):
        t = 15 * k
        docs += e.on_events(ev(a, Phase.OPEN, start_s=t), t * S)
        docs += e.on_events(ev(a, Phase.CLOSE, start_s=t, end_s=t + 1), (t + 1) * S)
        docs += e.tick((t + 4) * S)
    tr = [d["transition"] for d in docs]
    assert tr == ["open", "clear", again, "clear", "chatter", "clear"]
    assert len({d["id"] for d in docs}) == (3 if reactivation == "off" else 1) and seqs_ok(docs)
    ch = docs[4]
    assert ch["chattering"] is True and ch["shelved_until_ns"] == 630 * S
    # while shelved, a new activation is tracked but not shown
    d = e.on_events(ev(a, Phase.OPEN, start_s=100), 100 * S)
    assert d[0]["transition"] == again and d[0]["shelved_until_ns"] == 630 * S and d[0]["chattering"] is True
    assert e.tick(629 * S) == []
    back = e.tick(630 * S)  # the shelving expires: the still-active incident is shown, no longer chattering
    assert [x["transition"] for x in back] == ["unshelve"] and back[0]["chattering"] is False
    assert back[0]["active"] is True and back[0]["shelved_until_ns"] is None


def test_checkpoint_continues_incident_and_resends_outbox(tmp_path: Path,
                                                          dev: tuple[PlantConfig, SignalTable, MachineFacts]) -> None:
    plant, table, _ = dev
    sent: list[dict[str, Any]] = []
    published: list[tuple[str, bytes]] = []

    def service() -> AlarmService:
        return AlarmService(table, plant, AlarmSettings(), site="ac-dev", gateway="gw1", state_dir=tmp_path,
                            emit=sent.extend, publish=lambda t, p: published.append((t, p)), sidework=SideWork())

    s1 = service()
    a = sig(table, f"{C1}.oil_temp")
    s1.frame(np.zeros(0, np.uint32), np.zeros(0), np.zeros(0, np.uint8), ev(a, Phase.OPEN, start_s=1), 1 * S)
    assert sent[-1]["transition"] == "open" and published[-1][0] == "plantwire/v1/ac-dev/gw1/incidents"
    assert json.loads(published[-1][1])["gateway"] == "gw1"
    iid = sent[-1]["id"]
    # a kill after the checkpoint but before the lane took the documents: they come again, identical
    _, outbox = store.load(tmp_path)
    assert outbox == [sent[-1]]
    n = len(sent)
    s2 = service()
    assert sent[n:n + 1] == outbox and s2.resent == 1
    # then its state again, seq jumped past whatever may have reached the cloud after the checkpoint
    assert [(d["id"], d["transition"], d["seq"]) for d in sent[n + 1:]] == [(iid, "update", 1 + SEQ_RESTART_GAP + 1)]
    s2.reconcile(lambda key: key == f"s{a}")  # the detectors still hold the alarm open
    s2.frame(np.zeros(0, np.uint32), np.zeros(0), np.zeros(0, np.uint8),
             ev(a, Phase.CLOSE, start_s=1, end_s=5), 5 * S)
    s2.tick(100 * S)
    assert sent[-1]["transition"] == "clear" and sent[-1]["id"] == iid and sent[-1]["seq"] == SEQ_RESTART_GAP + 3
    s2.close()
    # a restart whose detectors lost the alarm (cold): the restored contributor closes, the incident clears
    b = sig(table, f"{C1}.motor_current")
    s2.frame(np.zeros(0, np.uint32), np.zeros(0), np.zeros(0, np.uint8), ev(b, Phase.OPEN, start_s=40), 40 * S)
    s2.close()
    s3 = service()
    n = len(sent)
    s3.reconcile(lambda key: False)
    assert s3.engine.current and sent[n:] == []  # closed, clearing after restart_grace_s
    s3.tick(2**62)
    assert sent[-1]["transition"] == "clear" and sent[-1]["seq"] == 1 + SEQ_RESTART_GAP + 2  # open, restate, clear


def test_restart_grace_continues_an_incident_whose_alarm_reopens(
        dev: tuple[PlantConfig, SignalTable, MachineFacts]) -> None:
    _, table, facts = dev
    e1 = IncidentEngine(table, facts, AlarmSettings(clear_delay_s=5, restart_grace_s=60))
    a = sig(table, f"{C1}.oil_temp")
    first = e1.on_events(ev(a, Phase.OPEN, Kind.BAD, start_s=1), 1 * S)
    e2 = IncidentEngine(table, facts, AlarmSettings(clear_delay_s=5, restart_grace_s=60))
    e2.restore(json.loads(json.dumps(e1.to_json())))
    assert e2.reconcile(lambda key: False, 100 * S) == []  # the detectors lost the alarm (killed, cold start)
    assert e2.tick(150 * S) == []  # within the grace: not cleared yet
    again = e2.on_events(ev(a, Phase.OPEN, Kind.BAD, start_s=103), 150 * S)
    assert again == []  # the same contributor re-opened: the incident simply continues
    e2.on_events(ev(a, Phase.CLOSE, Kind.BAD, start_s=103, end_s=170), 170 * S)
    done = e2.tick(175 * S)
    assert [d["transition"] for d in done] == ["clear"] and done[0]["id"] == first[0]["id"]
    assert done[0]["seq"] == 1 + SEQ_RESTART_GAP + 1  # seq jumps on restore (engine.SEQ_RESTART_GAP)


def test_service_command_path_answers_and_audits(tmp_path: Path,
                                                 dev: tuple[PlantConfig, SignalTable, MachineFacts]) -> None:
    plant, table, _ = dev
    sent: list[dict[str, Any]] = []
    published: list[tuple[str, bytes]] = []
    s = AlarmService(table, plant, AlarmSettings(), site="ac-dev", gateway="gw1", state_dir=None, emit=sent.extend,
                     publish=lambda t, p: published.append((t, p)), sidework=SideWork())
    s.frame(np.zeros(0, np.uint32), np.zeros(0), np.zeros(0, np.uint8),
            ev(sig(table, f"{C1}.oil_temp"), Phase.OPEN, start_s=1), 1 * S)
    iid = sent[-1]["id"]
    res = s.command(cmd("ack", rid="q1", incident=iid, reason="seen"))
    assert res == {"id": "q1", "service": "alarms", "action": "ack", "outcome": "applied",
                   "detail": f"acknowledged {iid}"}
    assert published[-1][0] == "plantwire/v1/ac-dev/gw1/cmdresult"
    audit = sent[-1]
    assert audit["type"] == "audit" and audit["actor"] == "ann" and audit["target"] == iid
    assert audit["outcome"] == "applied" and audit["reason"] == "seen" and audit["service"] == "alarms"
    assert sent[-2]["transition"] == "ack"
    assert s.counts() == {"active": 1, "annunciated": 1, "unacked": 0, "shelved": 0, "suppressed": 0, "floods": 0}
    n = len(sent)
    assert s.command(cmd("ack", rid="q1", incident=iid))["outcome"] == "applied"  # redelivery: same answer
    assert len(sent) == n  # ... applied and audited once
    bad = s.command(b'{"id": "q2", "actor": "ann", "ts_ns": 1, "action": "ack"}')
    assert bad["outcome"] == "refused" and bad["id"] == "q2" and "incident/machine" in bad["detail"]
    assert sent[-1]["type"] == "audit" and sent[-1]["outcome"] == "refused"
    assert s.refused == {"incident/machine": 1}


PLANT_BAD = """\
site: t
templates:
  pump:
    state: {signal: runing, off_values: [0]}
    signals:
      - {name: running, type: bit, kind: state}
      - {name: flow}
devices:
  - {name: plc1, protocol: modbus, port: 1502}
machines:
  - {name: "p{i}", template: pump, count: 2, device: plc1, area: "hall{j}", criticality: vital}
"""


def test_plant_alarm_fields_are_validated_with_their_path(tmp_path: Path) -> None:
    from plantwire.configfile import ConfigError

    f = tmp_path / "plant.yaml"
    f.write_text(PLANT_BAD)
    with pytest.raises(ConfigError) as exc:
        load_plant(f)
    report = exc.value.report()
    assert "templates.pump" in report and "'runing' is not a signal of this template" in report
    assert "machines.0.criticality" in report or "machines[0].criticality" in report
    f.write_text(PLANT_BAD.replace("runing", "running").replace("criticality: vital", "criticality: high"))
    with pytest.raises(ConfigError, match=r"machines\[0\]\.area: .*unknown placeholder \{j\}"):
        load_plant(f)
    f.write_text(PLANT_BAD.replace("runing", "running").replace("criticality: vital", "criticality: high")
                 .replace("hall{j}", "hall{i}").replace("off_values: [0]", "off_values: [0, 2]"))
    plant = load_plant(f)
    facts = MachineFacts.from_plant(plant, expand(plant))
    assert facts.area == ["hall1", "hall2"] and facts.criticality == [Criticality.HIGH] * 2
    assert facts.off_values[facts.off_row[facts.state_signal[1]]][:2].tolist() == [0.0, 2.0]


def test_state_takes_each_machines_last_good_sample_of_the_frame(
        dev: tuple[PlantConfig, SignalTable, MachineFacts]) -> None:
    _, table, facts = dev
    e = IncidentEngine(table, facts)
    r1, r2 = sig(table, f"{C1}.running"), sig(table, "line1.press01.running")
    other = sig(table, f"{C1}.oil_temp")
    signal = np.array([r1, other, r2, r1, r2, r1], dtype=np.uint32)
    value = np.array([1.0, 0.0, 0.0, 0.0, 1.0, np.nan])
    quality = np.array([0, 0, 0, 0, 0, 0], dtype=np.uint8)
    e.on_state(signal, value, quality, 1 * S)
    m1, m2 = facts.machine_ids.index(C1), facts.machine_ids.index("line1.press01")
    assert e.state[m1] == 1 and e.state[m2] == 0  # C1: 0 (its NaN sample is not usable); press01: 1 last
    e.on_state(np.array([r1], dtype=np.uint32), np.array([1.0]), np.array([2], dtype=np.uint8), 2 * S)
    assert e.state[m1] == 1  # a bad sample says nothing about the state
    # frames that repeat the last good values change nothing (skipped); a change anywhere in a frame is seen,
    # also when it returns to the stored value by the frame's end, and the frame's last good sample still decides
    st = e.state.copy()
    assert e.on_state(signal[[0, 2]], np.array([0.0, 1.0]), quality[:2], 3 * S) == [] and (e.state == st).all()
    e.on_state(np.array([r1, r1, r2], dtype=np.uint32), np.array([1.0, 0.0, 1.0]), quality[:3], 4 * S)
    assert e.state[m1] == 1 and e.state[m2] == 0
    e.on_state(np.array([r1, r1], dtype=np.uint32), np.array([1.0, 1.0]), quality[:2], 5 * S)
    assert e.state[m1] == 0
    e.on_state(np.array([r1, r1], dtype=np.uint32), np.array([0.0, 1.0]), quality[:2], 6 * S)
    assert e.state[m1] == 0  # went off and on within the frame: on at its end
    e.on_state(np.array([r1, r1], dtype=np.uint32), np.array([1.0, 0.0]), np.array([0, 2], dtype=np.uint8), 7 * S)
    assert e.state[m1] == 0  # the 0 is bad: the good 1 repeats the stored value


def test_console_board_lists_and_acts_through_the_alarm_layer(
        dev: tuple[PlantConfig, SignalTable, MachineFacts]) -> None:
    from edge.console.hooks import IncidentBoard, Outcome

    plant, table, _ = dev
    sent: list[dict[str, Any]] = []
    s = AlarmService(table, plant, AlarmSettings(), site="ac-dev", gateway="gw1", state_dir=None, emit=sent.extend,
                     publish=lambda t, p: None, sidework=SideWork())
    s.frame(np.zeros(0, np.uint32), np.zeros(0), np.zeros(0, np.uint8),
            ev(sig(table, f"{C1}.oil_temp"), Phase.OPEN, start_s=1), 1 * S)
    board = IncidentBoard(s)
    [row] = board.open_alarms()
    assert row["machine"] == C1 and row["start_ns"] == 1 * S and row["peak"] == pytest.approx(0.9, abs=1e-3)
    res = board.act("shelve", row["id"], "bob", "noisy", 600.0, "c1")
    assert res.outcome is Outcome.APPLIED and res.audited
    assert sent[-1]["type"] == "audit" and sent[-1]["source"] == "console" and sent[-2]["transition"] == "shelve"
    assert board.act("shelve", "nope@1", "bob", "", 600.0, "c2").outcome is Outcome.REFUSED


def test_device_alarm_reaches_every_served_machine_as_data_quality(
        dev: tuple[PlantConfig, SignalTable, MachineFacts]) -> None:
    """A DEVICE alarm's entity is a device, not a machine: each machine it serves gets it, named by the device,
    low priority and never suppressed by state (an off machine's PLC going silent is still news)."""
    _, table, facts = dev
    e = IncidentEngine(table, facts, AlarmSettings(clear_delay_s=10))
    d = int(table.device[sig(table, f"{C1}.oil_temp")])
    served = sorted({table.machine_ids[m] for m in table.machine[table.device == d]})
    assert len(served) >= 2  # so treating the device index as a machine index would show
    e.on_state(*state(table, C1, 0.0), 1 * S)
    docs = e.on_events(ev(d, Phase.OPEN, Kind.DEVICE, start_s=2, scope=Scope.DEVICE), 2 * S)
    assert sorted(x["machine"] for x in docs if x["transition"] == "open") == served
    assert all(x["kinds"] == ["device"] and x["signals"] == [table.devices[d].name] and x["priority"] == "low"
               and x["suppressed_by"] is None for x in docs)
    docs = e.on_events(ev(d, Phase.CLOSE, Kind.DEVICE, start_s=2, end_s=5, scope=Scope.DEVICE), 5 * S)
    docs += e.tick(16 * S)
    assert sorted(x["machine"] for x in docs if x["transition"] == "clear") == served


def test_detector_state_suppresses_machines_without_a_state_signal(
        dev: tuple[PlantConfig, SignalTable, MachineFacts]) -> None:
    """The detectors' operating state (StackResult.machine_state, from a load signal) suppresses a machine that has
    no state signal; a machine with one keeps what its own signal says."""
    from edge.kernels import opstate

    _, table, facts = dev
    e = IncidentEngine(table, facts, AlarmSettings(state_settle_s=60))
    free = next(m for m in range(len(table.machine_ids)) if facts.state_signal[m] < 0)
    own = table.machine_ids.index(C1)
    assert facts.state_signal[own] >= 0
    states = np.full(len(table.machine_ids), opstate.UNKNOWN, dtype=np.int8)
    states[[free, own]] = opstate.OFF
    e.on_machine_state(states, 1 * S)
    s_free = int(np.flatnonzero(table.machine == free)[0])
    docs = e.on_events(ev(s_free, Phase.OPEN, start_s=2), 2 * S)
    assert docs[0]["transition"] == "suppress" and docs[0]["suppressed_by"] == "off"
    docs = e.on_events(ev(sig(table, f"{C1}.oil_temp"), Phase.OPEN, start_s=2), 2 * S)
    assert docs[0]["transition"] == "open"  # its running signal has not said off: the detectors' guess does not count
    states[free] = opstate.RUNNING
    e.on_machine_state(states, 10 * S)
    assert [d["transition"] for d in e.tick(71 * S)] == ["unsuppress"]  # after start-up settling


def test_a_close_lost_over_max_events_still_clears_the_incident(
        dev: tuple[PlantConfig, SignalTable, MachineFacts]) -> None:
    """The detectors keep at most analytics.max_events events per frame: when a machine's sensors come back all at
    once, most CLOSE events are dropped. The alarm layer's tick resyncs with the detectors' alarm state, so the
    incident still clears (and says how many contributors it closed that way)."""
    from edge.detectors.analytics import EdgeAnalytics
    from edge.detectors.settings import AnalyticsSettings, QualitySettings

    plant, table, _ = dev
    an = EdgeAnalytics.from_table(table, AnalyticsSettings(max_events=2, quality=QualitySettings(bad_s=1.0)))
    out: list[dict[str, Any]] = []
    svc = AlarmService(table, plant, AlarmSettings(clear_delay_s=5), site="s", gateway="g", state_dir=None,
                       emit=out.extend, publish=lambda t, p: None, sidework=SideWork())
    svc.reconcile(an.alarm_open)
    n = len(table.ids)
    sig_all = np.arange(n, dtype=np.uint32)
    mine = np.flatnonzero(np.asarray(table.machine) == table.machine_ids.index(C1))[:8]
    rng = np.random.default_rng(3)
    dropped = 0
    for t in range(60):  # 1 Hz; C1's sensors go bad one a second from 10 s (each OPEN gets through), all come
        q = np.zeros(n, np.uint8)  # back at 25 s (6 of the 8 CLOSEs are dropped)
        v = rng.normal(size=n) + 50.0
        bad = mine[: max(0, min(t - 9, 8))] if t < 25 else mine[:0]
        q[bad], v[bad] = 2, np.nan
        r = an.process(np.full(n, (1000 + t) * S, dtype=np.int64), sig_all, v, q)
        dropped += r.events_dropped
        svc.frame(sig_all, v, q, r.events, (1000 + t) * S, r.machine_state)
        svc.tick((1000 + t) * S)
    trans = [(d["machine"], d["transition"]) for d in out if d["type"] == "incident"]
    assert dropped > 0 and (C1, "open") in trans, (dropped, trans)
    assert (C1, "clear") in trans, f"the incident stayed active: {trans}"
    assert svc.engine.stats.resynced_closes > 0 and not svc.engine.current


def test_an_open_lost_over_max_events_is_recovered(dev: tuple[PlantConfig, SignalTable, MachineFacts]) -> None:
    """Three machines' sensors go bad in the same second and the detectors keep one event per frame: two OPENs are
    dropped. The alarm layer's resync finds the alarms the detectors hold open that no incident holds and opens
    them (EdgeAnalytics.open_alarms -> IncidentEngine.recover); when the sensors return, all three clear."""
    from edge.detectors.analytics import EdgeAnalytics
    from edge.detectors.settings import AnalyticsSettings, QualitySettings

    plant, table, _ = dev
    an = EdgeAnalytics.from_table(table, AnalyticsSettings(max_events=1, quality=QualitySettings(bad_s=1.0)))
    out: list[dict[str, Any]] = []
    svc = AlarmService(table, plant, AlarmSettings(clear_delay_s=5), site="s", gateway="g", state_dir=None,
                       emit=out.extend, publish=lambda t, p: None, sidework=SideWork())
    svc.reconcile(an.alarm_open, an.open_alarms)
    n = len(table.ids)
    sig_all = np.arange(n, dtype=np.uint32)
    machines = [C1, "line1.press01", "line1.press02"]
    oil = np.array([sig(table, f"{m}.oil_temp") for m in machines])
    rng = np.random.default_rng(4)
    dropped = 0
    for t in range(60):  # bad from 5 s to 24 s, all three at once; resync every 10 s; clear delay 5 s
        q = np.zeros(n, np.uint8)
        v = rng.normal(size=n) + 50.0
        if 5 <= t < 25:
            q[oil], v[oil] = 2, np.nan
        r = an.process(np.full(n, (1000 + t) * S, dtype=np.int64), sig_all, v, q)
        dropped += r.events_dropped
        svc.frame(sig_all, v, q, r.events, (1000 + t) * S, r.machine_state)
        svc.tick((1000 + t) * S)
    inc = [d for d in out if d["type"] == "incident"]
    opened = {d["machine"]: d for d in inc if d["transition"] == "open"}
    assert dropped >= 2 and set(opened) == set(machines), (dropped, [(d["machine"], d["transition"]) for d in inc])
    recovered = [d for d in opened.values() if d["seq"] == SEQ_RESTART_GAP + 1]
    assert len(recovered) == 2 and all(d["kinds"] == ["bad"] for d in recovered)
    assert svc.engine.stats.resynced_opens == 2
    assert {d["machine"] for d in inc if d["transition"] == "clear"} == set(machines) and not svc.engine.current
    assert seqs_ok(inc)


def test_recover_after_a_restart_whose_detectors_were_ahead(dev: tuple[PlantConfig, SignalTable, MachineFacts]
                                                            ) -> None:
    """The detectors' checkpoint holds an alarm the alarm layer's does not (a kill between the two): the restored
    engine opens its incident (state suppression applies as to any OPEN), once; a signal of no machine is skipped."""
    _, table, facts = dev
    e = IncidentEngine(table, facts, AlarmSettings())
    rows = np.concatenate([ev(sig(table, f"{C1}.oil_temp"), Phase.OPEN, Kind.LEVEL, start_s=5, peak=0.7),
                           ev(0, Phase.OPEN, Kind.DEVICE, start_s=6, scope=Scope.DEVICE)])
    docs = e.recover(rows, 100 * S)
    first = [d for d in docs if d["machine"] == C1]
    assert first[0]["transition"] == "open" and first[0]["start_ns"] == 5 * S and first[0]["seq"] == SEQ_RESTART_GAP + 1
    served = {facts.machine_ids[m] for m in np.unique(table.machine[table.device == 0]).tolist()}
    assert {d["machine"] for d in docs} == served | {C1}
    assert e.recover(rows, 110 * S) == [] and e.stats.resynced_opens == 2
    orphan = np.flatnonzero(np.asarray(table.machine) < 0)
    if orphan.size:
        assert e.recover(ev(int(orphan[0]), Phase.OPEN, start_s=7), 120 * S) == []
        assert e.stats.resynced_opens == 2


def test_transition_log_records_what_was_sent_and_rotates(tmp_path: Path,
                                                          dev: tuple[PlantConfig, SignalTable, MachineFacts]) -> None:
    """alarms.transition_log_bytes: one line (id, seq, ts_ns, transition) per incident document handed to the lane,
    none for audit records; beyond the size the file moves to .1 and a new one starts."""
    plant, table, _ = dev
    sent: list[dict[str, Any]] = []
    s = AlarmService(table, plant, AlarmSettings(clear_delay_s=0, transition_log_bytes=200), site="s",
                     gateway="g", state_dir=tmp_path, emit=sent.extend, publish=lambda t, p: None,
                     sidework=SideWork())
    oil = sig(table, f"{C1}.oil_temp")
    for k in range(4):
        s.frame(np.zeros(0, np.uint32), np.zeros(0), np.zeros(0, np.uint8),
                np.concatenate([ev(oil, Phase.OPEN, start_s=10 * k), ev(oil, Phase.CLOSE, start_s=10 * k,
                                                                        end_s=10 * k + 1)]), (10 * k + 1) * S)
    s.command(cmd("ack", rid="q1", machine=C1))
    log = tmp_path / "incident_transitions.log"
    lines = [json.loads(x) for p in (log.with_name(log.name + ".1"), log) for x in p.read_text().splitlines()]
    inc = [d for d in sent if d["type"] == "incident"]
    assert [(x["id"], x["seq"], x["ts_ns"], x["transition"]) for x in lines] == [
        (d["id"], d["seq"], d["ts_ns"], d["transition"]) for d in inc][-len(lines):]
    assert log.with_name(log.name + ".1").exists() and log.stat().st_size <= 200 + 400


def test_detector_state_with_agents_owners_appended(dev: tuple[PlantConfig, SignalTable, MachineFacts]) -> None:
    """With agents on, the gateway's table has the agents' owners (a line, an area) as machines after the plant's,
    while the detectors' machine_state covers the plant's machines only: the state still reaches the plant's
    machines and nothing raises (it once failed every frame on the shapes, counted in alarm_errors_total)."""
    from edge.agents.base import DerivedSignal
    from edge.agents.table import with_derived
    from edge.kernels import opstate

    plant, table, _ = dev
    wide = with_derived(table, [DerivedSignal("line1", "energy_kwh", "kWh"), DerivedSignal("hall", "power_kw", "kW")])
    facts = MachineFacts.from_plant(plant, wide)
    assert len(wide.machine_ids) == len(table.machine_ids) + 2
    e = IncidentEngine(wide, facts, AlarmSettings(state_settle_s=60))
    free = next(m for m in range(len(table.machine_ids)) if facts.state_signal[m] < 0)
    states = np.full(len(table.machine_ids), opstate.UNKNOWN, dtype=np.int8)  # the detectors' size: the plant's
    states[free] = opstate.OFF
    e.on_machine_state(states, 1 * S)
    assert e.state[free] == STATE_OFF
    s_free = int(np.flatnonzero(table.machine == free)[0])
    docs = e.on_events(ev(s_free, Phase.OPEN, start_s=2), 2 * S)
    assert docs[0]["transition"] == "suppress" and docs[0]["suppressed_by"] == "off"


def _episode(e: IncidentEngine, a: int, t_s: int, docs: list[dict[str, Any]], kind: Kind = Kind.LEVEL) -> None:
    """One alarm on signal ``a`` from t_s to t_s + 5, and the timers until its incident cleared (clear delay 2 s)."""
    docs += e.on_events(ev(a, Phase.OPEN, kind, start_s=t_s), t_s * S)
    docs += e.on_events(ev(a, Phase.CLOSE, kind, start_s=t_s, end_s=t_s + 5), (t_s + 5) * S)
    docs += e.tick((t_s + 8) * S)


def test_a_steps_return_reactivates_its_incident(dev: tuple[PlantConfig, SignalTable, MachineFacts]) -> None:
    """The same signal alarming again within reactivate_window_s continues the cleared incident (one fault, one
    incident): an update, active and unacknowledged again, same id, next seq; the cloud's KPIs count it once."""
    from cloud.alarms import kpi

    _, table, facts = dev
    e = IncidentEngine(table, facts, AlarmSettings(clear_delay_s=2, reactivate_window_s=600))
    a, b = sig(table, f"{C1}.oil_temp"), sig(table, f"{C1}.discharge_pressure")
    docs: list[dict[str, Any]] = []
    _episode(e, a, 100, docs)  # the step's onset
    ack = e.apply(parse_command(cmd("ack", machine=C1)), 120 * S)  # the operator acknowledged it (retired)
    assert ack[0] == "applied" and e.find(docs[0]["id"]) is None
    docs += ack[2]
    _episode(e, a, 400, docs, Kind.CHANGE)  # its return to normal, 292 s after the clear
    assert [d["transition"] for d in docs] == ["open", "clear", "ack", "update", "clear"]
    assert len({d["id"] for d in docs}) == 1 and seqs_ok(docs)
    back = docs[3]
    assert back["active"] is True and back["acked"] is False and back["end_ns"] is None
    assert back["kinds"] == ["level", "change"] and back["start_ns"] == 100 * S
    assert e.stats.incidents_opened == 1 and e.stats.incidents_reactivated == 1
    assert e.stats.incidents_annunciated == 1
    assert e.find(docs[0]["id"]) is not None  # shown again and not acknowledged: listed until acknowledged
    # another signal of the machine is another problem: a new incident; so is the same signal after the window
    other: list[dict[str, Any]] = []
    _episode(e, b, 420, other)
    assert other[0]["transition"] == "open" and other[0]["id"] != docs[0]["id"]
    late: list[dict[str, Any]] = []
    e.tick(1100 * S)
    _episode(e, a, 1100, late)
    assert late[0]["transition"] == "open" and late[0]["id"] != docs[0]["id"]
    # EEMUA counts annunciated alarms: the re-activated incident once
    t = kpi.Transitions.from_rows(kpi.docs_rows("gw", docs + other + late))
    assert int(kpi.annunciated(t).sum()) == 3
    # same_machine: any alarm of the machine within the window continues its incident
    e2 = IncidentEngine(table, facts, AlarmSettings(clear_delay_s=2, reactivate_window_s=600,
                                                    reactivation="same_machine"))
    d2: list[dict[str, Any]] = []
    _episode(e2, a, 100, d2)
    _episode(e2, b, 200, d2)
    assert [d["transition"] for d in d2] == ["open", "clear", "update", "clear"] and len({d["id"] for d in d2}) == 1
    # a recurring alarm re-activates an incident for at most twice the window from its start, then opens a new one
    d3: list[dict[str, Any]] = []
    for t_s in (2000, 2500, 3000, 3500):
        _episode(e2, a, t_s, d3)
    assert [d["transition"] for d in d3 if d["active"]] == ["open", "update", "update", "open"]


def test_reactivation_survives_a_restart_and_respects_state_and_floods(
        dev: tuple[PlantConfig, SignalTable, MachineFacts]) -> None:
    """The checkpoint keeps what may re-activate (seq continues past the restart gap); a re-activated incident is
    suppressed by its machine's state like a new one, and counts in its area's flood window (operator load)."""
    _, table, facts = dev
    st = AlarmSettings(clear_delay_s=2, reactivate_window_s=600)
    e1 = IncidentEngine(table, facts, st)
    a = sig(table, f"{C1}.oil_temp")
    docs: list[dict[str, Any]] = []
    _episode(e1, a, 100, docs)
    e2 = IncidentEngine(table, facts, st)
    e2.restore(json.loads(json.dumps(e1.to_json())))
    more: list[dict[str, Any]] = []
    _episode(e2, a, 300, more)
    assert more[0]["transition"] == "update" and more[0]["id"] == docs[0]["id"]
    assert more[0]["seq"] > SEQ_RESTART_GAP and seqs_ok(docs + more)
    window = len(e2.floods[facts.area[facts.machine_ids.index(C1)]].window)
    assert window == 2  # both activations load the operator: flood control counts the re-activation too
    # the machine is switched off: its alarm re-activates the incident, suppressed by state (not shown)
    e2.on_state(*state(table, C1, 0.0), 350 * S)
    off = e2.on_events(ev(a, Phase.OPEN, start_s=351), 351 * S)
    assert [(d["transition"], d["active"], d["suppressed_by"]) for d in off] == [("update", True, "off")]
    assert e2.stats.incidents_reactivated == 2 and e2.stats.incidents_annunciated == 0  # shown before the restart
