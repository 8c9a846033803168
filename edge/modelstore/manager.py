"""The model life cycle on the edge: bundles in, shadow, promote, roll back, and what it reports.

Threads: MQTT handlers run on paho's thread and only hand ``(topic, payload)`` to the event loop
(``call_soon_threadsafe``); the ``models`` task reassembles there (cheap) and verifies a complete bundle
on a worker thread (``asyncio.to_thread``: signature, hashes, ``np.load``), so a frame never waits for a
bundle. Every change to the running models (a swap, a new shadow) is made on the event loop, which is
also where ``EdgeGateway._flush`` runs: a swap therefore always falls between two frames, and no sample
is lost or scored twice.

Slots and precedence: a bundle slot is ``kind/template``; it can be offered under the gateway's own
topic, its site's ``_all`` or the global ``_all/_all``; the most specific offer is the candidate.

Per slot (``store.SlotState``): ``active`` (scores and annunciates), ``shadow`` (``machine_pca`` only:
scores the same frames, alarms counted, never published), ``previous`` (kept on disk for rollback).
- A new ``machine_pca`` candidate goes to shadow (a shadow already running is replaced).
- Promotion: the ``promote`` command, or automatically once it has been in shadow
  ``auto_promote_after_s`` with at most ``auto_promote_max_rate`` alarms per machine-hour (checked once;
  a candidate above the bound stays in shadow, marked ``held``, until an operator acts).
- After a promotion its alarm rate is watched for ``watch_s``: above ``rollback_max_rate`` (judged after
  ``min_watch_s``) the promotion is rolled back automatically. That is the health check.
- Rollback (command or health check): the previous version becomes active again, the rolled-back one
  is retired (not taken again when the broker re-delivers its retained head). With no previous
  version the machines return to what the config gives them (``machine.models`` files, else
  self-fit/none).
- ``rul`` bundles swap in directly, without shadow: the RUL estimate has no alarm-rate to compare over
  a shadow period of minutes or hours (it moves over duty cycles and weeks), so a shadow would be a
  wait without a criterion; ``previous`` and rollback work as for machine models. A RUL bundle applies
  only where ``analytics.health`` is configured and every machine it covers is of the bundle's template.
- ``signal_baseline`` bundles swap in directly too: their suggested ``low``/``high`` become the range limits
  of the template's signals that the plant file leaves without one (the plant file's own limits always
  win; ``state`` and ``counter`` signals are skipped: a totaliser leaves any fitted band by design). A
  shadow would only replay the range check; rollback restores the previous limits (or the plant file's).

Traceability: ``model_version`` of an alarm is the version of the machine model that raised it (fixed
at OPEN, repeated at CLOSE), ``"local"`` for a model from the config or the edge's own fit, and null
for signal alarms (the unfitted signal stack) except range alarms on limits a ``signal_baseline`` bundle set
(its version); health documents carry the RUL model's version.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.detectors.events import Phase, Scope
from edge.kernels import signal_stack
from edge.kernels.kinds import Kind
from edge.modelstore import compat, convert, topics
from edge.modelstore.assembly import SlotAssembly, parse_head
from edge.modelstore.compat import PlantView
from edge.modelstore.reader import KINDS, Bundle, load_public_key, read_verified
from edge.modelstore.reasons import BundleRefused, Refusal
from edge.modelstore.settings import ModelStoreSettings
from edge.modelstore.shadow import ShadowMachine
from edge.modelstore.store import BundleStore, check_name
from edge.pdm.rul import RulEstimator, RulModel

if TYPE_CHECKING:
    from edge.detectors.analytics import EdgeAnalytics
    from edge.sinks.mqtt import MqttPublisher
    from plantwire.metrics import Registry
    from plantwire.plant import PlantConfig, SignalTable

log = logging.getLogger(__name__)

LOCAL = "local"  # model_version of a model from the config or the edge's own fit
ACTOR_EDGE = "edge"  # automatic promotions and rollbacks are audited under this actor


@dataclass
class _Watch:
    version: str
    machines: np.ndarray
    since_s: float
    alarms: int = 0


class ModelManager:
    def __init__(self, settings: ModelStoreSettings, *, gateway_id: str, plant: PlantConfig, table: SignalTable,
                 analytics: EdgeAnalytics, state_dir: Path, base_dir: Path | None, publisher: MqttPublisher,
                 emit: Callable[[list[dict[str, Any]]], None], clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.gateway_id = gateway_id
        self.site = table.site
        self.table = table
        self.analytics = analytics
        self.stack = analytics.stack
        self.publisher = publisher
        self.emit = emit
        self.clock = clock
        self.view = PlantView.build(plant, table, self.stack.m_ptr, self.stack.m_sig)
        self.store = BundleStore(state_dir)
        self.base_dir = base_dir
        self.key: Ed25519PublicKey | None = None
        self.key_problem = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: asyncio.Queue[tuple[str, bytes]] | None = None
        self._assembly: dict[tuple[topics.Scope, str, str], SlotAssembly] = {}
        self._offers: dict[str, dict[topics.Scope, tuple[str, str]]] = {}  # slot -> scope -> (version, sha)
        self._chunk_topics: set[str] = set()
        self.shadows: dict[str, ShadowMachine] = {}
        self._held: dict[str, str] = {}  # slot -> why auto-promotion did not happen
        self._watch: dict[str, _Watch] = {}
        n_m = self.stack.n_machines
        self.machine_version: list[str | None] = [
            LOCAL if m is not None else None for m in self.stack.machine_stage.models]
        self._open_version: dict[int, str | None] = {}
        self._config_models = self.stack.machine_stage.config_models(self.stack.machine_ids, base_dir)
        self.rul_version: str | None = LOCAL if analytics._health is not None else None
        self._config_rul = analytics._health.est.model if analytics._health is not None else None
        self._plant_limits = self.stack.cfg[:, [signal_stack.C_LOW, signal_stack.C_HIGH]].copy()
        self._row_of = {sid: i for i, sid in enumerate(table.ids)}
        self.limit_version: dict[int, str] = {}  # signal row -> signal_baseline version that set its limits
        self.refusals: collections.Counter[str] = collections.Counter()
        self.last_refusals: collections.deque[dict[str, Any]] = collections.deque(maxlen=settings.refusals_kept)
        self.received = 0
        self.verified = 0
        self.stale_chunks_base = 0
        self.promotions: collections.Counter[str] = collections.Counter()
        self.rollbacks: collections.Counter[str] = collections.Counter()
        self.commands: collections.Counter[tuple[str, str]] = collections.Counter()
        self.message_errors = 0
        self._n_machines = n_m

    # -- start-up ------------------------------------------------------------------------------

    def start(self) -> None:
        """On the event loop, before the publisher connects: key, stored models, subscriptions."""
        self._loop = asyncio.get_running_loop()
        self._inbox = asyncio.Queue()
        try:
            self.key = load_public_key(self.settings.public_key_file)
        except (OSError, ValueError) as exc:
            self.key_problem = str(exc)
            log.error("models: public key unusable, every bundle will be refused (no-key): %s", exc)
        for problem in self.store.load_slots():
            log.error("models: %s", problem)
        self._resume()
        for scope in topics.Scope:
            for kind in KINDS:
                for template in self.view.templates:
                    self.publisher.subscribe(topics.head_topic(scope, self.site, self.gateway_id, kind, template),
                                             self._from_paho)
        self.publisher.subscribe(topics.command_topic(self.site, self.gateway_id), self._from_paho)

    def _resume(self) -> None:
        """Apply the stored active versions (and restart stored shadows); a bad file is a refusal."""
        for key, st in list(self.store.slots.items()):
            kind, _, template = key.partition("/")
            for role in ("active", "shadow"):
                version = getattr(st, role)
                if version is None:
                    continue
                try:
                    _, model, machines = self._open_stored(kind, template, version)
                except (BundleRefused, OSError) as exc:
                    reason = exc.reason if isinstance(exc, BundleRefused) else Refusal.STORE_FAILED
                    self._refuse(kind, template, version, None, reason, f"stored {role}: {exc}")
                    setattr(st, role, None)
                    continue
                if role == "active":
                    self._apply(kind, template, version, model, machines, warm_from=None)
                    log.info("models: %s resumed active version %s", key, version)
                else:
                    self.shadows[key] = ShadowMachine(self.stack, machines, model, version, self.clock())
                    log.info("models: %s resumed shadow version %s", key, version)

    def _open_stored(self, kind: str, template: str, version: str) -> tuple[Bundle, Any, np.ndarray]:
        data = self.store.read_bundle(kind, template, version)
        b = read_verified(data, self.key)
        machines, model = self._check(b)
        return b, model, machines

    # -- MQTT -> event loop ---------------------------------------------------------------------

    def _from_paho(self, topic: str, payload: bytes) -> None:
        """paho's thread: hand over and return (never block the network thread)."""
        loop, inbox = self._loop, self._inbox
        if loop is None or inbox is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(inbox.put_nowait, (topic, bytes(payload)))

    async def run(self) -> None:
        """The ``models`` task: one message at a time; a failure is counted and logged, never fatal."""
        assert self._inbox is not None
        while True:
            topic, payload = await self._inbox.get()
            try:
                await self._handle(topic, payload)
            except Exception:
                self.message_errors += 1
                log.exception("models: message on %s failed (the running models carry on)", topic)

    async def _handle(self, topic: str, payload: bytes) -> None:
        if topic == topics.command_topic(self.site, self.gateway_id):
            self._command(payload)
            return
        parsed = self._parse_topic(topic)
        if parsed is None:
            return
        scope, kind, template, leaf, index = parsed
        key = f"{kind}/{template}"
        asm = self._assembly.setdefault((scope, kind, template), SlotAssembly())
        if leaf == "head":
            try:
                head = parse_head(payload, self.settings.max_bundle_bytes)
            except BundleRefused as exc:
                asm.set_head(None)
                self._refuse(kind, template, None, scope, exc.reason, exc.detail)
                return
            asm.set_head(head)
            if head is None:
                if self._offers.get(key, {}).pop(scope, None) is not None:
                    log.info("models: %s offer under %s cleared", key, scope.name.lower())
                    self._consider(key)
                return
            for i in range(head.chunks):
                t = topics.chunk_topic(scope, self.site, self.gateway_id, kind, template, i)
                self._chunk_topics.add(t)
                self.publisher.subscribe(t, self._from_paho)  # (again): the broker re-sends the retained chunk
            return
        head = asm.head
        try:
            data = asm.add_chunk(index, payload)
        except BundleRefused as exc:
            self._refuse(kind, template, head.version if head else None, scope, exc.reason, exc.detail)
            return
        if data is None or head is None:
            return
        self.received += 1
        try:
            b = await asyncio.to_thread(read_verified, data, self.key)
            if (b.kind, b.template, b.version) != (kind, template, head.version):
                raise BundleRefused(Refusal.SLOT_MISMATCH,
                                    f"manifest says {b.kind}/{b.template}@{b.version}, topic and head "
                                    f"{kind}/{template}@{head.version}")
            check_name(kind, template, b.version)
            self._check(b)
        except BundleRefused as exc:
            self._refuse(kind, template, head.version, scope, exc.reason, exc.detail)
            return
        try:
            self.store.save_bundle(kind, template, b.version, data)
        except OSError as exc:
            self._refuse(kind, template, b.version, scope, Refusal.STORE_FAILED, str(exc))
            return
        self.verified += 1
        log.info("models: %s version %s verified (offered under %s)", key, b.version, scope.name.lower())
        self._offers.setdefault(key, {})[scope] = (b.version, b.sha256)
        self._consider(key)

    def _parse_topic(self, topic: str) -> tuple[topics.Scope, str, str, str, int] | None:
        root = topics.MODELS_ROOT + "/"
        if not topic.startswith(root):
            return None
        parts = topic[len(root):].split("/")
        if len(parts) < 5:
            return None
        site, gw, kind, template, leaf = parts[:5]
        if (site, gw) == (self.site, self.gateway_id):
            scope = topics.Scope.GATEWAY
        elif (site, gw) == (self.site, topics.ALL):
            scope = topics.Scope.SITE
        elif (site, gw) == (topics.ALL, topics.ALL):
            scope = topics.Scope.GLOBAL
        else:
            return None
        if leaf == "head" and len(parts) == 5:
            return scope, kind, template, leaf, -1
        if leaf == "chunk" and len(parts) == 6 and parts[5].isdigit():
            return scope, kind, template, leaf, int(parts[5])
        return None

    def _check(self, b: Bundle) -> tuple[np.ndarray, Any]:
        """Compatibility with this plant and the model object; raises ``BundleRefused``."""
        hs = self.analytics.settings.health
        machines = compat.check(b, self.view, hs.inputs if hs is not None else None)
        if b.kind == "machine_pca":
            if not self.analytics.settings.machine.enabled:
                raise BundleRefused(Refusal.NO_TARGET, "analytics.machine is disabled on this gateway")
            return machines, convert.machine_model(b)
        if b.kind == "signal_baseline":
            return machines, (b.signals, *convert.baseline_limits(b))
        h = self.analytics._health
        if h is None:
            raise BundleRefused(Refusal.NO_TARGET, "analytics.health is not configured on this gateway")
        others = [self.view.machine_template[m] for m in h.machines.tolist()
                  if self.view.machine_template[m] != b.template]
        if others:
            raise BundleRefused(Refusal.NO_TARGET, f"analytics.health also covers machines of {sorted(set(others))}: "
                                                   "one RUL model cannot serve two templates here")
        model = convert.rul_model(b)
        self._rul_inputs(model)  # raises when the machines lack its inputs
        return machines, model

    # -- decisions ------------------------------------------------------------------------------

    def _consider(self, key: str) -> None:
        """The most specific offer is the candidate; start its shadow (or swap it in, for RUL)."""
        offers = self._offers.get(key, {})
        if not offers:
            return
        version = offers[min(offers)][0]
        st = self.store.slot(key)
        if version in (st.active, st.shadow) or version in st.retired:
            if version in st.retired:
                log.info("models: %s version %s was rolled back here; not taken again", key, version)
            return
        kind, _, template = key.partition("/")
        try:
            _, model, machines = self._open_stored(kind, template, version)
        except (BundleRefused, OSError) as exc:
            reason = exc.reason if isinstance(exc, BundleRefused) else Refusal.STORE_FAILED
            self._refuse(kind, template, version, None, reason, f"stored: {exc}")
            return
        if kind == "machine_pca":
            old = self.shadows.get(key)
            self.shadows[key] = ShadowMachine(self.stack, machines, model, version, self.clock())
            self._held.pop(key, None)
            st.shadow = version
            log.info("models: %s version %s in shadow%s", key, version,
                     f" (replaces shadow {old.version})" if old is not None else "")
        else:
            st.previous, st.active = st.active, version
            self._apply(kind, template, version, model, machines, warm_from=None)
            self.promotions["direct"] += 1
            self._audit("promote", key, version, "applied", ACTOR_EDGE, "agent", None,
                        f"{kind} {version} applied without shadow (previous {st.previous})")
        self._save_slots()

    def _apply(self, kind: str, template: str, version: str | None, model: Any, machines: np.ndarray,
               warm_from: ShadowMachine | None) -> None:
        """Swap between frames (we are on the event loop, where frames are processed)."""
        if kind == "machine_pca":
            stage = self.stack.machine_stage
            if model is None:  # back to the config's models, machine by machine
                for m in machines.tolist():
                    stage.swap_models(np.array([m]), self._config_models[m])
                    self.machine_version[m] = LOCAL if self._config_models[m] is not None else None
                return
            stage.swap_models(machines, model, warm_from.stage if warm_from is not None else None)
            for m in machines.tolist():
                self.machine_version[m] = version
        elif kind == "signal_baseline":
            self._apply_limits(template, version, model, machines)
        else:
            rul = model if model is not None else self._config_rul
            h = self.analytics._health
            if h is None or rul is None:
                return
            est = RulEstimator(rul, h.est.n_machines, self._rul_inputs(rul))
            if est.fingerprint == h.est.fingerprint:
                est.state[...] = h.est.state  # the same model and inputs: its history stays valid
            h.est = est
            self.rul_version = version if model is not None else LOCAL

    def _apply_limits(self, template: str, version: str | None, model: Any, machines: np.ndarray) -> None:
        """Range limits of the template's machines: the bundle's where the plant file has none, else the plant's."""
        cfg, t = self.stack.cfg, self.table
        rows = np.array([r for m in machines.tolist() for r in np.flatnonzero(t.machine == m).tolist()], dtype=np.int64)
        for r in rows.tolist():  # back to the plant file first: a signal the new bundle omits loses the old limit
            cfg[r, signal_stack.C_LOW], cfg[r, signal_stack.C_HIGH] = self._plant_limits[r]
            self.limit_version.pop(r, None)
        if model is None or version is None:
            return
        names, low, high = model
        for m in machines.tolist():
            mid = t.machine_ids[m]
            for name, lo, hi in zip(names, low.tolist(), high.tolist(), strict=True):
                r = self._row_of.get(f"{mid}.{name}")
                if r is None or t.kinds[r] in ("state", "counter") or not (np.isfinite(lo) and np.isfinite(hi)):
                    continue
                if np.isnan(self._plant_limits[r]).all():  # the plant file's own limits always win
                    cfg[r, signal_stack.C_LOW], cfg[r, signal_stack.C_HIGH] = lo, hi
                    self.limit_version[r] = version

    def _rul_inputs(self, model: RulModel) -> np.ndarray:
        h = self.analytics._health
        hs = self.analytics.settings.health
        assert h is not None and hs is not None
        t = self.table
        by_name: dict[tuple[int, str], int] = {}
        for idx, (sid, m) in enumerate(zip(t.ids, t.machine.tolist(), strict=True)):
            prefix = t.machine_ids[m] + "."
            by_name[(m, sid[len(prefix):] if sid.startswith(prefix) else sid)] = idx
        names = [hs.inputs.get(n, n) for n in model.input_names()]
        inputs = np.full((h.est.n_machines, model.n_inputs), -1, dtype=np.int64)
        for m in h.machines.tolist():
            for i, name in enumerate(names):
                inputs[m, i] = by_name.get((m, name), -1)
        if not (inputs[h.machines] >= 0).all(axis=1).any():
            raise BundleRefused(Refusal.SIGNAL_MISMATCH, f"no covered machine has all model inputs {names[:8]}")
        return inputs

    def promote(self, key: str, how: str) -> tuple[str, str]:
        """(outcome, detail): the shadow becomes active, the active previous; the watch starts."""
        sh = self.shadows.get(key)
        st = self.store.slots.get(key)
        if sh is None or st is None:
            return "refused", f"{key}: no model in shadow"
        kind, _, template = key.partition("/")
        self._apply(kind, template, sh.version, sh.model, sh.machines, warm_from=sh)
        detail = (f"{key}: {sh.version} active (was {st.active}); shadow {self._shadow_figures(sh)}")
        st.previous, st.active, st.shadow = st.active, sh.version, None
        del self.shadows[key]
        self._held.pop(key, None)
        self._watch[key] = _Watch(sh.version, sh.machines, self.clock())
        self.promotions[how] += 1
        self._save_slots()
        log.info("models: promoted (%s) %s", how, detail)
        return "applied", detail

    def rollback(self, key: str, how: str) -> tuple[str, str]:
        """(outcome, detail): the previous version (or the config's models) becomes active again."""
        st = self.store.slots.get(key)
        if st is None or st.active is None:
            return "refused", f"{key}: no bundle is active, nothing to roll back"
        kind, _, template = key.partition("/")
        bad, target = st.active, st.previous
        try:
            if target is not None:
                _, model, machines = self._open_stored(kind, template, target)
            else:
                model, machines = None, self.view.machines[template]
        except (BundleRefused, OSError) as exc:
            return "failed", f"{key}: previous version {target} unusable ({exc})"
        self._apply(kind, template, target, model, machines, warm_from=None)
        st.active, st.previous = target, None
        st.retired.append(bad)
        self._watch.pop(key, None)
        self.rollbacks[how] += 1
        self._save_slots()
        detail = f"{key}: {bad} rolled back, active {target if target is not None else 'config models'}"
        log.warning("models: rolled back (%s) %s", how, detail)
        return "applied", detail

    def _save_slots(self) -> None:
        keep = {k: {v for v, _ in offers.values()} for k, offers in self._offers.items()}
        try:
            self.store.save_slots(keep)
        except OSError as exc:
            log.error("models: slots.json not written (%s); the running models are unaffected", exc)

    # -- per frame and per tick (event loop) ------------------------------------------------------

    def after_frame(self, signal: np.ndarray, value: np.ndarray, quality: np.ndarray, tick_ts_ns: int,
                    events: np.ndarray) -> None:
        """Shadows score the frame the active models just scored; the watch counts the active's alarms."""
        for sh in self.shadows.values():
            sh.process(signal, value, quality, tick_ts_ns)
        if self._watch and events.shape[0]:
            opened = events[(events["scope"] == Scope.MACHINE) & (events["phase"] == Phase.OPEN)
                            & (events["kind"] == int(Kind.MACHINE))]["entity"]
            if opened.shape[0]:
                for w in self._watch.values():
                    w.alarms += int(np.isin(opened, w.machines).sum())

    def tick(self) -> None:
        """Auto-promotion and the post-promotion health check; called from the flush loop."""
        now = self.clock()
        s = self.settings
        for key, sh in list(self.shadows.items()):
            if s.auto_promote_after_s is None or key in self._held or now - sh.since_s < s.auto_promote_after_s:
                continue
            rate = sh.rate_per_machine_h(now)
            if rate <= s.auto_promote_max_rate:
                outcome, detail = self.promote(key, "auto")
                self._audit("promote", key, sh.version, outcome, ACTOR_EDGE, "agent", None,
                            f"automatic: shadow rate {rate:.3g}/machine-h <= {s.auto_promote_max_rate}; {detail}")
            else:
                self._held[key] = (f"shadow alarm rate {rate:.3g}/machine-h above models.auto_promote_max_rate "
                                   f"{s.auto_promote_max_rate}: promotion by command only")
                log.warning("models: %s %s held in shadow: %s", key, sh.version, self._held[key])
        for key, w in list(self._watch.items()):
            age = now - w.since_s
            if s.rollback_max_rate is not None and age >= s.min_watch_s:
                rate = w.alarms / (max(w.machines.shape[0], 1) * max(age, 1e-9) / 3600.0)
                if rate > s.rollback_max_rate:
                    outcome, detail = self.rollback(key, "health-check")
                    self._audit("rollback", key, w.version, outcome, ACTOR_EDGE, "agent", None,
                                f"health check: {w.alarms} machine alarms in {age:.0f} s = {rate:.3g}/machine-h "
                                f"> models.rollback_max_rate {s.rollback_max_rate}; {detail}")
                    continue
            if age >= s.watch_s:
                del self._watch[key]
                log.info("models: %s version %s passed its post-promotion watch (%d alarms in %.0f s)", key,
                         w.version, w.alarms, age)

    # -- commands -------------------------------------------------------------------------------

    def _command(self, payload: bytes) -> None:
        try:
            doc = json.loads(payload)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
        except (UnicodeDecodeError, ValueError) as exc:
            self._result({"id": None, "action": None}, "refused", f"command is not a JSON object ({exc})")
            self.commands[("?", "refused")] += 1
            return
        action = doc.get("action")
        kind, template = doc.get("kind"), doc.get("template")
        actor = str(doc.get("actor") or "")
        reason = str(doc.get("reason") or "")
        key = f"{kind}/{template}"
        if action not in ("promote", "rollback"):
            outcome, detail = "refused", f"action {action!r}: expected promote or rollback"
        elif not isinstance(kind, str) or not isinstance(template, str) or kind not in KINDS:
            outcome, detail = "refused", f"kind {kind!r} / template {template!r}: a bundle kind and a template expected"
        elif not actor:
            outcome, detail = "refused", "actor: who asks must be named"
        elif action == "promote":
            outcome, detail = self.promote(key, "command")
        else:
            outcome, detail = self.rollback(key, "command")
        self.commands[(str(action), outcome)] += 1
        self._result(doc, outcome, detail)
        rid = doc.get("id")
        self._audit(str(action), key, None, outcome, actor or "?", "mqtt", rid if isinstance(rid, str) else None,
                    detail, reason)

    def _result(self, doc: dict[str, Any], outcome: str, detail: str) -> None:
        res = {"id": doc.get("id"), "service": "models", "action": doc.get("action"), "outcome": outcome,
               "detail": detail}
        self.publisher.publish(topics.result_topic(self.site, self.gateway_id), json.dumps(res).encode())

    def _audit(self, action: str, key: str, version: str | None, outcome: str, actor: str, source: str,
               request_id: str | None, detail: str, reason: str = "") -> None:
        target = key if version is None else f"{key}@{version}"
        self.emit([{"type": "audit", "ts_ns": time.time_ns(), "request_id": request_id, "actor": actor,
                    "source": source, "service": "models", "action": action, "target": target, "reason": reason,
                    "outcome": outcome, "detail": detail}])

    # -- refusals and reporting -----------------------------------------------------------------

    def _refuse(self, kind: str, template: str, version: str | None, scope: topics.Scope | None, reason: Refusal,
                detail: str) -> None:
        self.refusals[reason.value] += 1
        self.last_refusals.append({"ts_ns": time.time_ns(), "kind": kind, "template": template, "version": version,
                                   "scope": scope.name.lower() if scope is not None else "stored",
                                   "reason": reason.value, "detail": detail[:300]})
        log.warning("models: refused %s/%s%s: %s: %s", kind, template, f"@{version}" if version else "",
                    reason.value, detail)

    def event_version(self, scope: int, entity: int, phase: int, kind: int) -> str | None:
        """``model_version`` of an alarm row (machine alarms: fixed at OPEN, repeated at CLOSE)."""
        if scope != Scope.MACHINE:
            return self.limit_version.get(entity) if kind == Kind.RANGE else None
        if kind == Kind.HEALTH:
            return self.rul_version
        if phase == Phase.OPEN:
            v = self.machine_version[entity] if entity < len(self.machine_version) else None
            self._open_version[entity] = v
            return v
        return self._open_version.pop(entity, self.machine_version[entity]
                                      if entity < len(self.machine_version) else None)

    def _shadow_figures(self, sh: ShadowMachine) -> str:
        return f"{sh.alarms} alarms in {sh.ticks} ticks over {self.clock() - sh.since_s:.0f} s"

    def health_doc(self) -> dict[str, Any]:
        """Keys for the retained health document (contracts.md), plus shadow and watch details."""
        # Also called from the metrics server's thread (/health): read from copies (``dict()``/``list()`` of a
        # dict or deque copy in one step under the GIL), never iterate the live containers.
        now = self.clock()
        slots, shadows, watches = dict(self.store.slots), dict(self.shadows), dict(self._watch)
        held, refusals = dict(self._held), dict(self.refusals)
        models = {k: st.doc() for k, st in sorted(slots.items())}  # every slot that ever held a bundle
        shadow = {k: {"version": sh.version, "since_s": round(now - sh.since_s, 1), "ticks": sh.ticks,
                      "alarms": sh.alarms, "rate_per_machine_h": round(sh.rate_per_machine_h(now), 4),
                      "held": held.get(k)} for k, sh in shadows.items()}
        watch = {k: {"version": w.version, "since_s": round(now - w.since_s, 1), "alarms": w.alarms}
                 for k, w in watches.items()}
        return {"models": models, "model_shadow": shadow, "model_watch": watch,
                "model_refusals_total": sum(refusals.values()), "model_refusals": list(self.last_refusals),
                **({"model_key_problem": self.key_problem} if self.key_problem else {})}

    def export_metrics(self, m: Registry) -> None:
        refused = m.counter("model_bundles_refused_total", "Model bundles refused, by reason (health: model_refusals)")
        for reason in Refusal:
            refused.set(self.refusals.get(reason.value, 0), reason=reason.value)
        m.counter("model_bundles_received_total", "Model bundles reassembled from their chunks").set(self.received)
        m.counter("model_bundles_verified_total", "Model bundles verified and stored").set(self.verified)
        m.counter("model_chunks_stale_total", "Bundle chunks of another version, ignored").set(
            sum(a.stale_chunks for a in self._assembly.values()))
        m.counter("model_messages_failed_total", "Model messages whose handling failed (logged)").set(
            self.message_errors)
        prom = m.counter("model_promotions_total", "Model promotions, by how (command, auto, direct)")
        for how, n in self.promotions.items():
            prom.set(n, how=how)
        rb = m.counter("model_rollbacks_total", "Model rollbacks, by how (command, health-check)")
        for how, n in self.rollbacks.items():
            rb.set(n, how=how)
        sh_alarms = m.gauge("model_shadow_alarms", "Machine alarms a shadow model would have raised since it started")
        sh_ticks = m.gauge("model_shadow_ticks", "Machine ticks a shadow model scored since it started")
        for key, sh in self.shadows.items():
            kind, _, template = key.partition("/")
            sh_alarms.set(sh.alarms, kind=kind, template=template, version=sh.version)
            sh_ticks.set(sh.ticks, kind=kind, template=template, version=sh.version)
        info = m.gauge("model_active_info", "1 for each kind/template's active bundle version")
        for key, st in self.store.slots.items():
            if st.active is not None:
                kind, _, template = key.partition("/")
                info.set(1.0, kind=kind, template=template, version=st.active)

