"""Simulator units: register encoding against the edge codec, determinism, anomaly injection and labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.sources.modbus_codec import Codec
from edge.sources.modbus_plan import plan_device
from plantwire.plant import TYPE_ORDER, PlantConfig, RegisterType, SignalTable, Table, expand
from simulators.encoding import RegisterEncoder
from simulators.faults import KIND_ORDER, EventKind, Events, EventSchedule, LabelWriter
from simulators.physics import FAULT_WORD_FAILED, Physics, Role, WearPlan, machine_templates
from simulators.signals import SignalModel

MIXED: dict[str, Any] = {"signals": [
    {"name": "f32", "type": "float32", "base": 10, "amplitude": 5, "noise": 0.1},
    {"name": "f32_cdab", "type": "float32", "byte_order": "CDAB"},
    {"name": "f64_badc", "type": "float64", "byte_order": "BADC"},
    {"name": "f64_dcba", "type": "float64", "byte_order": "DCBA"},
    {"name": "i16", "type": "int16", "scale": 0.1},
    {"name": "i16_badc", "type": "int16", "scale": 0.1, "byte_order": "BADC"},
    {"name": "u16_dcba", "type": "uint16", "byte_order": "DCBA"},
    {"name": "i32", "type": "int32", "value_offset": -100.0},
    {"name": "u32_cdab", "type": "uint32", "byte_order": "CDAB", "scale": 0.01},
    {"name": "i64_dcba", "type": "int64", "byte_order": "DCBA"},
    {"name": "running", "type": "bit", "bit": 3},
    {"name": "alarm", "type": "bit", "bit": 12, "offset": 23},  # same status word as `running`
    {"name": "flag", "type": "bool"},
    {"name": "in_f32", "type": "float32", "table": "input", "scale": 2.0},
    {"name": "in_i16_cdab", "type": "int16", "table": "input", "byte_order": "CDAB"},
    {"name": "coil", "type": "bool", "table": "coil"},
    {"name": "di", "type": "bool", "table": "discrete"},
]}


def mixed_table(orders: tuple[str, ...] = ("ABCD", "CDAB", "BADC", "DCBA")) -> SignalTable:
    return expand(PlantConfig.model_validate({
        "site": "t",
        "templates": {"mixed": MIXED},
        "devices": [{"name": f"plc{i}", "protocol": "modbus", "port": 1000 + i, "unit_id": 1 + i, "byte_order": o}
                    for i, o in enumerate(orders)],
        "machines": [{"name": f"m{i}_{{i}}", "template": "mixed", "count": 3, "device": f"plc{i}"}
                     for i in range(len(orders))],
    }))


def decode_device(table: SignalTable, enc: RegisterEncoder, device: int) -> tuple[np.ndarray, np.ndarray]:
    """What the edge would read from the device: its read plan, block payloads sliced from the image."""
    plan = plan_device(table, device, max_gap=4)
    codec = Codec.from_table(plan, table)
    image = enc.images[device]
    for k, b in enumerate(plan.blocks):
        if b.table in (Table.COIL, Table.DISCRETE):
            bits = image.table(b.table)[b.start : b.start + b.count]
            payload = np.packbits(bits, bitorder="little").tobytes()
        else:
            payload = image.table(b.table)[2 * b.start : 2 * (b.start + b.count)].tobytes()
        assert codec.load(k, payload)
    return codec.signals.astype(np.int64), codec.decode().copy()


def expected(table: SignalTable, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The quantised value a reader should see: rounded/saturated integers, float32 rounding, bits."""
    out = np.empty(rows.size)
    for i, r in enumerate(rows.tolist()):
        rt = TYPE_ORDER[table.reg_type[r]]
        scale, off = table.scale[r], table.value_offset[r]
        raw = (values[i] - off) / scale
        if rt in (RegisterType.BIT, RegisterType.BOOL) or table.table[r] >= 2:
            out[i] = float(raw != 0) * scale + off
            continue
        if rt is RegisterType.FLOAT32:
            raw = float(np.float32(raw))
        elif rt is not RegisterType.FLOAT64:
            info = np.iinfo({RegisterType.INT16: np.int16, RegisterType.UINT16: np.uint16,
                             RegisterType.INT32: np.int32, RegisterType.UINT32: np.uint32,
                             RegisterType.INT64: np.int64}[rt])
            raw = float(min(max(np.rint(raw), float(info.min)), float(info.max)))
        out[i] = raw * scale + off
    return out


