"""MQTT source for the ingestor: paho-mqtt 2.x, MQTT 5, persistent session, manual acknowledgements.

Delivery contract (house rule 5): a message is PUBACKed only when the ingestor calls
:meth:`MqttSource.ack` after InfluxDB accepted its points. paho is created with
``manual_ack=True``; messages arrive on paho's network thread and are only put on a queue for the
worker there (no decoding, no I/O on that thread). The session is persistent (``clean_start``
False and a session expiry), so messages not yet acknowledged when the ingestor stops or crashes
are redelivered by the broker on the next connection, and the broker keeps queueing while we
are away. MQTT 5's Receive Maximum (``mqtt.max_inflight``) bounds how many unacknowledged
messages the broker sends us, which bounds the ingestor's memory.

Packet ids are per connection: a message received before a reconnect is redelivered after it
(with the same id, MQTT 5 section 4.4), so acknowledging the old copy on the new connection could
acknowledge a *different* message that reuses the id. Every message therefore carries the
connection ``generation`` it arrived on, and acks of older generations are skipped (counted as
``stale_acks``): the redelivered copy is written again (idempotently) and acknowledged instead.

Locking: paho calls back with its internal mutex held, so no lock of ours is ever held while
calling into paho (see edge/sinks/mqtt.py).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from cloud.config import MqttSettings

__all__ = ["Message", "MqttSource", "SourceStats"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Message:
    """One received MQTT message, as handed to the worker."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    retain: bool
    generation: int
    received_ns: int


@dataclass
class SourceStats:
    received: int = 0
    bytes: int = 0
    acked: int = 0
    stale_acks: int = 0
    connects: int = 0
    disconnects: int = 0
    connected: bool = False
    subscribed: bool = False


class MqttSource:
    """Subscribes at QoS 1 and queues messages; ``ack`` after durable storage; ``publish`` for acks."""

    def __init__(self, settings: MqttSettings, *, session_expiry_s: int) -> None:
        self.settings = settings
        self.queue: queue.Queue[Message] = queue.Queue()
        self.stats = SourceStats()
        self._generation = 0
        self._pending_subs = 0
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        # Set before connect(): paho 2.x refuses afterwards (shared/MEASURED.md trap 9).
        self._client.max_inflight_messages_set(settings.max_inflight)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        if settings.username:
            password = os.environ.get(settings.password_env) if settings.password_env else None
            self._client.username_pw_set(settings.username, password)
        if settings.tls is not None:
            t = settings.tls
            # Server certificate and hostname are always verified (paho's defaults: CERT_REQUIRED).
            self._client.tls_set(
                ca_certs=str(t.ca_file) if t.ca_file else None,
                certfile=str(t.cert_file) if t.cert_file else None,
                keyfile=str(t.key_file) if t.key_file else None,
                keyfile_password=os.environ.get(t.key_password_env) if t.key_password_env else None,
            )
        self._session_expiry_s = session_expiry_s
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect asynchronously; paho reconnects in its own thread until :meth:`stop`."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self._session_expiry_s
        props.ReceiveMaximum = self.settings.max_inflight
        self._client.connect_async(
            self.settings.host, self.settings.port, self.settings.keepalive_s, clean_start=False, properties=props
        )
        self._client.loop_start()

    def wait_subscribed(self, timeout_s: float) -> bool:
        return self._subscribed.wait(timeout_s)

    def stop(self) -> None:
        """Disconnect (unacknowledged messages stay with the broker's session) and end paho's thread."""
        self._client.disconnect()
        self._client.loop_stop()

    # -- worker side --------------------------------------------------------------------------------
    def ack(self, msg: Message) -> bool:
        """PUBACK ``msg`` if it arrived on the current connection; False (counted) otherwise."""
        if msg.qos == 0:
            self.stats.acked += 1  # nothing to send, but no longer pending
            return True
        if msg.generation != self._generation:
            self.stats.stale_acks += 1
            return False
        self._client.ack(msg.mid, msg.qos)
        self.stats.acked += 1
        return True

    def publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        """QoS 1 publish (paho queues it while disconnected and sends it on reconnect)."""
        self._client.publish(topic, payload, qos=1, retain=retain)

    @property
    def connected(self) -> bool:
        return self.stats.connected

    # -- paho callbacks (network thread) ------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object, props: object) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("mqtt connect to %s:%s refused: %s", self.settings.host, self.settings.port, reason)
            return
        self._generation += 1
        self.stats.connects += 1
        self.stats.connected = True
        log.info(
            "mqtt connected to %s:%s (session present: %s)",
            self.settings.host,
            self.settings.port,
            getattr(flags, "session_present", "?"),
        )
        shared = self.settings.topic.startswith("$share/")
        # noLocal: we publish retained acks under the same tree; we do not want them back. MQTT 5
        # forbids noLocal on shared subscriptions, where the ack lane is simply ignored.
        subs = [(self.settings.topic, SubscribeOptions(qos=1, noLocal=not shared))]
        if shared:
            # Every ingestor of the group needs every signal table (MQTT 5 sends no retained
            # messages to a shared subscription) and every peer's acks, to publish their union.
            subs += [(t, SubscribeOptions(qos=1, noLocal=True)) for t in self.settings.broadcast_topics]
        self._pending_subs = len(subs)
        for topic, opts in subs:
            client.subscribe(topic, options=opts)

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, reasons: object, props: object) -> None:
        codes = list(reasons) if isinstance(reasons, list) else [reasons]
        if any(getattr(c, "is_failure", False) for c in codes):
            log.error("mqtt subscription to %r refused: %s", self.settings.topic, codes)
            return
        self._pending_subs -= 1
        if self._pending_subs <= 0:
            self.stats.subscribed = True
            self._subscribed.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        if self.stats.connected:
            # Our own disconnect() (a clean stop) comes back as "Normal disconnection": not a warning.
            level = logging.WARNING if getattr(reason, "is_failure", True) else logging.INFO
            log.log(level, "mqtt disconnected: %s", reason)
        self.stats.connected = False
        self.stats.subscribed = False
        self.stats.disconnects += 1

    def _on_message(self, client: mqtt.Client, userdata: object, m: mqtt.MQTTMessage) -> None:
        payload = bytes(m.payload)
        self.stats.received += 1
        self.stats.bytes += len(payload)
        self.queue.put(Message(m.topic, payload, m.mid, m.qos, bool(m.retain), self._generation, time.time_ns()))
