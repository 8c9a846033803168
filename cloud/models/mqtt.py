"""A short-lived, synchronous MQTT 5 session for the ``plantwire models`` commands (publish, clear, status).

Why not the ingestor's source: a command connects, does one job, waits for every acknowledgement with a
deadline and disconnects; it needs no reconnect loop or manual acks. Every QoS 1 publish is checked for its
PUBACK reason code, so a broker ACL refusal (MQTT 5: 0x87 not authorised) is an error naming the topic
instead of a silent drop. TLS and credentials are the ingestor's settings (``cloud.config.MqttSettings``).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cloud.config import MqttSettings


class MqttCommandError(RuntimeError):
    """The broker could not be reached, refused us, or did not acknowledge in time."""


class PublishRefused(MqttCommandError):
    """The broker refused a publish (reason code >= 0x80), typically its ACL: ``topic`` and ``reason_code``."""

    def __init__(self, topic: str, reason_code: int) -> None:
        super().__init__(f"broker refused publish to {topic!r} (MQTT 5 reason code {reason_code:#x}"
                         f"{': not authorised by the ACL' if reason_code == 0x87 else ''})")
        self.topic = topic
        self.reason_code = reason_code


@dataclass
class _State:
    cond: threading.Condition = field(default_factory=threading.Condition)
    connected: int | None = None  # reason code of CONNACK
    pubacks: dict[int, int] = field(default_factory=dict)
    subacks: dict[int, list[int]] = field(default_factory=dict)
    messages: dict[str, bytes] = field(default_factory=dict)  # topic -> latest payload (retained first)


class Session:
    """Connect on enter, disconnect on exit; ``publish`` waits for PUBACK; ``retained`` collects a snapshot."""

    def __init__(self, settings: MqttSettings, *, client_id: str | None = None, timeout_s: float = 30.0) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self.state = _State()
        self.client_id = client_id or f"plantwire-models-{os.getpid()}-{time.monotonic_ns()}"
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                  protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(64)  # before connect (paho 2.x, shared/MEASURED.md trap 9)
        if settings.username:
            password = os.environ.get(settings.password_env) if settings.password_env else None
            self.client.username_pw_set(settings.username, password)
        if settings.tls is not None:
            t = settings.tls
            self.client.tls_set(ca_certs=str(t.ca_file) if t.ca_file else None,
                                certfile=str(t.cert_file) if t.cert_file else None,
                                keyfile=str(t.key_file) if t.key_file else None,
                                keyfile_password=os.environ.get(t.key_password_env) if t.key_password_env else None)
        s = self.state

        def on_connect(client: mqtt.Client, userdata: object, flags: object, rc: object, props: object = None) -> None:
            with s.cond:
                s.connected = int(getattr(rc, "value", rc))  # type: ignore[call-overload]
                s.cond.notify_all()

        def on_publish(client: mqtt.Client, userdata: object, mid: int, rc: object, props: object = None) -> None:
            with s.cond:
                s.pubacks[mid] = int(getattr(rc, "value", rc))  # type: ignore[call-overload]
                s.cond.notify_all()

        def on_subscribe(client: mqtt.Client, userdata: object, mid: int, rcs: list[object],
                         props: object = None) -> None:
            with s.cond:
                s.subacks[mid] = [int(getattr(r, "value", r)) for r in rcs]  # type: ignore[call-overload]
                s.cond.notify_all()

        def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
            with s.cond:
                s.messages[msg.topic] = bytes(msg.payload)
                s.cond.notify_all()

        self.client.on_connect = on_connect
        self.client.on_publish = on_publish
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message

    def _wait(self, pred: object, what: str) -> None:
        with self.state.cond:
            if not self.state.cond.wait_for(pred, self.timeout_s):  # type: ignore[arg-type]
                raise MqttCommandError(f"{what}: no answer from {self.settings.host}:{self.settings.port} "
                                       f"within {self.timeout_s:g} s")

    def __enter__(self) -> Session:
        try:
            self.client.connect(self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s)
        except (OSError, ValueError) as exc:
            raise MqttCommandError(f"cannot connect to {self.settings.host}:{self.settings.port}: {exc}") from exc
        self.client.loop_start()
        try:
            self._wait(lambda: self.state.connected is not None, "CONNACK")
        except MqttCommandError:
            self.client.loop_stop()
            raise
        if self.state.connected != 0:
            self.client.loop_stop()
            raise MqttCommandError(f"broker {self.settings.host}:{self.settings.port} refused the connection "
                                   f"(reason code {self.state.connected:#x})")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish_many(self, items: list[tuple[str, bytes]], *, retain: bool) -> None:
        """Publish at QoS 1 and wait for every PUBACK; raises PublishRefused for the first refused topic."""
        mids: list[tuple[int, str]] = []
        for topic, payload in items:
            info = self.client.publish(topic, payload, qos=1, retain=retain)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise MqttCommandError(f"publish to {topic!r} failed locally: {mqtt.error_string(info.rc)}")
            mids.append((info.mid, topic))
        self._wait(lambda: all(m in self.state.pubacks for m, _ in mids), f"PUBACK for {len(mids)} message(s)")
        for mid, topic in mids:
            rc = self.state.pubacks[mid]
            if rc >= 0x80:
                raise PublishRefused(topic, rc)

    def retained(self, topic_filter: str, settle_s: float = 1.0) -> dict[str, bytes]:
        """The retained messages on ``topic_filter`` (a snapshot), without guessing how long to wait.

        Mosquitto queues a subscription's retained messages right after its SUBACK, and delivers a client's
        messages in order; so after the SUBACK we publish a probe (QoS 1, not retained) to a topic of our own
        that we subscribed to as well: once the probe is back, every retained message is in. A user the ACL
        does not let write the probe topic gets a refusal; then we wait ``settle_s`` instead.
        """
        probe = f"plantwire/models/v1/_probe/{self.client_id}"
        rc, mid = self.client.subscribe([(topic_filter, 1), (probe, 1)])
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise MqttCommandError(f"subscribe to {topic_filter!r} failed locally: {mqtt.error_string(rc)}")
        self._wait(lambda: mid in self.state.subacks, f"SUBACK for {topic_filter!r}")
        if self.state.subacks[mid][0] >= 0x80:
            raise MqttCommandError(f"broker refused subscription to {topic_filter!r} "
                                   f"(reason code {self.state.subacks[mid][0]:#x})")
        token = os.urandom(8)
        info = self.client.publish(probe, token, qos=1)
        self._wait(lambda: self.state.messages.get(probe) == token
                   or self.state.pubacks.get(info.mid, 0) >= 0x80, "probe after the retained messages")
        if self.state.messages.get(probe) != token:  # probe not allowed: fall back to a quiet period
            with self.state.cond:
                self.state.cond.wait(settle_s)
        self.client.unsubscribe([topic_filter, probe])
        with self.state.cond:
            return {t: p for t, p in self.state.messages.items() if mqtt.topic_matches_sub(topic_filter, t)}
