"""Model bundles on the edge (issue 17): reassembly, verification, compatibility, warm swaps, and the
manager's life cycle (shadow, promote, refuse, roll back, resume) against a real Mosquitto."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import MqttSettings
from edge.detectors.analytics import EdgeAnalytics
from edge.detectors.machine import same_model
from edge.detectors.settings import AnalyticsSettings
from edge.detectors.stack import DetectorStack
from edge.kernels import pca
from edge.modelstore import compat, convert, topics
from edge.modelstore.assembly import SlotAssembly, parse_head
from edge.modelstore.manager import ModelManager
from edge.modelstore.reader import read_verified
from edge.modelstore.reasons import BundleRefused, Refusal
from edge.modelstore.settings import ModelStoreSettings
from edge.modelstore.shadow import ShadowMachine
from edge.sinks.mqtt import MqttPublisher
from plantwire import wire
from plantwire.configfile import load_plant
from plantwire.plant import expand
from tests.modelbundles import deliveries, fit_template, machine_bundle

ROOT = Path(__file__).resolve().parent.parent
DEV_PLANT = ROOT / "configs" / "dev" / "plant.yaml"


@pytest.fixture(scope="module")
def dev() -> tuple:
    plant = load_plant(DEV_PLANT)
    table = expand(plant)
    stack = DetectorStack.from_table(table)
    view = compat.PlantView.build(plant, table, stack.m_ptr, stack.m_sig)
    return plant, table, view


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _pub_pem(key: Ed25519PrivateKey, path: Path) -> Path:
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


# -- reassembly ------------------------------------------------------------------------------------


def test_chunks_reassemble_in_any_order_and_stale_chunks_are_ignored() -> None:
    data = os.urandom(600_000)
    head, chunks = deliveries(data, "v1")
    _, other_chunks = deliveries(os.urandom(1000), "v0")
    asm = SlotAssembly()
    asm.set_head(parse_head(head, 10**7))
    assert asm.add_chunk(0, other_chunks[0]) is None  # another version's retained chunk
    assert asm.stale_chunks == 1
    assert len(chunks) == 3
    assert asm.add_chunk(2, chunks[2]) is None
    assert asm.add_chunk(0, chunks[0]) is None
    assert asm.add_chunk(1, chunks[1]) == data
    assert asm.add_chunk(1, chunks[1]) is None  # a re-delivery after completion changes nothing


def test_chunk_and_head_refusals_name_their_reason() -> None:
    data = os.urandom(300_000)
    head, chunks = deliveries(data, "v1")
    with pytest.raises(BundleRefused) as e:
        parse_head(head, 100_000)
    assert e.value.reason is Refusal.TOO_LARGE
    for bad in (b"{", b"[]", json.dumps({"version": "v", "sha256": "x", "size": 1, "chunks": 1,
                                          "chunk_bytes": 1}).encode()):
        with pytest.raises(BundleRefused) as e:
            parse_head(bad, 10**7)
        assert e.value.reason is Refusal.BAD_HEAD
    assert parse_head(b"", 10**7) is None  # an empty retained head clears the slot
    asm = SlotAssembly()
    asm.set_head(parse_head(head, 10**7))
    with pytest.raises(BundleRefused) as e:
        asm.add_chunk(0, chunks[0][:-1])
    assert e.value.reason is Refusal.SIZE_MISMATCH
    asm = SlotAssembly()
    asm.set_head(parse_head(head, 10**7))
    flipped = chunks[1][:40] + bytes([chunks[1][40] ^ 1]) + chunks[1][41:]
    asm.add_chunk(0, chunks[0])
    with pytest.raises(BundleRefused) as e:
        asm.add_chunk(1, flipped)
    assert e.value.reason is Refusal.SHA256_MISMATCH


# -- verification and compatibility ----------------------------------------------------------------


def test_bundle_must_match_the_templates_machine_signals_in_order(dev: tuple, key: Ed25519PrivateKey) -> None:
    view = dev[2]
    rng = np.random.default_rng(1)
    members = view.members["press"]
    assert len(members) < len(view.templates["press"])  # state and counter signals are not members
    model = fit_template(rng, members)
    b = read_verified(machine_bundle(model, "press", "v1", key), key.public_key())
    machines = compat.check(b, view)
    assert machines.tolist() == [m for m, t in enumerate(view.machine_template) if t == "press"]
    assert same_model(convert.machine_model(b), model)

    cases = {
        Refusal.SIGNAL_MISMATCH: machine_bundle(fit_template(rng, view.templates["press"]), "press", "v2", key),
        Refusal.UNKNOWN_TEMPLATE: machine_bundle(model, "lathe", "v3", key),
    }
    swapped = [members[1], members[0], *members[2:]]
    cases_order = machine_bundle(fit_template(rng, swapped), "press", "v5", key)
    for reason, data in cases.items():
        with pytest.raises(BundleRefused) as e:
            compat.check(read_verified(data, key.public_key()), view)
        assert e.value.reason is reason, e.value
    with pytest.raises(BundleRefused) as e:
        compat.check(read_verified(cases_order, key.public_key()), view)
    assert e.value.reason is Refusal.SIGNAL_MISMATCH and "order" in e.value.detail


def test_tampered_or_foreign_bundles_are_refused_before_use(key: Ed25519PrivateKey) -> None:
    model = fit_template(np.random.default_rng(2), ["a", "b", "c"])
    data = machine_bundle(model, "press", "v1", key)
    i = data.index(b'"limit":') + 9  # a digit of a mode's alarm limit, inside the signed manifest
    tampered = data[:i] + bytes([data[i] ^ 1]) + data[i + 1:]
    with pytest.raises(BundleRefused) as e:
        read_verified(tampered, key.public_key())
    assert e.value.reason in (Refusal.BAD_SIGNATURE, Refusal.BAD_ARCHIVE)  # the zip CRC may catch it first
    with pytest.raises(BundleRefused) as e:
        read_verified(data, Ed25519PrivateKey.generate().public_key())
    assert e.value.reason in (Refusal.UNKNOWN_KEY, Refusal.BAD_SIGNATURE)
    with pytest.raises(BundleRefused) as e:
        read_verified(data, None)
    assert e.value.reason is Refusal.NO_KEY


# -- warm swap between frames ----------------------------------------------------------------------


def _frames(rng: np.random.Generator, n_frames: int, d: int, n_machines: int, period_ns: int):
    for f in range(n_frames):
        n = d * n_machines
        base = rng.normal(size=(n_machines, 2)) @ rng.normal(size=(2, d))
        value = (base + 0.3 * rng.normal(size=(n_machines, d))).ravel()
        yield (np.arange(n, dtype=np.uint32), value, np.zeros(n, dtype=np.uint8),
               np.full(n, (f + 1) * period_ns, dtype=np.int64))


def test_promotion_swaps_between_frames_and_keeps_reusable_state_warm() -> None:
    """After a promotion the active stage scores exactly as the shadow did (its state, not a cold start),
    and the machine whose model did not change scores exactly as if nothing had happened."""
    d, n_m = 4, 2
    rng = np.random.default_rng(3)
    names = [f"s{i}" for i in range(d)]
    a, b = fit_template(rng, names, lags=1), fit_template(rng, names, lags=1, shift=0.5)
    settings = AnalyticsSettings.model_validate({"machine": {"period_s": 1.0}})
    machine_of = np.repeat(np.arange(n_m), d)
    active = DetectorStack(d * n_m, machine_of, settings, machine_models=[a, a])
    reference = DetectorStack(d * n_m, machine_of, settings, machine_models=[a, a])  # never swapped
    shadow = ShadowMachine(active, np.array([0]), b, "vB", 0.0)
    frames = list(_frames(np.random.default_rng(4), 40, d, n_m, 1_000_000_000))
    for sig, val, q, ts in frames[:20]:
        active.process(sig, val, q, ts)
        reference.process(sig, val, q, ts)
        shadow.process(sig, val, q, int(ts.max()))
    assert shadow.ticks > 0
    active.machine_stage.swap_models(np.array([0]), b, warm_from=shadow.stage)
    for sig, val, q, ts in frames[20:]:
        active.process(sig, val, q, ts)
        reference.process(sig, val, q, ts)
        shadow.process(sig, val, q, int(ts.max()))
        ms, rs, ss = active.machine_stage, reference.machine_stage, shadow.stage
        got = dict(zip(ms.tick_m[:2].tolist(), ms.tick_s[:2].tolist(), strict=True))
        assert got[0] == dict(zip(ss.tick_m[:1].tolist(), ss.tick_s[:1].tolist(), strict=True))[0]
        assert got[1] == dict(zip(rs.tick_m[:2].tolist(), rs.tick_s[:2].tolist(), strict=True))[1]
        assert got[0] > 0.0  # scoring from the first frame after the swap: no lag refill
    # Without a warm source a changed model starts its lag ring afresh; the same model keeps its state.
    stage = active.machine_stage
    filled = stage.bank.mach_i[:, pca.MI_FILLED].copy()
    assert (filled > 0).all()
    stage.swap_models(np.array([1]), a)
    assert (stage.bank.mach_i[:, pca.MI_FILLED] == filled).all()
    stage.swap_models(np.array([1]), b)
    assert stage.bank.mach_i[1, pca.MI_FILLED] == 0 and stage.bank.mach_i[0, pca.MI_FILLED] == filled[0]


# -- the manager on a real broker ------------------------------------------------------------------


class _Broker:
    """A plain paho client for the test's side: publish retained bundles and commands, collect results."""

    def __init__(self, host: str, port: int, result_topic: str) -> None:
        self.results: list[dict] = []
        self.cv = threading.Condition()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:6]}")
        self.c.on_message = self._msg
        self.c.connect(host, port)
        self.c.subscribe(result_topic, qos=1)
        self.c.loop_start()

    def _msg(self, client, userdata, message) -> None:
        with self.cv:
            self.results.append(json.loads(message.payload))
            self.cv.notify_all()

    def offer(self, scope: topics.Scope, site: str, gw: str, kind: str, template: str, data: bytes,
              version: str) -> None:
        head, chunks = deliveries(data, version, chunk_bytes=4096)
        for i, c in enumerate(chunks):  # chunks first, then the head that announces them
            t = topics.chunk_topic(scope, site, gw, kind, template, i)
            self.c.publish(t, c, qos=1, retain=True).wait_for_publish()
        self.c.publish(topics.head_topic(scope, site, gw, kind, template), head, qos=1, retain=True).wait_for_publish()

    def command(self, site: str, gw: str, action: str, template: str) -> dict:
        rid = uuid.uuid4().hex
        doc = {"id": rid, "actor": "tester", "ts_ns": time.time_ns(), "action": action, "kind": "machine_pca",
               "template": template, "reason": "test"}
        self.c.publish(topics.command_topic(site, gw), json.dumps(doc).encode(), qos=1).wait_for_publish()
        with self.cv:
            assert self.cv.wait_for(lambda: any(r["id"] == rid for r in self.results), timeout=30)
            return next(r for r in self.results if r["id"] == rid)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