def test_encoder_round_trips_through_edge_codec_every_type_and_order() -> None:
    table = mixed_table()
    rows = np.arange(len(table))
    enc = RegisterEncoder(table, rows)
    rng = np.random.default_rng(7)
    for trial in range(5):
        values = rng.normal(0, 1000, len(table))
        values[trial::7] = rng.integers(0, 2, values[trial::7].size)  # exact zeros / ones for the bits
        enc.encode(values)
        for d in range(len(table.devices)):
            sig, got = decode_device(table, enc, d)
            np.testing.assert_allclose(got, expected(table, sig, values[sig]), rtol=1e-12, atol=1e-9)


def test_bits_sharing_a_status_word_do_not_clobber_each_other() -> None:
    table = mixed_table(("ABCD",))
    enc = RegisterEncoder(table, np.arange(len(table)))
    ids = table.ids
    running = [ids.index(f"m0_{i}.running") for i in (1, 2, 3)]
    alarm = [ids.index(f"m0_{i}.alarm") for i in (1, 2, 3)]
    for r_on, a_on in ((1, 0), (0, 1), (1, 1), (0, 0)):
        values = np.zeros(len(table))
        values[running] = r_on
        values[alarm] = a_on
        enc.encode(values)
        sig, got = decode_device(table, enc, 0)
        pos = {int(s): i for i, s in enumerate(sig)}
        assert [got[pos[r]] for r in running] == [r_on] * 3
        assert [got[pos[a]] for a in alarm] == [a_on] * 3


def test_encoder_saturates_integers_and_marks_dropouts() -> None:
    table = mixed_table(("DCBA",))
    enc = RegisterEncoder(table, np.arange(len(table)))
    values = np.full(len(table), 1e30)
    nan_rows = [table.ids.index("m0_1.i16"), table.ids.index("m0_1.f32"), table.ids.index("m0_1.u16_dcba")]
    values[nan_rows] = np.nan
    enc.encode(values)
    sig, got = decode_device(table, enc, 0)
    by_id = {table.ids[s]: v for s, v in zip(sig.tolist(), got.tolist(), strict=True)}
    assert by_id["m0_2.i16"] == pytest.approx(32767 * 0.1)
    assert by_id["m0_2.u16_dcba"] == 65535
    assert by_id["m0_1.i16"] == pytest.approx(-32768 * 0.1)  # vendor sentinel for a failed sensor
    assert by_id["m0_1.u16_dcba"] == 65535
    assert np.isnan(by_id["m0_1.f32"])


# -- values ------------------------------------------------------------------------------------
DEV_PLANT = Path(__file__).resolve().parents[1] / "configs" / "dev" / "plant.yaml"


def dev_table() -> SignalTable:
    from plantwire.configfile import load_plant

    return expand(load_plant(DEV_PLANT))


def test_values_are_deterministic_per_seed_and_tick() -> None:
    from plantwire.configfile import load_plant

    plant = load_plant(DEV_PLANT)
    table = expand(plant)
    rows = np.arange(len(table))

    def physics(seed: int) -> Physics:
        templates = machine_templates(plant)
        return Physics(table, templates, seed, 0, WearPlan.draw(templates, seed, 0.5))

    sched = EventSchedule(table, 3, rate_per_h=50.0)
    a = SignalModel(table, rows, 3, sched, physics(3))
    b = SignalModel(table, rows, 3, EventSchedule(table, 3, rate_per_h=50.0), physics(3))
    c = SignalModel(table, rows, 4, EventSchedule(table, 4, rate_per_h=50.0), physics(4))
    for k in (0, 1, 17, 3600):
        va = a.step(k, float(k)).copy()
        # b computes tick k without having seen the ticks before it: values depend on (seed, tick) only
        np.testing.assert_array_equal(va, b.step(k, float(k)))
        assert not np.array_equal(np.nan_to_num(va), np.nan_to_num(c.step(k, float(k))))
    ea, eb = sched.starting(0, 600), EventSchedule(table, 3, rate_per_h=50.0).starting(0, 600)
    assert len(ea) > 10
    np.testing.assert_array_equal(ea.signal, eb.signal)
    np.testing.assert_array_equal(ea.start_s, eb.start_s)


