"""Fuzz the wire decoders and the ingestor's message path with mutations of valid payloads (issue 6 item 7).

Pure random bytes die at the 2-byte magic; mutations of valid payloads reach every field. A seeded
numpy generator (:class:`Mutator`) applies one of: bit flips, truncation, splices of two payloads,
length-field lies (1/2/4/8-byte extremes written over header bytes), block insertion and deletion,
lies in the zstd frame header (content size, descriptor), mutations *under* the compression (the
plaintext is mutated and recompressed with a valid checksum, so the column and JSON decoders behind
zstd are reached), and structural JSON mutations (a field replaced by a value of another type, out
of range, NaN, nested or huge). Each payload goes through ``decode_batch``, ``decode_signal_table``,
``decode_ack`` and ``decode_events`` (only :class:`WireError` may come out) and, five at a time on
matching and mismatched topics, through ``Ingestor._prepare`` (nothing may come out, and every
message is acknowledged or held exactly once).

Default run: 5,000 payloads (a few seconds); ``slow``: the same seed's 20,000, and 1,000,000 from another:
``pytest tests/chaos/test_fuzz.py -m slow``. ``PLANTWIRE_FUZZ_SEED`` replays a run;
``PLANTWIRE_FUZZ_PAYLOADS`` overrides the long run's count.
"""

from __future__ import annotations

import copy
import json
import os
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zstandard

from cloud.app import Ingestor
from cloud.config import CloudConfig
from cloud.sources.mqtt import Message
from plantwire import wire

SEED = int(os.environ.get("PLANTWIRE_FUZZ_SEED", "20260601"))
LONG_PAYLOADS = int(os.environ.get("PLANTWIRE_FUZZ_PAYLOADS", "1000000"))
GW = "gw-fz"
SITE = "s"
HASH = b"fuzzHASH"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_INTERESTING = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 2**63 - 1, 2**64 - 1]
_JSON_ODDITIES: list[Any] = [
    None, True, -1, 0, 2**63, 2**70, -(2**70), 1.5, float("nan"), float("inf"), "", "x" * 300, "\u00e9\ud7ff",
    [], {}, [[1, 2]], [[2, 1]], [[-1, 2**64]], [["a", "b"]], [1] * 2000, [[i, i] for i in range(1100)],
    {"type": "alarm"}, {"type": "health"}, [{"type": "alarm", "start_ns": "x"}], [{"type": "health", "ts_ns": None}],
    [[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]],
]
#: Exceptions plantwire.wire may still let out (none today: the zstd size lie and deep JSON found by this
#: fuzz are WireErrors now, pinned by the tests below). Tolerated only so the fuzz keeps looking for
#: everything else; counted in the outcome.
KNOWN_WIRE_GAPS: tuple[type[BaseException], ...] = ()
#: The same for the ingestor's message path (infinite event times, found here, are dead-lettered now).
KNOWN_INGEST_GAPS: tuple[type[BaseException], ...] = ()
DECODERS: list[Callable[[bytes], Any]] = [
    wire.decode_batch, wire.decode_signal_table, wire.decode_ack, wire.decode_events,
]