async def _until(cond, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.mark.integration
def test_manager_shadows_promotes_refuses_rolls_back_and_resumes(mosquitto, tmp_path: Path, dev: tuple,
                                                                  key: Ed25519PrivateKey) -> None:
    plant, table, view = dev
    gw, site = "gw-t", table.site
    settings = ModelStoreSettings(public_key_file=_pub_pem(key, tmp_path / "signer.pub"),
                                  auto_promote_after_s=None, rollback_max_rate=None)
    rng = np.random.default_rng(5)
    members = view.members["press"]
    good1 = machine_bundle(fit_template(rng, members), "press", "20261203T1100-a", key)
    good2 = machine_bundle(fit_template(rng, members, shift=1.0), "press", "20261203T1200-b", key)
    wrong = machine_bundle(fit_template(rng, view.templates["press"]), "press", "20261203T1300-c", key)
    i = good2.index(b'"limit":') + 9
    tampered = good2[:i] + bytes([good2[i] ^ 1]) + good2[i + 1:]
    state = tmp_path / "state"
    press = [m for m, t in enumerate(view.machine_template) if t == "press"]
    audit: list[dict] = []
    side = _Broker(mosquitto.host, mosquitto.port, topics.result_topic(site, gw))

    async def one_run(steps) -> ModelManager:
        analytics = EdgeAnalytics.from_table(table, AnalyticsSettings())
        pub = MqttPublisher(MqttSettings(host=mosquitto.host, port=mosquitto.port), f"edge-{uuid.uuid4().hex[:6]}")
        mgr = ModelManager(settings, gateway_id=gw, plant=plant, table=table, analytics=analytics, state_dir=state,
                           base_dir=None, publisher=pub, emit=lambda docs: audit.extend(
                               wire.decode_events(wire.encode_events(gw, 1, docs))[2]))  # as the events lane does
        mgr.start()
        pub.start()
        task = asyncio.create_task(mgr.run(), name="models")
        try:
            await steps(mgr)
        finally:
            task.cancel()
            pub.stop()
        return mgr

    async def first(mgr: ModelManager) -> None:
        assert mgr.machine_version[press[0]] is None  # no model yet: the stage does not score presses
        side.offer(topics.Scope.SITE, site, topics.ALL, "machine_pca", "press", good1, "20261203T1100-a")
        await _until(lambda: "machine_pca/press" in mgr.shadows)
        assert mgr.health_doc()["models"]["machine_pca/press"] == {
            "active": None, "shadow": "20261203T1100-a", "previous": None}
        r = await asyncio.to_thread(side.command, site, gw, "promote", "press")
        assert r["outcome"] == "applied" and r["service"] == "models", r
        assert {mgr.machine_version[m] for m in press} == {"20261203T1100-a"}
        # Refusals: each with its reason, on the health document and in the counter; the active model stays.
        side.offer(topics.Scope.GATEWAY, site, gw, "machine_pca", "press", tampered, "20261203T1200-b")
        await _until(lambda: mgr.refusals.get("bad-signature", 0) + mgr.refusals.get("bad-archive", 0) == 1)
        side.offer(topics.Scope.GATEWAY, site, gw, "machine_pca", "press", wrong, "20261203T1300-c")
        await _until(lambda: mgr.refusals.get("signal-mismatch", 0) == 1)
        doc = mgr.health_doc()
        assert doc["model_refusals_total"] == 2
        assert [r["reason"] for r in doc["model_refusals"]][-1] == "signal-mismatch"
        assert doc["models"]["machine_pca/press"]["active"] == "20261203T1100-a"
        # The gateway's own slot wins over the site's: the next good bundle there goes to shadow.
        side.offer(topics.Scope.GATEWAY, site, gw, "machine_pca", "press", good2, "20261203T1200-b")
        await _until(lambda: mgr.health_doc()["models"]["machine_pca/press"]["shadow"] == "20261203T1200-b")
        r = await asyncio.to_thread(side.command, site, gw, "promote", "press")
        assert r["outcome"] == "applied"
        assert mgr.health_doc()["models"]["machine_pca/press"] == {
            "active": "20261203T1200-b", "shadow": None, "previous": "20261203T1100-a"}
        r = await asyncio.to_thread(side.command, site, gw, "rollback", "press")
        assert r["outcome"] == "applied", r
        assert {mgr.machine_version[m] for m in press} == {"20261203T1100-a"}
        r = await asyncio.to_thread(side.command, site, gw, "promote", "press")
        assert r["outcome"] == "refused"  # nothing in shadow: the rolled-back version is not taken again

    try:
        mgr = asyncio.run(one_run(first))
        stored = sorted(p.name for p in (state / "models" / "machine_pca" / "press").glob("*.pwbundle"))
        assert "20261203T1100-a.pwbundle" in stored
        assert [(a["action"], a["outcome"]) for a in audit] == [
            ("promote", "applied"), ("promote", "applied"), ("rollback", "applied"), ("promote", "refused")]
        assert all(a["type"] == "audit" and a["service"] == "models" and a["actor"] == "tester" for a in audit)
        assert sum(mgr.refusals.values()) == 2

        async def second(mgr: ModelManager) -> None:  # a restart resumes the active version from disk
            assert {mgr.machine_version[m] for m in press} == {"20261203T1100-a"}
            assert mgr.health_doc()["models"]["machine_pca/press"]["active"] == "20261203T1100-a"
            await _until(lambda: len(mgr._offers.get("machine_pca/press", {})) == 2)  # retained offers again
            assert "machine_pca/press" not in mgr.shadows  # the retired version stays out of shadow

        asyncio.run(one_run(second))
    finally:
        side.close()


def test_auto_promotion_and_the_post_promotion_health_check_roll_back(tmp_path: Path, dev: tuple,
                                                                       key: Ed25519PrivateKey) -> None:
    """In shadow for auto_promote_after_s within the rate bound: promoted by the edge itself; then more machine
    alarms than rollback_max_rate within the watch: rolled back to the config's models, both audited."""
    plant, table, view = dev
    now = [1000.0]
    settings = ModelStoreSettings(public_key_file=_pub_pem(key, tmp_path / "signer.pub"), auto_promote_after_s=600,
                                  auto_promote_max_rate=0.5, watch_s=1800, min_watch_s=60, rollback_max_rate=2.0)
    audit: list[dict] = []
    # Not started: nothing here goes over the network (no command results in this test).
    pub = MqttPublisher(MqttSettings(host="127.0.0.1", port=1), "unused")
    mgr = ModelManager(settings, gateway_id="gw-t", plant=plant, table=table,
                       analytics=EdgeAnalytics.from_table(table, AnalyticsSettings()), state_dir=tmp_path / "state",
                       base_dir=None, publisher=pub, emit=audit.extend, clock=lambda: now[0])
    version = "20261203T1400-auto"
    data = machine_bundle(fit_template(np.random.default_rng(6), view.members["press"]), "press", version, key)
    head, chunks = deliveries(data, version, chunk_bytes=4096)
    base = topics.head_topic(topics.Scope.GATEWAY, table.site, "gw-t", "machine_pca", "press")[:-len("head")]

    async def deliver() -> None:
        mgr.start()  # key, stored slots, subscriptions (recorded only: the publisher is not started)
        await mgr._handle(base + "head", head)
        for i, c in enumerate(chunks):
            await mgr._handle(f"{base}chunk/{i}", c)

    asyncio.run(deliver())
    key_ = "machine_pca/press"
    assert mgr.shadows[key_].version == version
    now[0] += 599.0
    mgr.tick()
    assert key_ in mgr.shadows  # not yet
    now[0] += 2.0
    mgr.tick()
    assert mgr.health_doc()["models"][key_] == {"active": version, "shadow": None, "previous": None}
    assert audit[-1]["action"] == "promote" and audit[-1]["actor"] == "edge" and audit[-1]["outcome"] == "applied"
    press = np.array([m for m, t in enumerate(view.machine_template) if t == "press"])
    # Three machine alarms on presses within two minutes: 3 / (8 machines x 2/60 h) = 11 per machine-hour > 2.
    from edge.detectors.events import EVENT_DTYPE, Phase, Scope
    from edge.kernels.kinds import Kind
    ev = np.zeros(3, dtype=EVENT_DTYPE)
    ev["scope"], ev["phase"], ev["kind"], ev["entity"] = Scope.MACHINE, Phase.OPEN, int(Kind.MACHINE), press[:3]
    empty = np.zeros(0, dtype=np.uint32)
    mgr.after_frame(empty, np.zeros(0), np.zeros(0, np.uint8), 0, ev)
    now[0] += 30.0
    mgr.tick()
    assert mgr.health_doc()["models"][key_]["active"] == version  # min_watch_s not reached: one burst is no rate
    now[0] += 90.0
    mgr.tick()
    assert mgr.health_doc()["models"][key_] == {"active": None, "shadow": None, "previous": None}
    assert {mgr.machine_version[m] for m in press.tolist()} == {None}  # back to the config (no model here)
    assert audit[-1]["action"] == "rollback" and "health check" in audit[-1]["detail"]
    assert mgr.rollbacks == {"health-check": 1}


def test_signal_baseline_sets_range_limits_the_plant_file_leaves_open_and_rolls_back(
        tmp_path: Path, dev: tuple, key: Ed25519PrivateKey) -> None:
    from edge.kernels import signal_stack
    from edge.kernels.kinds import Kind
    from plantwire import bundle as pb

    plant, table, view = dev
    names = [n for n, t in plant.templates["press"].expanded() if t.kind != "state"]
    low, high = np.arange(len(names), dtype=float), np.arange(len(names), dtype=float) + 10.0
    manifest = {"kind": "signal_baseline", "template": "press", "signals": names, "modes": None, "fitted_from_ns": 0,
                "fitted_to_ns": 1, "rows": 100, "data_sha256": "0" * 64, "validation": {}, "version": "sb-1",
                "software": "test", "created_ns": 1}
    data = pb.build(manifest, {"low": low, "high": high, "count": np.full(len(names), 100)}, key)
    settings = ModelStoreSettings(public_key_file=_pub_pem(key, tmp_path / "signer.pub"))
    analytics = EdgeAnalytics.from_table(table, AnalyticsSettings())
    mgr = ModelManager(settings, gateway_id="gw-t", plant=plant, table=table, analytics=analytics,
                       state_dir=tmp_path / "state", base_dir=None,
                       publisher=MqttPublisher(MqttSettings(host="127.0.0.1", port=1), "unused"), emit=lambda d: None)
    head, chunks = deliveries(data, "sb-1")
    base = topics.head_topic(topics.Scope.SITE, table.site, "gw-t", "signal_baseline", "press")[:-len("head")]

    async def deliver() -> None:
        mgr.start()
        await mgr._handle(base + "head", head)
        for i, c in enumerate(chunks):
            await mgr._handle(f"{base}chunk/{i}", c)

    asyncio.run(deliver())
    assert mgr.health_doc()["models"]["signal_baseline/press"]["active"] == "sb-1"  # no shadow for limits
    cfg = analytics.stack.cfg
    m = int(view.machines["press"][0])
    set_rows = []
    for i, name in enumerate(names):
        r = table.ids.index(f"{table.machine_ids[m]}.{name}")
        plant_lo = table.low[r]
        if table.kinds[r] == "counter" or np.isfinite(plant_lo):
            assert cfg[r, signal_stack.C_LOW] == plant_lo or (np.isnan(plant_lo) and np.isnan(cfg[r, 0]))
        else:
            assert (cfg[r, signal_stack.C_LOW], cfg[r, signal_stack.C_HIGH]) == (low[i], high[i])
            assert mgr.event_version(0, r, 1, int(Kind.RANGE)) == "sb-1"
            set_rows.append(r)
    assert set_rows
    assert mgr.rollback("signal_baseline/press", "command")[0] == "applied"
    assert all(np.isnan(cfg[r, signal_stack.C_LOW]) for r in set_rows)
    assert mgr.event_version(0, set_rows[0], 1, int(Kind.RANGE)) is None


def test_rul_bundle_swaps_in_without_shadow_and_rolls_back_to_the_config_model(
        tmp_path: Path, dev: tuple, key: Ed25519PrivateKey) -> None:
    from plantwire import bundle as pb
    from tests.test_rul import _model

    plant, table, _ = dev
    names = [n for n, t in plant.templates["press"].expanded() if t.kind not in ("state", "counter")][:5]
    inputs = dict(zip(["op0", "op1", "s0", "s1", "s2"], names, strict=True))
    config_model, shipped = _model(seed=1), _model(seed=2)
    config_model.save(tmp_path / "rul.npz")
    analytics = EdgeAnalytics.from_table(table, AnalyticsSettings.model_validate(
        {"health": {"model": str(tmp_path / "rul.npz"), "machines": ["line1.press*"], "inputs": inputs}}))
    shipped.save(tmp_path / "shipped.npz")
    with np.load(tmp_path / "shipped.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    manifest = {"kind": "rul", "template": "press", "signals": shipped.input_names(), "modes": None,
                "fitted_from_ns": 0, "fitted_to_ns": 1, "rows": 10, "data_sha256": "0" * 64, "validation": {},
                "version": "rul-2", "software": "test", "created_ns": 1}
    data = pb.build(manifest, arrays, key)
    audit: list[dict] = []
    mgr = ModelManager(ModelStoreSettings(public_key_file=_pub_pem(key, tmp_path / "signer.pub")), gateway_id="gw-t",
                       plant=plant, table=table, analytics=analytics, state_dir=tmp_path / "state", base_dir=None,
                       publisher=MqttPublisher(MqttSettings(host="127.0.0.1", port=1), "unused"), emit=audit.extend)
    assert mgr.rul_version == "local"
    analytics._health.est.state[:] = 1.0  # history under the config model
    head, chunks = deliveries(data, "rul-2")
    base = topics.head_topic(topics.Scope.GLOBAL, table.site, "gw-t", "rul", "press")[:-len("head")]

    async def deliver() -> None:
        mgr.start()
        await mgr._handle(base + "head", head)
        for i, c in enumerate(chunks):
            await mgr._handle(f"{base}chunk/{i}", c)

    asyncio.run(deliver())
    est = analytics._health.est
    assert mgr.rul_version == "rul-2" and np.array_equal(est.model.w1, shipped.w1)
    assert not est.state.any()  # another model: its history starts afresh
    assert mgr.event_version(1, 0, 1, 7) == "rul-2"  # Kind.HEALTH events carry the RUL version
    assert audit[-1]["action"] == "promote" and "without shadow" in audit[-1]["detail"]
    assert mgr.rollback("rul/press", "command")[0] == "applied"
    assert mgr.rul_version == "local" and np.array_equal(analytics._health.est.model.w1, config_model.w1)


def test_config_models_section_resolves_the_key_beside_the_config(tmp_path: Path) -> None:
    from edge.config import load_edge
    from plantwire.configfile import ConfigError

    cfg_path = tmp_path / "edge.yaml"
    cfg_path.write_text(f"gateway_id: gw-t\nplant: {DEV_PLANT}\nmodels: {{public_key_file: keys/models.pub}}\n")
    cfg, _ = load_edge(cfg_path)
    assert cfg.models is not None and cfg.models.public_key_file == tmp_path / "keys" / "models.pub"
    assert cfg.models.auto_promote_after_s == 3600.0
    cfg_path.write_text(f"gateway_id: gw-t\nplant: {DEV_PLANT}\nmodels: {{public_key_file: k, watch_s: -1}}\n")
    with pytest.raises(ConfigError) as e:
        load_edge(cfg_path)
    assert "models.watch_s" in e.value.report()