def test_values_stay_in_range_and_move() -> None:
    table = dev_table()
    rows = np.arange(len(table))
    model = SignalModel(table, rows, 0, None)
    seen = np.array([model.step(k, float(k)).copy() for k in range(0, 600, 5)])
    lo = np.where(np.isnan(table.low), -np.inf, table.low)
    hi = np.where(np.isnan(table.high), np.inf, table.high)
    assert ((seen >= lo) & (seen <= hi)).all()
    moving = (table.amplitude > 0) | (table.noise > 0)
    assert (seen.std(axis=0)[moving] > 0).all()
    assert (seen.std(axis=0)[~moving] == 0).all()
    # quantised to a sensor resolution: a power of ten just below a quarter of the noise
    noisy = np.flatnonzero(table.noise > 0)
    step = 10.0 ** np.floor(np.log10(table.noise[noisy] / 4))
    steps = seen[:, noisy] / step
    np.testing.assert_allclose(steps, np.rint(steps), atol=1e-6)
    assert (step < table.noise[noisy]).all()


def fixed_events(table: SignalTable, specs: list[tuple[str, EventKind, float, float, float]]) -> Events:
    return Events(
        signal=np.array([table.ids.index(s) for s, *_ in specs], dtype=np.int64),
        kind=np.array([KIND_ORDER.index(k) for _, k, *_ in specs], dtype=np.uint8),
        start_s=np.array([a for *_, a, _, _ in specs]), end_s=np.array([b for *_, b, _ in specs]),
        magnitude=np.array([m for *_, m in specs]), source=np.ones(len(specs), dtype=np.uint8),
    )


def test_each_anomaly_kind_changes_the_values_it_names_and_only_while_active() -> None:
    table = dev_table()
    rows = np.arange(len(table))
    sig = "line1.compressor01.discharge_temp"
    others = ["line1.compressor02.discharge_temp", "line1.compressor03.discharge_temp",
              "line1.compressor04.discharge_temp", "line1.compressor05.discharge_temp",
              "line1.compressor06.discharge_temp", "line1.compressor07.discharge_temp",
              "line1.compressor08.discharge_temp"]
    kinds = [EventKind.SPIKE, EventKind.STEP, EventKind.DRIFT, EventKind.STUCK, EventKind.NOISE_BURST,
             EventKind.DROPOUT, EventKind.OSCILLATION, EventKind.CALIBRATION_OFFSET]
    names = [sig, *others]
    fixed = fixed_events(table, [(names[i], k, 100.0, 160.0, 30.0) for i, k in enumerate(kinds)])
    clean = SignalModel(table, rows, 1, None)
    faulty = SignalModel(table, rows, 1, EventSchedule(table, 1, 0.0, fixed))
    idx = [table.ids.index(n) for n in names]
    for t in (50, 99, 160, 200):  # before and after: identical
        np.testing.assert_array_equal(clean.step(t, float(t)), faulty.step(t, float(t)))
    during = np.array([faulty.step(t, float(t))[idx] - clean.step(t, float(t))[idx] for t in range(101, 160, 3)])
    for i, kind in enumerate(kinds):
        col = during[:, i]
        if kind is EventKind.DROPOUT:
            assert np.isnan(col).all()
        elif kind in (EventKind.SPIKE, EventKind.STEP, EventKind.CALIBRATION_OFFSET):
            np.testing.assert_allclose(col, 30.0, atol=1e-9)
        elif kind is EventKind.DRIFT:
            assert (np.diff(col) > 0).all() and col[-1] > 25
        elif kind is EventKind.STUCK:
            vals = np.array([faulty.step(t, float(t))[idx[i]] for t in range(101, 160, 3)])
            assert np.ptp(vals) == 0
        else:
            assert np.abs(col).max() > 10 and np.ptp(col) > 10
    untouched = np.setdiff1d(rows, idx)
    np.testing.assert_array_equal(clean.step(130, 130.0)[untouched], faulty.step(130, 130.0)[untouched])


