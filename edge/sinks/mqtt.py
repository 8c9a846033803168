"""MQTT publisher for encoded batches: paho-mqtt 2.x, MQTT 5, QoS 1, persistent session.

paho runs its network loop in its own thread (``loop_start``); ``publish`` is thread-safe, and
PUBACKs arrive through ``on_publish`` in that thread. We keep, per in-flight message, how many
samples it carries so that "acknowledged by the broker" is counted in samples, not guessed, and an
optional per-message callback (the spool frees events-lane records on PUBACK with it).

Durability is not this module's job: telemetry is in the write-ahead log (edge/spool.py) before it
gets here and leaves the log only on the cloud's ack, which arrives through :meth:`subscribe`. paho's
own queue is unbounded (``max_queued_messages_set(0)``), but the forwarder keeps it short.

**Priority.** paho sends in the order ``publish`` is called, over one connection. Events and live
batches go ahead of the back-log because the forwarder releases back-log records only while fewer
than half of ``max_inflight`` messages are in flight (:attr:`MqttPublisher.inflight`), so a live
message never queues behind more than that.

**Locking rule.** Our lock is never held while calling into paho: paho calls ``on_publish`` with its
own mutex held, so nesting the two locks in opposite orders would deadlock. Callbacks we invoke
(connect listeners, message handlers, per-message ack callbacks) run in paho's thread without our
lock; they must be quick and must not block on the event loop. An exception in one is logged and
counted in ``callback_errors``, never allowed to kill paho's network thread.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.config import MqttSettings, MqttTlsSettings

log = logging.getLogger(__name__)

#: How long the broker keeps our session (and QoS 1 messages queued for it) while we are away.
SESSION_EXPIRY_S = 7 * 24 * 3600


@dataclass
class PublisherStats:
    messages_published: int = 0
    messages_acked: int = 0
    samples_published: int = 0
    samples_acked: int = 0
    bytes_published: int = 0
    connects: int = 0
    disconnects: int = 0
    connected: bool = False
    messages_received: int = 0
    callback_errors: int = 0
    inflight: dict[int, int] = field(default_factory=dict)  # mid -> samples

    @property
    def samples_unacked(self) -> int:
        return self.samples_published - self.samples_acked


class MqttPublisher:
    """Publishes payloads at QoS 1 and counts broker acknowledgements.

    ``on_connect_messages`` returns (topic, payload, retain) tuples that must be (re)sent on every
    connection, e.g. the retained signal table and the gateway's online status.
    """

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        *,
        will: tuple[str, bytes] | None = None,
        on_connect_messages: Callable[[], list[tuple[str, bytes, bool]]] | None = None,
    ) -> None:
        self.settings = settings
        self.stats = PublisherStats()
        self._lock = threading.Lock()
        self._acked = threading.Condition(self._lock)
        self._early_acks: set[int] = set()
        self._ack_callbacks: dict[int, Callable[[], None]] = {}
        self._subscriptions: dict[str, Callable[[str, bytes], None]] = {}
        self._connect_listeners: list[Callable[[], None]] = []
        self._on_connect_messages = on_connect_messages
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        # Both must be set before connect() (paho 2.x raises otherwise; shared/MEASURED.md trap 9).
        self._client.max_inflight_messages_set(settings.max_inflight)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        if settings.username:
            password = os.environ.get(settings.password_env) if settings.password_env else None
            self._client.username_pw_set(settings.username, password)
        if settings.tls is not None:
            self._client.tls_set_context(tls_context(settings.tls))
        if will is not None:
            self._client.will_set(will[0], will[1], qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message

    def start(self) -> None:
        """Connect asynchronously; paho keeps reconnecting in its thread until ``stop``."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        self._client.connect_async(
            self.settings.host, self.settings.port, self.settings.keepalive_s, clean_start=False, properties=props
        )
        self._client.loop_start()

    @property
    def connected(self) -> bool:
        return self.stats.connected

    @property
    def inflight(self) -> int:
        """Messages handed to paho and not yet acknowledged by the broker (in flight or queued)."""
        return len(self.stats.inflight)

    def subscribe(self, topic: str, handler: Callable[[str, bytes], None]) -> None:
        """Subscribe at QoS 1 now (if connected) and again on every connection.

        ``handler(topic, payload)`` runs in paho's thread for each message on exactly ``topic``
        (no wildcards); see the locking rule in the module docstring.
        """
        self._subscriptions[topic] = handler
        if self.stats.connected:
            self._client.subscribe(topic, qos=1)

    def add_connect_listener(self, listener: Callable[[], None]) -> None:
        """``listener()`` runs in paho's thread after every successful connection."""
        self._connect_listeners.append(listener)

    def publish(
        self,
        topic: str,
        payload: bytes,
        samples: int = 0,
        *,
        retain: bool = False,
        on_acked: Callable[[], None] | None = None,
    ) -> int:
        """Hand one QoS 1 message to paho; returns its mid. ``on_acked()`` runs (paho's thread) on PUBACK."""
        # Our lock is never held while calling into paho (module docstring). A PUBACK that beats
        # us to the bookkeeping is parked in ``_early_acks``.
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        run_now = False
        with self._acked:
            self.stats.messages_published += 1
            self.stats.samples_published += samples
            self.stats.bytes_published += len(payload)
            if info.mid in self._early_acks:
                self._early_acks.discard(info.mid)
                self._count_ack(samples)
                run_now = on_acked is not None
            else:
                self.stats.inflight[info.mid] = samples
                if on_acked is not None:
                    self._ack_callbacks[info.mid] = on_acked
        if run_now:
            self._run_callback(on_acked)
        return info.mid

    def wait_acked(self, timeout_s: float) -> bool:
        """Block until every published message is acknowledged by the broker, or the timeout."""
        deadline = time.monotonic() + timeout_s
        with self._acked:
            while self.stats.inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._acked.wait(left)
        return True

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    # paho callbacks (network thread) -------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object, props: object) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("mqtt connect to %s:%s refused: %s", self.settings.host, self.settings.port, reason)
            return
        self.stats.connects += 1
        self.stats.connected = True
        log.info("mqtt connected to %s:%s", self.settings.host, self.settings.port)
        if self._subscriptions:  # list(): a snapshot (subscribe() may add topics from another thread meanwhile)
            client.subscribe([(t, 1) for t in list(self._subscriptions)])
        if self._on_connect_messages is not None:
            for topic, payload, retain in self._on_connect_messages():
                self.publish(topic, payload, 0, retain=retain)
        for listener in self._connect_listeners:
            self._run_callback(listener)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        if self.stats.connected:
            # Our own disconnect() (a clean stop) comes back as "Normal disconnection": not a warning.
            level = logging.WARNING if getattr(reason, "is_failure", True) else logging.INFO
            log.log(level, "mqtt disconnected: %s", reason)
        self.stats.connected = False
        self.stats.disconnects += 1

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason: object, props: object) -> None:
        with self._acked:
            samples = self.stats.inflight.pop(mid, None)
            if samples is None:
                self._early_acks.add(mid)
                return
            self._count_ack(samples)
            callback = self._ack_callbacks.pop(mid, None)
        if callback is not None:
            self._run_callback(callback)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        self.stats.messages_received += 1
        handler = self._subscriptions.get(message.topic)
        if handler is not None:
            self._run_callback(handler, message.topic, message.payload)

    def _run_callback(self, fn: Callable[..., None] | None, *args: object) -> None:
        if fn is None:
            return
        try:
            fn(*args)
        except Exception:
            self.stats.callback_errors += 1
            log.exception("mqtt: callback %r failed (paho's thread carries on)", fn)

    def _count_ack(self, samples: int) -> None:
        """Caller holds the lock."""
        self.stats.messages_acked += 1
        self.stats.samples_acked += samples
        self._acked.notify_all()


def tls_context(tls: MqttTlsSettings) -> ssl.SSLContext:
    """Verify the broker (chain and hostname) and present our certificate; a missing file or a key
    that does not open raises :class:`plantwire.tls.SecretError` naming it, before any connect."""
    from plantwire.tls import SecretError, client_context, read_secret

    ctx = client_context(tls.ca_file)
    if tls.cert_file is not None and tls.key_file is not None:
        for label, path in (("client certificate", tls.cert_file), ("client key", tls.key_file)):
            if not path.is_file():
                raise SecretError(f"mqtt.tls: {label} {path} not found or not a file")
        password = None
        if tls.key_password_credential or tls.key_password_env:
            password = read_secret(credential=tls.key_password_credential, env=tls.key_password_env)
        try:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file), password=password)
        except (ssl.SSLError, OSError) as e:
            raise SecretError(f"mqtt.tls: cannot load {tls.cert_file} with {tls.key_file}: {e}") from None
    return ctx
