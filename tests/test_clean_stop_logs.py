"""A clean stop is not an incident: no WARNING for our own MQTT disconnect; a lost broker still warns."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

import pytest

from edge.config import MqttSettings
from edge.sinks.mqtt import MqttPublisher
from plantwire.services import Mosquitto


def wait(cond: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_clean_stop_logs_no_warning_but_a_lost_broker_does(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge.sinks.mqtt")
    with Mosquitto(tmp_path / "broker") as broker:
        pub = MqttPublisher(MqttSettings(host=broker.host, port=broker.port), f"stop-{uuid.uuid4().hex[:6]}")
        pub.start()
        wait(lambda: pub.connected)
        pub.stop()
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
        assert "Normal disconnection" in caplog.text  # still said, at INFO

        pub = MqttPublisher(MqttSettings(host=broker.host, port=broker.port), f"lost-{uuid.uuid4().hex[:6]}")
        pub.start()
        try:
            wait(lambda: pub.connected)
            broker.stop()
            wait(lambda: any(r.levelno == logging.WARNING and "mqtt disconnected" in r.getMessage()
                             for r in caplog.records))
        finally:
            pub.stop()