def test_labels_are_written_once_as_events_start(tmp_path: Path) -> None:
    table = dev_table()
    sched = EventSchedule(table, 5, rate_per_h=30.0)
    path = tmp_path / "labels.jsonl"
    model = SignalModel(table, np.arange(len(table)), 5, sched)
    writer = LabelWriter(path, table, sched, epoch_ns=10**18, clean_at=model.clean_at)
    for t in np.arange(0.0, 300.0, 0.7):
        writer.advance(float(t))
    writer.advance(299.0)  # going back writes nothing twice
    writer.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    ev = sched.starting(0.0, float(np.nextafter(np.arange(0.0, 300.0, 0.7)[-1], np.inf)))
    assert len(records) == len(ev) > 50
    assert [r["signal"] for r in records] == [table.ids[s] for s in ev.signal.tolist()]
    for r in records:
        assert r["start_ns"] < r["end_ns"] and r["start_ns"] >= 10**18
        assert r["machine"] == r["signal"].rsplit(".", 1)[0]
        assert r["kind"] in {k.value for k in EventKind}
        if r["kind"] == "stuck":
            t_s = (r["start_ns"] - 10**18) / 1e9
            row = table.ids.index(r["signal"])
            assert r["magnitude"] == pytest.approx(float(model.clean_at(np.array([t_s]), np.array([row]))[0]),
                                                   rel=1e-6)


# -- physics -----------------------------------------------------------------------------------
def dev_physics(seed: int = 2, wear: WearPlan | None = None, epoch_ns: int = 0) -> tuple[SignalTable, Physics]:
    from plantwire.configfile import load_plant

    plant = load_plant(DEV_PLANT)
    table = expand(plant)
    return table, Physics(table, machine_templates(plant), seed, epoch_ns, wear)


def test_load_drives_current_and_temperature_follows_with_a_lag() -> None:
    table, phys = dev_physics()
    model = SignalModel(table, np.arange(len(table)), 2, None, phys)
    ids = table.ids
    cur, powr, wind = (ids.index(f"line1.compressor01.{n}") for n in ("motor_current", "motor_power", "winding_temp_1"))
    t = np.arange(12 * 3600.0, 12 * 3600.0 + 1800.0, 5.0)  # midday: full shift, 6 duty cycles
    v = np.array([model.clean_at(np.full(3, s), np.array([cur, powr, wind])) for s in t])
    assert np.corrcoef(v[:, 0], v[:, 1])[0, 1] > 0.99  # one load drives both
    lags = range(0, 120)  # samples of 5 s: up to 600 s
    corr = [np.corrcoef(v[: len(t) - k, 0], v[k:, 2])[0, 1] for k in lags]
    best = int(np.argmax(corr))
    assert corr[best] > 0.95 and 5 <= best * 5.0 <= 300  # temperature follows current, later


def test_shifts_stop_or_slow_machines_at_night_and_counters_count_up() -> None:
    table, phys = dev_physics()
    rows = np.arange(len(table))
    noon = phys.evaluate(12 * 3600.0, rows, table.base.copy())
    night = phys.evaluate(3 * 3600.0, rows, table.base.copy())
    running = np.flatnonzero(phys.role == Role.RUNNING)
    load = np.flatnonzero(phys.role == Role.LOAD)
    assert (noon[running] == 1).all()
    assert (night[load].sum() < 0.6 * noon[load].sum())
    counters = np.flatnonzero(phys.role == Role.COUNTER)
    assert counters.size > 20
    later = phys.evaluate(12 * 3600.0 + 600.0, rows, table.base.copy())
    assert (later[counters] > noon[counters]).all()