def _corpus() -> dict[str, list[bytes]]:
    """Valid payloads of every kind the ingestor receives, by topic lane."""
    rng = np.random.default_rng(1)
    batches = []
    for n in (1, 7, 50, 300):
        sig = rng.integers(0, 5, n).astype(np.uint32)
        value = rng.normal(0, 1, n)
        value[rng.random(n) < 0.1] = np.nan
        batches.append(
            wire.encode_batch(
                gateway=GW, boot_epoch_ns=1_700_000_000_000_000_000, seq=int(n), table_hash=HASH,
                ts_ns=1_700_000_000_000_000_000 + np.cumsum(rng.integers(0, 10**9, n)),
                signal=sig, value=value, quality=rng.integers(0, 3, n).astype(np.uint8),
            )
        )
    # wire v2 (what the edge publishes): quantised registers, decimals, float32, raw and NaN values
    scale = np.array([0.1, 0.01, 0.0, 1.0, 0.5])
    offset = np.array([0.0, -40.0, 0.0, 0.0, 1.0])
    quant = wire.quantisation(scale, offset)
    for n in (1, 9, 60, 400):
        sig = rng.integers(0, 5, n).astype(np.uint32)
        k = rng.integers(-3000, 3000, n).astype(np.float64)
        value = np.where(scale[sig] != 0, k * scale[sig] + offset[sig], rng.normal(0, 1, n))
        dec = rng.random(n) < 0.2
        value[dec] = np.round(rng.normal(20, 5, int(dec.sum())), 2)
        value[rng.random(n) < 0.05] = np.nan
        f32 = rng.random(n) < 0.2
        value[f32] = rng.normal(0, 100, int(f32.sum())).astype(np.float32)
        batches.append(
            wire.encode_batch(
                gateway=GW, boot_epoch_ns=1_700_000_000_000_000_000, seq=1000 + n, table_hash=HASH,
                ts_ns=1_700_000_000_000_000_000 + np.cumsum(rng.integers(0, 10**9, n)),
                signal=sig, value=value, quality=rng.integers(0, 3, n).astype(np.uint8),
                version=wire.VERSION_V2, quant=quant,
            )
        )
    table = wire.encode_signal_table(
        gateway=GW, table_hash=HASH, site=SITE, ids=[f"m.x{i}" for i in range(5)], machines=["m"] * 5,
        units=["degC", "", "bar", "A", "mm/s"], kinds=["a", "b", "c", "d", "e"],
    )
    events = wire.encode_events(
        GW, 1, [
            {"type": "alarm", "state": "open", "kind": "ewma", "signal": "m.x1", "machine": "m",
             "start_ns": 1_700_000_000_000_000_000, "end_ns": None, "peak": 0.5},
            {"type": "alarm", "state": "closed", "kind": "stuck", "signal": "m.x2", "start_ns": 1, "end_ns": 2,
             "peak": 1.0},
            {"type": "health", "machine": "m", "ts_ns": 1_700_000_000_000_000_000, "health": 0.7, "rul": 1200.0,
             "rul_low": 800.0, "rul_high": None},
        ],
    )
    ack = wire.encode_ack(wire.Ack(GW, 1, 41, ((43, 50), (52, 52))))
    health = json.dumps({"status": "online", "gateway": GW, "spool": {"dropped_samples": 0}}).encode()
    return {"telemetry": batches, "signals": [table], "events": [events], "ack": [ack], "health": [health]}


CORPUS = _corpus()
LANES = list(CORPUS)


