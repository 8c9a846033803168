"""A Sparkplug B host application built on pysparkplug (PyPI), an implementation we did not write.

pysparkplug's ``Client`` subscribes, parses topics, decodes every payload and resolves DATA aliases
through the BIRTH it saw; this helper only records what it decoded and keeps the view a SCADA host
keeps: per device, each metric's latest value (by name), online/offline, and the seq and bdSeq rules
checked message by message (violations collected in ``errors``). Properties (``Quality``, ``engUnit``)
are not modelled by pysparkplug's ``Metric``; BIRTH payloads are also decoded with pysparkplug's own
generated protobuf module to read them.

pysparkplug 0.6.1 pins paho-mqtt<2 but only calls one method that paho 2 removed,
``message_retry_set`` (a no-op since paho 1.5); the shim below restores it, so the library runs on
the paho 2.x the project uses (installed with ``--no-deps``, see the Makefile).
"""

from __future__ import annotations

import threading
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho

if not hasattr(paho.Client, "message_retry_set"):
    paho.Client.message_retry_set = lambda self, retry: None  # type: ignore[attr-defined]

try:
    import pysparkplug as psp
    from pysparkplug._protobuf import Payload as PspPayload
except ImportError as exc:  # not in pyproject's dev extra: its paho-mqtt<2 pin would clash with ours
    raise ImportError("pysparkplug is missing: `make venv` installs it (pip install --no-deps "
                      "'pysparkplug==0.6.1')") from exc


@dataclass
class Seen:
    """One decoded message."""

    kind: str  # MessageType value
    device: str | None
    payload: Any  # pysparkplug payload object
    at: float = field(default_factory=time.monotonic)
    properties: dict[str, dict[str, Any]] | None = None  # BIRTH: metric name -> {key: value}