def test_wear_raises_vibration_bands_and_bearing_temperature_until_failure_then_repair() -> None:
    from plantwire.configfile import load_plant

    templates = machine_templates(load_plant(DEV_PLANT))
    m = templates.index("compressor")
    wear = WearPlan(np.array([m]), np.array([0.0]), np.array([10 * 86400.0]), np.array([7200.0]), np.array([True]))
    table, phys = dev_physics(wear=wear)
    _, fresh = dev_physics()
    mid = table.machine_ids[m]
    rows = np.array([table.ids.index(f"{mid}.{n}") for n in
                     ("vibration_rms_1", "vibration_rms_2", "vibration_rms_4", "bearing_temp_1", "running",
                      "fault_word")])
    noon = 12 * 3600.0

    def at(day: float, p: Physics = phys) -> np.ndarray:
        return p.evaluate(np.full(rows.size, day * 86400 + noon), rows, np.zeros(rows.size))

    new, half, late = at(0, fresh), at(5), at(9)  # same time of day, same duty-cycle phase
    assert half[1] > 2 * new[1] and half[2] < 1.5 * new[2]  # the bearing band rises first, HF late
    assert late[0] > 2.5 * new[0] and late[2] > 3 * new[2] and late[3] > new[3] + 10
    assert phys.rul_s(5 * 86400.0)[0] == pytest.approx(5 * 86400.0)
    failed = phys.evaluate(np.full(rows.size, 10 * 86400.0 + 60), rows, np.zeros(rows.size))
    assert failed[4] == 0 and failed[5] == FAULT_WORD_FAILED and failed[0] < new[0]
    repaired = at(11)
    np.testing.assert_allclose(repaired[[0, 1, 2, 4, 5]], at(11, fresh)[[0, 1, 2, 4, 5]])


