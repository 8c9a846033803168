"""``plantwire actions`` against a real broker: the command goes out on the gateway's actions topic as the
operator asked, a gateway that does not answer is exit 3 (not a success), a broker that is not there exit 4.
The answered outcomes (applied, dry run, refused) are checked end to end in tests/test_actions_e2e.py."""

from __future__ import annotations

import json
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cloud.actions_cli import main
from plantwire.ports import free_port
from plantwire.services import Mosquitto


def test_request_is_published_and_no_answer_or_no_broker_is_not_success(mosquitto: Mosquitto, capsys) -> None:
    got: list[dict] = []
    subscribed, seen = threading.Event(), threading.Event()
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="gw-quiet")
    c.on_subscribe = lambda *_a: subscribed.set()
    c.on_message = lambda _c, _u, m: (got.append({"topic": m.topic, **json.loads(m.payload)}), seen.set())
    c.connect("127.0.0.1", mosquitto.port)
    c.subscribe("plantwire/cmd/v1/site-a/gw-quiet/#", qos=1)
    c.loop_start()
    try:
        assert subscribed.wait(10)
        rc = main(["--broker", f"127.0.0.1:{mosquitto.port}", "--timeout", "1", "--actor", "ann", "request",
                   "leak01.hold", "1", "--site", "site-a", "--gateway", "gw-quiet", "--reason", "seal check"])
        assert rc == 3 and "no answer from gateway gw-quiet" in capsys.readouterr().err
        assert seen.wait(10)
        doc = got[0]
        assert doc["topic"] == "plantwire/cmd/v1/site-a/gw-quiet/actions"
        assert (doc["action"], doc["target"], doc["value"], doc["actor"], doc["reason"]) == (
            "write", "leak01.hold", 1, "ann", "seal check") and doc["id"] and doc["ts_ns"] > 0
    finally:
        c.loop_stop()
        c.disconnect()
    rc = main(["--broker", f"127.0.0.1:{free_port()}", "--timeout", "2", "request", "x", "1", "--site", "s",
               "--gateway", "g"])
    assert rc == 4 and "plantwire actions: broker" in capsys.readouterr().err
