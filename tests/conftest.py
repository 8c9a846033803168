"""Fixtures that start real servers on free loopback ports (plantwire.services); nothing autouse.

``mosquitto`` is per test (a broker's retained messages and sessions would leak between tests);
``influxdb`` and ``victoria`` are per session, and ``influx_db`` gives each test its own fresh
database on the shared InfluxDB, dropped afterwards. A test that needs to stop or crash a server
starts its own instance instead of touching the shared one.
"""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterator

import pytest

from plantwire.logs import setup_logging
from plantwire.services import InfluxDB1, Mosquitto, VictoriaMetrics


@pytest.fixture
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB1]:
    server = InfluxDB1(tmp_path_factory.mktemp("influxdb"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def influx_db(influxdb: InfluxDB1) -> Iterator[str]:
    """A fresh, empty database on the session's InfluxDB; its name is unique to the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    influxdb.query(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        if influxdb.running:
            influxdb.query(f'DROP DATABASE "{name}"')


@pytest.fixture(scope="session")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    server = VictoriaMetrics(tmp_path_factory.mktemp("victoria"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def log_text() -> Iterator[io.StringIO]:
    """The daemons' real logging set-up (rate limiter included), writing into a buffer; restored afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    setup_logging("INFO", stream=out)
    yield out
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