def test_wear_labels_carry_the_true_rul(tmp_path: Path) -> None:
    table, _ = dev_physics()
    wear = WearPlan(np.array([0]), np.array([100.0]), np.array([1000.0]), np.array([50.0]), np.array([True]))
    _, phys = dev_physics(wear=wear)
    sched = EventSchedule(table, 0, 0.0)
    writer = LabelWriter(tmp_path / "l.jsonl", table, sched, epoch_ns=0, physics=phys, rul_period_s=100.0)
    for t in range(0, 1200, 7):
        writer.advance(float(t))
    writer.close()
    recs = [json.loads(x) for x in (tmp_path / "l.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in recs][:2] == ["wear", "rul"] and recs[-1]["kind"] == "failure"
    assert recs[0]["rul_s"] == 900.0 and recs[0]["start_ns"] == 100 * 10**9 and recs[0]["end_ns"] == 1000 * 10**9
    ruls = [r for r in recs if r["kind"] == "rul"]
    assert len(ruls) == 50  # at least 50 per life: the period shrinks from 100 s to 900 s / 50
    for r in ruls:
        assert r["rul_s"] == pytest.approx(1000.0 - r["ts_ns"] / 1e9)
    assert recs[-1]["start_ns"] == 1000 * 10**9 and recs[-1]["end_ns"] == 1050 * 10**9


def test_micro_leak_raises_decay_and_steepens_the_pressure_decay() -> None:
    table, phys = dev_physics()
    mid = "line2.leak_test01"
    base = 12 * 3600  # the epoch is midnight: t is the time of day
    fixed = fixed_events(table, [(f"{mid}.decay_rate", EventKind.MICRO_LEAK, base + 50.0, base + 1000.0, 60.0)])
    clean = SignalModel(table, np.arange(len(table)), 0, None, phys)
    leaky = SignalModel(table, np.arange(len(table)), 0, EventSchedule(table, 0, 0.0, fixed), phys)
    ids = table.ids
    dec, leak, press = (ids.index(f"{mid}.{n}") for n in ("decay_rate", "leak_rate", "test_pressure"))
    diffs = np.array([leaky.step(k, float(k))[[dec, leak, press]] - clean.step(k, float(k))[[dec, leak, press]]
                      for k in range(base + 100, base + 200)])
    np.testing.assert_allclose(diffs[:, 0], 60.0, atol=1e-9)
    np.testing.assert_allclose(diffs[:, 1], 3.0, atol=1e-9)
    assert diffs[:, 2].min() < -60.0 * 1e-5 * 5 and diffs[:, 2].max() <= 0  # lower pressure while measuring


def test_ring_history_keeps_the_last_values_in_order_and_pages() -> None:
    import asyncio
    import datetime as dt

    from asyncua import ua

    from simulators.history import RingHistory

    nodes = [ua.NodeId(f"n{i}", 2) for i in range(3)]
    hist = RingHistory(nodes, capacity=5, max_history_data_response_size=3)
    t0 = 1_700_000_000 * 10**9
    for k in range(8):  # node 0 every tick, node 1 on even ticks (only changed values are recorded)
        rows = np.array([0, 1]) if k % 2 == 0 else np.array([0])
        hist.record(t0 + k * 10**9, rows, np.full(rows.size, float(k)), np.where(rows == 1, 0, 0) if k != 6 else
                    np.array([int(ua.StatusCodes.BadSensorFailure), 0]))

    def at(k: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(t0 / 1e9 + k, dt.UTC)

    async def read(node: int, start: dt.datetime | None, end: dt.datetime | None, nb: int = 0) -> tuple[list[float],
                                                                                                         object]:
        dvs, cont = await hist.read_node_history(nodes[node], start, end, nb)
        return [dv.Value.Value if dv.StatusCode.is_good() else "bad" for dv in dvs], cont

    async def main() -> None:
        assert await read(0, at(0), at(100)) == ([3.0, 4.0, 5.0], at(6))  # ring of 5: ticks 3..7, paged by 3
        assert await read(0, at(6), at(100)) == (["bad", 7.0], None)
        assert await read(0, at(100), at(0), nb=2) == ([7.0, "bad"], None)  # start > end: newest first
        assert await read(1, at(0), at(100)) == ([0.0, 2.0, 4.0], at(6))
        assert await read(2, at(0), at(100)) == ([], None)
        assert (await hist.read_node_history(ua.NodeId("other", 2), at(0), at(9), 0)) == ([], None)

    asyncio.run(main())


@pytest.mark.integration
def test_modbus_slave_serves_several_units_and_misbehaves_on_demand() -> None:
    import asyncio
    import time

    from pymodbus.client import AsyncModbusTcpClient

    from plantwire.ports import free_port
    from simulators.modbus_server import ModbusSlave, UnitMode

    table = mixed_table(("ABCD", "DCBA"))
    enc = RegisterEncoder(table, np.arange(len(table)))
    values = np.arange(len(table), dtype=np.float64) % 2
    enc.encode(values)
    port = free_port()
    slave = ModbusSlave("127.0.0.1", port, {1: enc.images[0], 2: enc.images[1]})

    async def read(client: AsyncModbusTcpClient, unit: int) -> tuple[Any, float]:
        t0 = time.monotonic()
        try:
            r: Any = await client.read_holding_registers(0, count=8, device_id=unit)
        except Exception as exc:
            r = exc
        return r, time.monotonic() - t0

    async def main() -> None:
        await slave.start()
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=0.5, retries=0)
        await client.connect()
        try:
            r1, _ = await read(client, 1)
            r2, _ = await read(client, 2)
            assert r1.registers == [int.from_bytes(enc.images[0].holding[2 * i : 2 * i + 2], "big") for i in range(8)]
            assert r2.registers == [int.from_bytes(enc.images[1].holding[2 * i : 2 * i + 2], "big") for i in range(8)]
            bits = await client.read_coils(0, count=3, device_id=2)
            assert not bits.isError()
            state = slave.store.state[1]
            state.mode, state.exception_code = UnitMode.EXCEPTION, 6
            r, _ = await read(client, 1)
            assert r.isError() and r.exception_code == 6
            assert not (await read(client, 2))[0].isError()  # the other unit is unaffected
            state.mode, state.delay_s = UnitMode.SLOW, 0.3
            r, took = await read(client, 1)
            assert not r.isError() and took >= 0.28
            state.mode = UnitMode.TIMEOUT
            r, took = await read(client, 1)
            assert not hasattr(r, "registers") and took >= 0.45  # no answer at all
            state.mode = UnitMode.NORMAL
            client.close()
            await slave.stop()  # a dead PLC: connections refused
            dead = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=0.5, retries=0)
            assert not await dead.connect()
            dead.close()
            await slave.start()
            back = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=0.5, retries=0)
            assert await back.connect()
            assert not (await read(back, 1))[0].isError()
            back.close()
        finally:
            client.close()
            await slave.stop()

    asyncio.run(main())
    assert slave.store.stats.requests >= 8 and slave.store.stats.exceptions == 1 and slave.store.stats.swallowed == 1