class Mutator:
    """Seeded generator of mutated payloads (see module docstring); ``next()`` returns (lane, payload)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.ops = [
            self._flip, self._truncate, self._splice, self._length_lie, self._block,
            self._zstd_header_lie, self._under_compression, self._json_field, self._random,
        ]
        self.weights = np.array([4, 2, 2, 4, 2, 2, 4, 3, 0.5])
        self.weights /= self.weights.sum()

    def next(self) -> tuple[str, bytes]:
        lane = LANES[int(self.rng.integers(len(LANES)))]
        pool = CORPUS[lane]
        base = pool[int(self.rng.integers(len(pool)))]
        op = self.ops[int(self.rng.choice(len(self.ops), p=self.weights))]
        return lane, op(base, lane)

    def _int(self, hi: int) -> int:
        return int(self.rng.integers(hi)) if hi > 0 else 0

    def _flip(self, p: bytes, lane: str) -> bytes:
        b = bytearray(p)
        for _ in range(1 + self._int(8)):
            b[self._int(len(b))] ^= 1 << self._int(8)
        return bytes(b)

    def _truncate(self, p: bytes, lane: str) -> bytes:
        return p[: self._int(len(p) + 1)]

    def _splice(self, p: bytes, lane: str) -> bytes:
        other = CORPUS[LANES[self._int(len(LANES))]]
        q = other[self._int(len(other))]
        return p[: self._int(len(p) + 1)] + q[self._int(len(q) + 1):]

    def _length_lie(self, p: bytes, lane: str) -> bytes:
        b = bytearray(p)
        width = [1, 2, 4, 8][self._int(4)]
        v = _INTERESTING[self._int(len(_INTERESTING))]
        v = (v + int(self.rng.integers(-1, 2))) % (1 << (8 * width))
        at = self._int(min(len(b), 48))
        b[at : at + width] = v.to_bytes(width, "little")
        return bytes(b)

    def _block(self, p: bytes, lane: str) -> bytes:
        at = self._int(len(p) + 1)
        if self.rng.random() < 0.5:
            return p[:at] + p[at + 1 + self._int(64):]
        return p[:at] + self.rng.bytes(1 + self._int(64)) + p[at:]

    def _zstd_header_lie(self, p: bytes, lane: str) -> bytes:
        at = p.find(ZSTD_MAGIC)
        if at < 0:
            return self._flip(p, lane)
        b = bytearray(p)
        start = at + 4
        for _ in range(1 + self._int(4)):
            i = start + self._int(10)
            if i < len(b):
                special = [0x00, 0xFF, 0xE4, 0x20, 0x60, 0xA0, 0xC0][self._int(7)]
                b[i] = special if self.rng.random() < 0.5 else self._int(256)
        return bytes(b)

    def _under_compression(self, p: bytes, lane: str) -> bytes:
        """Mutate the plaintext behind the zstd frame and recompress it with a valid checksum."""
        at = p.find(ZSTD_MAGIC)
        if at < 0:
            return self._json_field(p, lane)
        head = bytearray(p[:at])
        plain = bytearray(zstandard.ZstdDecompressor().decompress(p[at:]))
        r = self.rng.random()
        if r < 0.4 and plain:
            for _ in range(1 + self._int(6)):
                plain[self._int(len(plain))] ^= 1 << self._int(8)
        elif r < 0.6:
            plain = plain[: self._int(len(plain) + 1)]
        elif r < 0.75:
            plain += self.rng.bytes(1 + self._int(40))
        elif plain[:1] == b"{":  # a signal table: a structural JSON mutation
            plain = bytearray(self._json_field(bytes(plain), lane))
        if lane == "telemetry" and self.rng.random() < 0.3 and len(head) >= 28:
            n = max(0, len(plain) // 21 + int(self.rng.integers(-1, 2)))  # a sample count that (nearly) fits
            head[24:28] = (n % 2**32).to_bytes(4, "little")
        body = zstandard.ZstdCompressor(level=1, write_checksum=True).compress(bytes(plain))
        return bytes(head) + body

    def _json_field(self, p: bytes, lane: str) -> bytes:
        try:
            doc = json.loads(p)
        except ValueError:
            return self._flip(p, lane)
        for _ in range(1 + self._int(3)):
            _replace_somewhere(doc, self.rng)
        return json.dumps(doc, allow_nan=True).encode()

    def _random(self, p: bytes, lane: str) -> bytes:
        prefix = b"PW\x01" + bytes([self._int(4)]) if self.rng.random() < 0.7 else b""
        return prefix + self.rng.bytes(self._int(200))


def _oddity(rng: np.random.Generator) -> Any:
    return copy.deepcopy(_JSON_ODDITIES[int(rng.integers(len(_JSON_ODDITIES)))])


def _replace_somewhere(doc: Any, rng: np.random.Generator) -> None:
    """Replace one value (or add a key) at a random depth with an oddity."""
    node = doc
    for _ in range(4):
        if isinstance(node, dict) and node:
            keys = list(node)
            key = keys[int(rng.integers(len(keys)))]
            child = node[key]
            if isinstance(child, dict | list) and child and rng.random() < 0.6:
                node = child
                continue
            if rng.random() < 0.15:
                node.pop(key)
            else:
                node[key] = _oddity(rng)
            return
        if isinstance(node, list) and node:
            i = int(rng.integers(len(node)))
            if isinstance(node[i], dict | list) and node[i] and rng.random() < 0.6:
                node = node[i]
                continue
            node[i] = _oddity(rng)
            return
        return


def _topic(lane: str, rng: np.random.Generator) -> str:
    r = rng.random()
    if r < 0.8:
        return wire.topic(SITE, GW, lane)
    if r < 0.9:
        return wire.topic(SITE, GW, LANES[int(rng.integers(len(LANES)))])  # payload on another lane's topic
    return [wire.topic(SITE, "gw-other", lane), wire.topic("s2", GW, lane), "plantwire/v1/x", "other/t",
            wire.topic(SITE, GW, "nope")][int(rng.integers(5))]


def _ingestor(state: Path) -> Ingestor:
    cfg = CloudConfig.model_validate(
        {
            "mqtt": {"port": 1},
            "influx": {"url": "http://127.0.0.1:1"},
            "state_dir": str(state),
            "metrics": {"port": 0},
            "ingest": {"held_max_messages": 5, "dead_letter_max_bytes": 1 << 20},
        }
    )
    ing = Ingestor(cfg)  # touches no network until started
    ing.dead.fsync = False
    ing.tables.add(CORPUS["signals"][0])
    return ing


def _fuzz(n_payloads: int, seed: int, state: Path) -> dict[str, int]:
    mut = Mutator(seed)
    rng = np.random.default_rng(seed + 1)
    ing = _ingestor(state)
    outcomes = {"decoded": 0, "wire_error": 0, "known_gap": 0, "known_ingest_gap": 0, "messages": 0}
    group: list[Message] = []
    mid = 0
    for i in range(n_payloads):
        lane, payload = mut.next()
        for decode in DECODERS:
            try:
                decode(payload)
                outcomes["decoded"] += 1
            except wire.WireError:
                outcomes["wire_error"] += 1
            except KNOWN_WIRE_GAPS:
                outcomes["known_gap"] += 1
            except Exception as exc:
                raise AssertionError(
                    f"{decode.__name__} raised {type(exc).__name__}: {exc} for payload #{i} (seed {seed}, "
                    f"lane {lane}, crc32 {zlib.crc32(payload):08x}): {payload[:200]!r}"
                ) from exc
        mid += 1
        group.append(Message(_topic(lane, rng), payload, mid, 1, False, 0, time.time_ns()))
        if len(group) == 5 or i == n_payloads - 1:
            outcomes["known_ingest_gap"] += not _prepare_accounted(ing, group, seed)
            outcomes["messages"] += len(group)
            group = []
    return outcomes


def _prepare_accounted(ing: Ingestor, batch: list[Message], seed: int) -> bool:
    """False when a known gap (KNOWN_INGEST_GAPS) came out: that group's accounting is skipped."""
    held_before = set(ing.held)
    try:
        w = ing._prepare(batch)
    except KNOWN_INGEST_GAPS:
        ing.held.clear()
        return False
    except Exception as exc:
        shown = [(m.topic, m.payload[:120]) for m in batch]
        raise AssertionError(f"_prepare raised {type(exc).__name__}: {exc} (seed {seed}) for {shown}") from exc
    new_held = [m for k, (m, _) in ing.held.items() if k not in held_before]
    ing.held.clear()  # a held batch would wait for its signal table; here only the accounting matters
    accounted = sorted([id(m) for m in (w.msgs if w else [])] + [id(m) for m in new_held])
    assert accounted == sorted(id(m) for m in batch), "a message was neither acknowledged nor held exactly once"
    if w is not None and w.parts:
        body = b"".join(p.tobytes() for p in w.parts)
        assert body.endswith(b"\n")
    return True