class Host:
    def __init__(self, port: int, group_id: str, edge_node_id: str, *, host_id: str | None = None) -> None:
        self.port = port
        self.group_id = group_id
        self.edge_node_id = edge_node_id
        self.host_id = host_id
        self.seen: list[Seen] = []
        self.errors: list[str] = []
        self.view: dict[str, dict[str, Any]] = {}  # device -> metric name -> latest live value
        self.historical: dict[str, dict[str, list[tuple[int, Any]]]] = {}  # device -> name -> [(ts_ms, value)]
        self.devices_online: dict[str, bool] = {}
        self.node_online = False
        self.bd_seq: int | None = None
        self._last_seq: int | None = None
        self._cond = threading.Condition()
        self._state_ts = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # paho's callback API v1, pysparkplug's choice
            self.client = psp.Client(client_id=f"host-{uuid.uuid4().hex[:8]}")
        self.client._client.suppress_exceptions = True
        self.client.subscribe(psp.Topic(group_id=group_id, message_type="#"), psp.QoS.AT_LEAST_ONCE,  # type: ignore[arg-type]
                              self._on_message)
        self.client._client.message_callback_add(f"spBv1.0/{group_id}/NBIRTH/#", self._on_raw_birth)
        self.client._client.message_callback_add(f"spBv1.0/{group_id}/DBIRTH/#", self._on_raw_birth)
        self._raw_births: dict[tuple[str, str | None], dict[str, dict[str, Any]]] = {}
        if host_id is not None:
            self.client.set_will(self._state_message(False, int(time.time() * 1000)))
            self.client.subscribe(psp.Topic(message_type=psp.MessageType.STATE, sparkplug_host_id=host_id),
                                  psp.QoS.AT_LEAST_ONCE, self._on_message)

    # -- control -------------------------------------------------------------------------------
    def start(self, *, online: bool = True) -> None:
        def connected(client: psp.Client) -> None:
            if self.host_id is not None and online:
                self.publish_state(True)

        self.client.connect("127.0.0.1", port=self.port, blocking=False, callback=connected)

    def stop(self) -> None:
        self.client.disconnect()

    def _state_message(self, online: bool, ts_ms: int) -> psp.Message:
        assert self.host_id is not None
        return psp.Message(topic=psp.Topic(message_type=psp.MessageType.STATE, sparkplug_host_id=self.host_id),
                           payload=psp.State(timestamp=ts_ms, online=online), qos=psp.QoS.AT_LEAST_ONCE,
                           retain=True)

    def publish_state(self, online: bool) -> None:
        self._state_ts = max(self._state_ts + 1, int(time.time() * 1000))
        self.client.publish(self._state_message(online, self._state_ts))

    def rebirth(self) -> None:
        now = psp.get_current_timestamp()
        metric = psp.Metric(timestamp=now, name="Node Control/Rebirth", datatype=psp.DataType.BOOLEAN, value=True)
        self.client.publish(psp.Message(
            topic=psp.Topic(group_id=self.group_id, message_type=psp.MessageType.NCMD, edge_node_id=self.edge_node_id),
            payload=psp.NCmd(timestamp=now, metrics=(metric,)), qos=psp.QoS.AT_MOST_ONCE, retain=False,
        ), include_dtypes=True)

    def dcmd(self, device: str, name: str, value: float) -> None:
        """A well-formed DCMD writing ``value`` to ``name`` (the edge node refuses writes)."""
        now = psp.get_current_timestamp()
        metric = psp.Metric(timestamp=now, name=name, datatype=psp.DataType.DOUBLE, value=value)
        self.client.publish(psp.Message(
            topic=psp.Topic(group_id=self.group_id, message_type=psp.MessageType.DCMD, edge_node_id=self.edge_node_id,
                            device_id=device),
            payload=psp.DCmd(timestamp=now, metrics=(metric,)), qos=psp.QoS.AT_MOST_ONCE, retain=False,
        ), include_dtypes=True)

    def raw_publish(self, topic: str, payload: bytes) -> None:
        self.client._client.publish(topic, payload, qos=0)

    # -- waiting -------------------------------------------------------------------------------
    def wait(self, pred: Callable[[], Any], timeout_s: float, what: str) -> Any:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                got = pred()
                if got:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"host: timed out after {timeout_s:.0f} s waiting for {what}; "
                                         f"seen {[s.kind for s in self.seen[-12:]]}, errors {self.errors[:5]}")
                self._cond.wait(min(left, 0.5))

    def count(self, kind: str, since: int = 0) -> int:
        return sum(1 for s in self.seen[since:] if s.kind == kind)

    def of(self, kind: str, since: int = 0) -> list[Seen]:
        return [s for s in self.seen[since:] if s.kind == kind]

    def properties(self, device: str | None) -> dict[str, dict[str, Any]]:
        return self._raw_births.get((self.edge_node_id, device), {})

    # -- pysparkplug callbacks (paho's thread) -------------------------------------------------------
    def _on_raw_birth(self, client: Any, userdata: Any, msg: Any) -> None:
        parts = msg.topic.split("/")
        device = parts[4] if len(parts) > 4 else None
        p = PspPayload.FromString(msg.payload)
        props: dict[str, dict[str, Any]] = {}
        for m in p.metrics:
            if m.HasField("properties"):
                props[m.name] = {k: getattr(v, v.WhichOneof("value")) for k, v in zip(
                    m.properties.keys, m.properties.values, strict=True)}
        with self._cond:
            self._raw_births[(parts[3], device)] = props

    def _check_seq(self, seq: int, kind: str) -> None:
        if kind == "NBIRTH":
            if seq != 0:
                self.errors.append(f"NBIRTH seq {seq} != 0")
        elif self._last_seq is None:
            self.errors.append(f"{kind} seq {seq} before any NBIRTH")
        elif seq != (self._last_seq + 1) % 256:
            self.errors.append(f"{kind} seq {seq} after {self._last_seq}")
        self._last_seq = seq

    def _on_message(self, client: psp.Client, message: psp.Message) -> None:
        t = message.topic
        kind = str(t.message_type)
        p = message.payload
        with self._cond:
            if kind == "STATE" or t.edge_node_id != self.edge_node_id:
                self.seen.append(Seen(kind, None, p))
                self._cond.notify_all()
                return
            dev = t.device_id
            if kind in ("NBIRTH", "DBIRTH", "DDATA", "NDATA", "DDEATH"):
                self._check_seq(p.seq, kind)
            if kind == "NBIRTH":
                bd = [m.value for m in p.metrics if m.name == "bdSeq"]
                if len(bd) != 1:
                    self.errors.append("NBIRTH without one bdSeq")
                elif self.bd_seq is not None and not self.node_online and bd[0] == self.bd_seq:
                    pass  # same session's will was not fired (rebirth after clean state)
                self.bd_seq = bd[0] if bd else None
                self.node_online = True
            elif kind == "NDEATH":
                bd = p.bd_seq_metric.value
                if bd != self.bd_seq:
                    self.errors.append(f"NDEATH bdSeq {bd} != NBIRTH bdSeq {self.bd_seq}")
                self.node_online = False
                self._last_seq = None
                for d in self.devices_online:
                    self.devices_online[d] = False
            elif kind == "DBIRTH":
                assert dev is not None
                self.view[dev] = {m.name: m.value for m in p.metrics}
                self.devices_online[dev] = True
            elif kind == "DDEATH":
                assert dev is not None
                self.devices_online[dev] = False
            elif kind == "DDATA":
                assert dev is not None
                cur = self.view.setdefault(dev, {})
                for m in p.metrics:
                    if m.name is None:
                        self.errors.append(f"DDATA metric alias {m.alias} not in the DBIRTH of {dev}")
                    elif m.is_historical:
                        self.historical.setdefault(dev, {}).setdefault(m.name, []).append((m.timestamp, m.value))
                    else:
                        cur[m.name] = m.value
            self.seen.append(Seen(kind, dev, p))
            self._cond.notify_all()
