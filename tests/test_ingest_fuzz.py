"""The ingestor's message path never raises, whatever arrives: every payload is stored, held or dead-lettered.

Runs ``Ingestor._prepare`` (routing, decoding, line protocol, dead letters) offline: constructing an
ingestor touches no network, so no servers are needed. Payloads are random bytes, and valid wire
payloads with bit flips, truncations and splices, on valid and invalid topics. The long run (at
least 1,000,000 payloads, issue 6) is ``PLANTWIRE_FUZZ_EXAMPLES=1000000 pytest tests/test_ingest_fuzz.py -m slow``;
the default run keeps 300 examples, ``slow`` the 1,500 it had.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud.app import Ingestor
from cloud.config import CloudConfig
from cloud.sources.mqtt import Message
from plantwire import wire

EXAMPLES = int(os.environ.get("PLANTWIRE_FUZZ_EXAMPLES", "1500"))
QUICK_EXAMPLES = 300
FUZZED: list[int] = []  # payloads per example, for the report at the end of a long run
GW = "gw-f"
SITE = "s"
HASH = b"fuzzhash"


def _valid_payloads() -> list[bytes]:
    rng = np.random.default_rng(0)
    n = 50
    cols = {
        "ts_ns": np.arange(n, dtype=np.int64) * 1000 + time.time_ns(),
        "signal": (np.arange(n) % 5).astype(np.uint32),
        "value": rng.normal(0, 1, n),
        "quality": np.zeros(n, np.uint8),
    }
    table = wire.encode_signal_table(
        gateway=GW,
        table_hash=HASH,
        site=SITE,
        ids=[f"x{i}" for i in range(5)],
        machines=["m"] * 5,
        units=[""] * 5,
        kinds=["a"] * 5,
    )
    events = wire.encode_events(
        GW,
        1,
        [
            {
                "type": "alarm",
                "state": "open",
                "kind": "ewma",
                "signal": "x1",
                "start_ns": 1,
                "end_ns": None,
                "peak": 0.5,
            }
        ],
    )
    return [
        wire.encode_batch(gateway=GW, boot_epoch_ns=1, seq=0, table_hash=HASH, **cols),
        table,
        events,
        json.dumps({"status": "online", "gateway": GW}).encode(),
        json.dumps(
            {
                "status": "online",
                "gateway": GW,
                "boot_epoch_ns": 5,
                "ts_ns": time.time_ns(),
                "log_bytes": 10,
                "log_records": 1,
                "oldest_unacked_age_s": 0.5,
                "dropped_samples": 3,
            }
        ).encode(),
        wire.encode_ack(wire.Ack(GW, 1, 3, ((5, 9),))),
    ]


VALID = _valid_payloads()
TOPICS = [wire.topic(SITE, GW, lane) for lane in ("telemetry", "signals", "events", "health", "ack", "x")] + [
    "plantwire/v1/s",
    "other/topic",
    wire.topic(SITE, "gw-other", "telemetry"),
    wire.topic("s2", GW, "signals"),
]


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=300))
    base = bytearray(VALID[draw(st.integers(0, len(VALID) - 1))])
    if kind == 1:  # flip bits
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(base) - 1))
            base[i] ^= 1 << draw(st.integers(0, 7))
        return bytes(base)
    if kind == 2:  # truncate or extend
        cut = draw(st.integers(0, len(base)))
        return bytes(base[:cut]) + draw(st.binary(max_size=20))
    # overwrite a header field with extreme values (lengths, counts, kinds)
    i = draw(st.integers(0, min(40, len(base) - 1)))
    chunk = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f", b"\x02", b"\x01"]))
    base[i : i + len(chunk)] = chunk
    return bytes(base)


@pytest.fixture(scope="module")
def ingestor(tmp_path_factory: pytest.TempPathFactory) -> Ingestor:
    d = tmp_path_factory.mktemp("fuzz")
    cfg = CloudConfig.model_validate(
        {
            "mqtt": {"port": 1},
            "influx": {"url": "http://127.0.0.1:1"},
            "state_dir": str(d),
            "metrics": {"port": 0},
            "ingest": {"held_max_messages": 5, "dead_letter_max_bytes": 1 << 20},
        }
    )
    ing = Ingestor(cfg)
    ing.dead.fsync = False
    ing.tables.add(VALID[1])
    return ing


def _message_path_never_raises_and_accounts_for_every_message(
    ingestor: Ingestor, msgs: list[tuple[str, bytes]]
) -> None:
    batch = [Message(t, p, i + 1, 1, False, 0, time.time_ns()) for i, (t, p) in enumerate(msgs)]
    FUZZED.append(len(batch))
    held_before = set(ingestor.held)
    w = ingestor._prepare(batch)
    new_held = [m for k, (m, _) in ingestor.held.items() if k not in held_before]
    ingestor.held.clear()  # held batches would be written later; here only accounting matters
    accounted = [id(m) for m in (w.msgs if w else [])] + [id(m) for m in new_held]
    assert sorted(accounted) == sorted(id(m) for m in batch)  # each acked (stored/dead-lettered) or held, once
    if w is not None and w.parts:
        body = b"".join(p.tobytes() for p in w.parts)
        assert body.endswith(b"\n")
        for line in body.split(b"\n")[:-1]:
            assert line.count(b" ") >= 2, line  # measurement+tags, fields, timestamp


def _message_path_test(examples: int) -> Any:
    run = given(st.lists(st.tuples(st.sampled_from(TOPICS), payloads()), min_size=1, max_size=5))
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
                    )(run(_message_path_never_raises_and_accounts_for_every_message))


# The default run's share; the full count (and the long run's, PLANTWIRE_FUZZ_EXAMPLES) under slow.
test_message_path_never_raises_and_accounts_for_every_message = _message_path_test(QUICK_EXAMPLES)
test_message_path_never_raises_full = pytest.mark.slow(_message_path_test(EXAMPLES))


def test_zstd_frame_claiming_an_absurd_size_is_dead_lettered(ingestor: Ingestor) -> None:
    """Found by the long fuzz run: zstandard raises MemoryError, not ZstdError, for this header."""
    head = wire.encode_batch(
        gateway=GW,
        boot_epoch_ns=1,
        seq=0,
        table_hash=HASH,
        ts_ns=np.zeros(50, np.int64),
        signal=np.zeros(50, np.uint32),
        value=np.zeros(50),
        quality=np.zeros(50, np.uint8),
    )
    frame = b"(\xb5/\xfd\xe4\x1a\x03\x05\x0e\x00t\x18\x08\xe8\x86\x03\xc3\x00\x8a" + bytes(200)
    payload = head[: len(head) - len(head.split(b"(\xb5/\xfd", 1)[1]) - 4] + frame
    m = Message(TOPICS[0], payload, 1, 1, False, 0, time.time_ns())
    before = ingestor.m_dead.get(reason="malformed")
    w = ingestor._prepare([m])
    assert w is not None and w.msgs == [m]
    assert ingestor.m_dead.get(reason="malformed") == before + 1


@pytest.mark.parametrize("lane", ["events", "health", "ack"])
def test_deeply_nested_json_is_dead_lettered(ingestor: Ingestor, lane: str) -> None:
    """json.loads raises RecursionError (not a ValueError) for 100 kB of '['; found by tests/chaos."""
    m = Message(wire.topic(SITE, GW, lane), b"[" * 100_000, 1, 1, False, 0, time.time_ns())
    before = ingestor.m_dead.get(reason="malformed")
    w = ingestor._prepare([m])
    assert w is not None and w.msgs == [m]
    assert ingestor.m_dead.get(reason="malformed") == before + 1


def test_infinite_event_times_dead_letter_the_event_alone(ingestor: Ingestor) -> None:
    """``"start_ns": Infinity`` is valid to Python's json; int() of it raises OverflowError."""
    t = time.time_ns()
    events = [
        {"type": "alarm", "state": "open", "kind": "ewma", "signal": "x1", "start_ns": float("inf"), "peak": 0.5},
        {"type": "health", "machine": "m", "ts_ns": float("inf"), "health": 0.5},
        {
            "type": "alarm",
            "state": "closed",
            "kind": "ewma",
            "signal": "x1",
            "start_ns": t,
            "end_ns": float("inf"),
            "peak": 0.5,
        },
        {"type": "health", "machine": "m", "ts_ns": t, "health": 0.5},
    ]
    payload = json.dumps({"v": 1, "gateway": GW, "boot_epoch_ns": 1, "events": events}).encode()
    m = Message(wire.topic(SITE, GW, "events"), payload, 1, 1, False, 0, t)
    before = ingestor.m_dead.get(reason="schema")
    w = ingestor._prepare([m])
    assert w is not None and w.msgs == [m]
    assert ingestor.m_dead.get(reason="schema") == before + 3
    assert b"".join(p.tobytes() for p in w.parts).startswith(b"health,")  # the good event is kept


def test_every_fuzzed_telemetry_message_is_acked_or_held(ingestor: Ingestor) -> None:
    """Deterministic spot check of the accounting the property test relies on."""
    m = Message(TOPICS[0], VALID[0][:-3], 1, 1, False, 0, time.time_ns())
    w = ingestor._prepare([m])
    assert w is not None and w.msgs == [m] and not w.parts
    assert ingestor.m_dead.get(reason="malformed") >= 1


def test_report_how_many_payloads_were_fuzzed() -> None:
    """Run with ``-s`` to see the count (the long run must reach 1,000,000)."""
    print(f"\nfuzzed payloads: {sum(FUZZED)} in {len(FUZZED)} examples")