def test_mutator_reaches_past_the_header() -> None:
    """The generator must produce payloads that decode, and many that fail deep (not only at the magic)."""
    mut = Mutator(SEED)
    decoded = deep = 0
    for _ in range(3000):
        _, p = mut.next()
        for decode in DECODERS:
            try:
                decode(p)
                decoded += 1
            except wire.WireError as exc:
                deep += not str(exc).startswith("header.magic")
            except KNOWN_WIRE_GAPS:
                pass
    assert decoded > 100 and deep > 3000, (decoded, deep)


def test_fuzz_5k_payloads(tmp_path: Path) -> None:
    """The default run's share: the first 5,000 payloads of the 20,000 below (same seed)."""
    out = _fuzz(5_000, SEED, tmp_path)
    assert out["messages"] == 5_000 and out["decoded"] > 250, out


@pytest.mark.slow
def test_fuzz_20k_payloads(tmp_path: Path) -> None:
    out = _fuzz(20_000, SEED, tmp_path)
    assert out["messages"] == 20_000 and out["decoded"] > 1000, out


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_fuzz_1m_payloads(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    out = _fuzz(LONG_PAYLOADS, SEED + 7, tmp_path)
    print(f"{LONG_PAYLOADS} payloads in {time.perf_counter() - t0:.0f} s: {out}")
    assert out["messages"] == LONG_PAYLOADS, out


@pytest.mark.parametrize("decode", [wire.decode_batch, wire.decode_signal_table])
def test_zstd_frame_claiming_an_absurd_size_is_a_wire_error(decode: Callable[[bytes], Any]) -> None:
    """Found by this fuzz (and by tests/test_ingest_fuzz.py): a frame header whose content size is absurd
    makes zstandard raise MemoryError, not ZstdError. The ingestor catches it; the decoder should."""
    valid = CORPUS["telemetry"][0] if decode is wire.decode_batch else CORPUS["signals"][0]
    frame = b"(\xb5/\xfd\xe4\x1a\x03\x05\x0e\x00t\x18\x08\xe8\x86\x03\xc3\x00\x8a" + bytes(200)
    with pytest.raises(wire.WireError):
        decode(valid[: valid.find(ZSTD_MAGIC)] + frame)


@pytest.mark.parametrize("decode", [wire.decode_ack, wire.decode_events])
def test_deeply_nested_json_is_a_wire_error(decode: Callable[[bytes], Any]) -> None:
    """100 kB of '[' (well under MAX_CONTROL_BYTES): json.loads raises RecursionError, which must be a
    WireError, or one such message on an ack or events topic escapes every handler (ingestor worker,
    edge ack callback) and is redelivered after the restart it caused."""
    with pytest.raises(wire.WireError):
        decode(b"[" * 100_000)


def test_ingestor_dead_letters_deeply_nested_events(tmp_path: Path) -> None:
    ing = _ingestor(tmp_path)
    m = Message(wire.topic(SITE, GW, "events"), b"[" * 100_000, 1, 1, False, 0, time.time_ns())
    w = ing._prepare([m])
    assert w is not None and w.msgs == [m]


@pytest.mark.parametrize(("index", "field"), [(0, "start_ns"), (2, "ts_ns")])
def test_ingestor_dead_letters_events_with_infinite_times(tmp_path: Path, index: int, field: str) -> None:
    """Found by this fuzz: ``"start_ns": Infinity`` (accepted by Python's json and by wire.decode_events)
    escapes _prepare as OverflowError; the message must be dead-lettered and acknowledged instead."""
    ing = _ingestor(tmp_path)
    doc = json.loads(CORPUS["events"][0])
    doc["events"][index][field] = float("inf")
    m = Message(wire.topic(SITE, GW, "events"), json.dumps(doc).encode(), 1, 1, False, 0, time.time_ns())
    w = ing._prepare([m])
    assert w is not None and w.msgs == [m]
