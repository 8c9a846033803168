"""MqttPublisher against a real Mosquitto: per-message PUBACK callbacks, subscriptions that survive a broker
restart, connect listeners, and a failing callback that is counted instead of killing paho's thread."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import MqttSettings
from edge.sinks.mqtt import MqttPublisher
from plantwire.services import Mosquitto

pytestmark = pytest.mark.integration


def wait(cond: Callable[[], bool], timeout_s: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def side_publish(broker: Mosquitto, topic: str, payload: bytes) -> None:
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"side-{uuid.uuid4().hex[:6]}")
    c.connect(broker.host, broker.port)
    c.loop_start()
    c.publish(topic, payload, qos=1).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


def test_puback_callback_subscription_and_connect_listener(mosquitto: Mosquitto) -> None:
    pub = MqttPublisher(MqttSettings(host=mosquitto.host, port=mosquitto.port), f"pub-{uuid.uuid4().hex[:6]}")
    got: list[tuple[str, bytes]] = []
    connects: list[int] = []
    acked = threading.Event()
    pub.subscribe("t/ack", lambda topic, payload: got.append((topic, payload)))
    pub.add_connect_listener(lambda: connects.append(1))
    pub.start()
    try:
        wait(lambda: pub.connected and len(connects) == 1, what="connect")
        mid = pub.publish("t/data", b"x", 3, on_acked=acked.set)
        assert isinstance(mid, int)
        assert acked.wait(5)
        assert pub.stats.samples_acked == 3 and pub.inflight == 0
        time.sleep(0.2)  # SUBACK
        side_publish(mosquitto, "t/ack", b"hello")
        wait(lambda: got == [("t/ack", b"hello")], what="subscribed message")
        # broker restart: the listener runs again and the subscription is re-established
        mosquitto.stop()
        wait(lambda: not pub.connected, what="disconnect")
        mosquitto.start()
        wait(lambda: pub.connected and len(connects) == 2, timeout_s=40, what="reconnect")
        time.sleep(0.2)
        side_publish(mosquitto, "t/ack", b"again")
        wait(lambda: got[-1] == ("t/ack", b"again"), what="message after reconnect")
    finally:
        pub.stop()


def test_failing_callback_is_counted_and_paho_carries_on(mosquitto: Mosquitto) -> None:
    pub = MqttPublisher(MqttSettings(host=mosquitto.host, port=mosquitto.port), f"pub-{uuid.uuid4().hex[:6]}")
    got: list[bytes] = []

    def bad(topic: str, payload: bytes) -> None:
        if payload == b"boom":
            raise RuntimeError("handler bug")
        got.append(payload)

    pub.subscribe("t/in", bad)
    pub.start()
    try:
        wait(lambda: pub.connected, what="connect")
        time.sleep(0.2)
        side_publish(mosquitto, "t/in", b"boom")
        side_publish(mosquitto, "t/in", b"fine")
        wait(lambda: got == [b"fine"], what="second message")
        assert pub.stats.callback_errors == 1
        pub.publish("t/x", b"y", 1, on_acked=lambda: 1 / 0)
        assert pub.wait_acked(5)
        wait(lambda: pub.stats.callback_errors == 2, what="ack callback error")
    finally:
        pub.stop()
