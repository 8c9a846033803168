"""Wire format: round-trips, golden bytes of every shipped version, and malformed input."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from plantwire import wire
from tests.property_runs import quick_and_full

# v1 telemetry and signal-table payloads as shipped. Never change these: a decoder that cannot
# read them can no longer read what deployed gateways send. New versions add new constants.
GOLDEN_V1_TELEMETRY = bytes.fromhex(
    "5057010115cd5b07000000002a000000000000000001020304050607040000000967772d676f6c64656e28b52ffd"
    "2454f5010014030000ca002a009a0036003b00fe0000009c000000970000001707f9070000ff000080004000350a"
    "00f240c000bf000001020400608a1d983fb9ad000bafe175bc"
)
GOLDEN_V1_SIGNALS = bytes.fromhex(
    "5057010200010203040506070967772d676f6c64656e28b52ffd2457450200a2440f1590471d4b51db0f413617fc"
    "c0989d6e17d4ccd8152509420fcbb5558d0b88ae3b5e723558df78a04a8c17369e80c23ec79c456a6ae578c9cd7d"
    "2b4702020080c49a4b4101717e2e23"
)


def _encode(ts: np.ndarray, sig: np.ndarray, val: np.ndarray, q: np.ndarray, **kw: object) -> bytes:
    args: dict[str, object] = dict(gateway="gw1", boot_epoch_ns=1, seq=2, table_hash=b"\x00" * 8)
    args.update(kw)
    return wire.encode_batch(ts_ns=ts, signal=sig, value=val, quality=q, **args)  # type: ignore[arg-type]


def test_golden_v1_telemetry_decodes() -> None:
    b = wire.decode_batch(GOLDEN_V1_TELEMETRY)
    assert (b.gateway, b.boot_epoch_ns, b.seq, b.table_hash) == ("gw-golden", 123456789, 42, bytes(range(8)))
    assert b.ts_ns.tolist() == [1_700_000_000 * 10**9] * 2 + [1_700_000_001 * 10**9] * 2
    assert b.signal.tolist() == [0, 7, 0, 7]
    assert b.value[:3].tolist() == [21.5, -3.25, 21.75] and np.isnan(b.value[3])
    assert b.quality.tolist() == [0, 0, 1, 2]


def test_golden_v1_signal_table_decodes() -> None:
    t = wire.decode_signal_table(GOLDEN_V1_SIGNALS)
    assert (t.gateway, t.table_hash, t.site) == ("gw-golden", bytes(range(8)), "s1")
    assert (t.ids, t.machines, t.units) == (["m1.a", "m1.b"], ["m1", "m1"], ["degC", ""])
    assert t.kinds == ["temperature", "generic"]


def test_header_of_encoder_matches_golden() -> None:
    """The fixed header is byte-identical; the zstd body may differ across libzstd versions."""
    b = wire.decode_batch(GOLDEN_V1_TELEMETRY)
    again = wire.encode_batch(
        gateway=b.gateway, boot_epoch_ns=b.boot_epoch_ns, seq=b.seq, table_hash=b.table_hash,
        ts_ns=b.ts_ns, signal=b.signal, value=b.value, quality=b.quality,
    )
    header_len = 4 + 29 + len(b.gateway)
    assert again[:header_len] == GOLDEN_V1_TELEMETRY[:header_len]


columns = st.integers(min_value=0, max_value=400).flatmap(
    lambda n: st.tuples(
        hnp.arrays(np.int64, n, elements=st.integers(-(2**62), 2**62)),
        hnp.arrays(np.uint32, n, elements=st.integers(0, 2**32 - 1)),
        hnp.arrays(np.float64, n, elements=st.floats(allow_nan=True, allow_infinity=True)),
        hnp.arrays(np.uint8, n, elements=st.integers(0, 2)),
    )
)


def _round_trip_is_bit_exact(cols: tuple[np.ndarray, ...], seq: int, boot: int, gw: str) -> None:
    ts, sig, val, q = cols
    payload = _encode(ts, sig, val, q, gateway=gw, seq=seq, boot_epoch_ns=boot)
    b = wire.decode_batch(payload)
    assert (b.gateway, b.seq, b.boot_epoch_ns) == (gw, seq, boot)
    assert np.array_equal(b.ts_ns, ts)
    assert np.array_equal(b.signal, sig)
    assert np.array_equal(b.value.view(np.uint64), val.view(np.uint64))  # NaN payloads and -0.0 too
    assert np.array_equal(b.quality, q)


test_round_trip_is_bit_exact, test_round_trip_is_bit_exact_full = quick_and_full(
    _round_trip_is_bit_exact, quick=60, full=300,
    cols=columns, seq=st.integers(0, 2**64 - 1), boot=st.integers(-(2**63), 2**63 - 1),
    gw=st.text(min_size=1, max_size=40).filter(lambda s: 0 < len(s.encode()) <= 255))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_bytes_raise_wire_error_only(data: bytes) -> None:
    for decode in (wire.decode_batch, wire.decode_signal_table):
        try:
            decode(data)
        except wire.WireError:
            pass


def test_truncations_and_bit_flips_raise_wire_error() -> None:
    rng = np.random.default_rng(0)
    n = 1000
    payload = _encode(
        np.arange(n, dtype=np.int64), rng.integers(0, 50, n).astype(np.uint32), rng.normal(size=n),
        np.zeros(n, np.uint8),
    )
    for cut in range(0, len(payload), 7):
        with pytest.raises(wire.WireError):
            wire.decode_batch(payload[:cut])
    # A flipped body bit must never decode to *different* samples: either zstd's checksum or a
    # length check rejects it, or the flip hit bits the decoder ignores (padding) and the
    # samples come out identical.
    original = wire.decode_batch(payload)
    body_start = 4 + 29 + len("gw1")
    rejected = 0
    for pos in range(body_start, len(payload)):
        bad = bytearray(payload)
        bad[pos] ^= 0x10
        try:
            got = wire.decode_batch(bytes(bad))
        except wire.WireError:
            rejected += 1
            continue
        assert np.array_equal(got.value.view(np.uint64), original.value.view(np.uint64)), pos
        assert np.array_equal(got.signal, original.signal) and np.array_equal(got.ts_ns, original.ts_ns), pos
    assert rejected > 0.99 * (len(payload) - body_start)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b"XX\x01\x01" + b"\x00" * 40, "header.magic"),
        (b"PW\x09\x01" + b"\x00" * 40, "header.version"),
        (b"PW\x01\x02" + b"\x00" * 40, "header.kind"),
        (b"PW", "header"),
    ],
)
def test_errors_name_the_field(payload: bytes, field: str) -> None:
    with pytest.raises(wire.WireError, match=field):
        wire.decode_batch(payload)


def test_sample_count_over_limit_is_rejected_before_decompressing() -> None:
    payload = bytearray(_encode(*(np.zeros(1, dt) for dt in (np.int64, np.uint32, np.float64, np.uint8))))
    payload[4 + 24 : 4 + 28] = (wire.MAX_SAMPLES + 1).to_bytes(4, "little")
    with pytest.raises(wire.WireError, match=r"header\.n"):
        wire.decode_batch(bytes(payload))


def test_sweeps_of_quantised_values_cost_under_three_bytes_per_sample() -> None:
    rng = np.random.default_rng(1)
    n_sig, sweeps = 15_000, 4
    ts = np.repeat(np.arange(sweeps, dtype=np.int64) * 10**9 + 1_700_000_000 * 10**9, n_sig)
    sig = np.tile(np.arange(n_sig, dtype=np.uint32), sweeps)
    val = (20 + rng.normal(size=ts.size)).astype(np.float32).astype(np.float64)
    payload = _encode(ts, sig, val, np.zeros(ts.size, np.uint8))
    assert len(payload) / ts.size < 3.0


def test_topic_round_trip() -> None:
    assert wire.parse_topic(wire.topic("site-a", "gw-1", "telemetry")) == ("site-a", "gw-1", "telemetry")
    with pytest.raises(wire.WireError):
        wire.parse_topic("plantwire/v2/a/b/c")


def test_ack_round_trip_and_coverage() -> None:
    ack = wire.Ack(gateway="gw-1", boot_epoch_ns=123, watermark=7, ranges=((10, 12), (20, 20)))
    back = wire.decode_ack(wire.encode_ack(ack))
    assert back == ack
    assert [s for s in range(25) if back.covers(s)] == [0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 20]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b"not json", "ack: not JSON"),
        (b"[]", "ack: expected a JSON object"),
        (b'{"v":2}', "ack.v"),
        (b'{"v":1,"gateway":"g","boot_epoch_ns":1,"watermark":"3"}', "ack.watermark"),
        (b'{"v":1,"gateway":"g","boot_epoch_ns":1,"watermark":3,"ranges":[[5,4]]}', "ack.ranges[0]"),
    ],
)
def test_bad_ack_names_field(payload: bytes, field: str) -> None:
    with pytest.raises(wire.WireError, match=re.escape(field)):
        wire.decode_ack(payload)


def test_events_round_trip_and_bad_type() -> None:
    evs = [{"type": "alarm", "state": "open", "kind": "ewma", "signal": "m.s", "start_ns": 1, "end_ns": None,
            "peak": 0.9}]
    assert wire.decode_events(wire.encode_events("gw", 5, evs)) == ("gw", 5, evs)
    with pytest.raises(wire.WireError, match=r"events\[0\]\.type"):
        wire.encode_events("gw", 5, [{"type": "bogus"}])
    with pytest.raises(wire.WireError, match=r"events\.events"):
        wire.decode_events(b'{"v":1,"gateway":"g","boot_epoch_ns":1,"events":{}}')


def test_events_seq_stamped_read_back_and_ignored_by_old_readers() -> None:
    """The forwarder numbers events-lane messages (the cloud acks them by seq); a reader without seq ignores it."""
    evs = [{"type": "health", "machine": "m1", "ts_ns": 1, "health": 0.5, "rul": None}]
    plain = wire.encode_events("gw", 5, evs)
    stamped = wire.stamp_events_seq(plain, 42)
    assert wire.decode_events_seq(stamped) == ("gw", 5, 42, evs)
    assert wire.decode_events_seq(plain) == ("gw", 5, None, evs)
    assert wire.decode_events(stamped) == ("gw", 5, evs)
    with pytest.raises(wire.WireError, match="not an encode_events payload"):
        wire.stamp_events_seq(stamped, 43)
    with pytest.raises(wire.WireError, match=r"events\.seq"):
        wire.decode_events_seq(plain[:-1] + b',"seq":-1}')


# -- telemetry v2 (coded values) ------------------------------------------------------------------

# v2 telemetry as shipped: signals 0..5 twice, one of each value code (quantised 0.1/-40, decimal,
# float32 decimal, float32 bits, raw pi and a NaN with payload, -0.0 and inf). Never change it.
GOLDEN_V2_TELEMETRY = bytes.fromhex(
    "5057020115cd5b07000000002a0000000000000000010203040506070c000000090167772d676f6c64656e28b52ffd"
    "647800ad040092451524a037c301c0acff174b774bc27dffa9beaafabee5eb1296ebee29f3e2af8c937abf09912923"
    "7fdf051c0c9212c2f7a4e9f942f30f2e9b5f09d6139622d1cb28ad7749daf3caee6c18f163c0d4f1e8c68cb75b1c62"
    "2720b013430722778db190d81ddb44ee589372c75c932f427bfff148b15092d10ac10d0078b3bf078b9b6d5b22e210"
    "430c38e3c58b2d5ef11c32028e05895b82f8"
)
_NAN_PAYLOAD = np.array([0x7FF8000000000123], np.uint64).view(np.float64)[0]
GOLDEN_V2_VALUES = np.array([
    1234 * 0.1 - 40, 21.5, float(np.float32(0.3)), float(np.float32(1 / 3)), np.pi, -0.0,
    1237 * 0.1 - 40, 21.75, float(np.float32(0.31)), float(np.float32(2 / 3)), _NAN_PAYLOAD, np.inf,
])
GOLDEN_V2_QUANT = (np.array([0.1, 1, 1, 1, 1, 1]), np.array([-40.0, 0, 0, 0, 0, 0]))


def _encode2(ts: np.ndarray, sig: np.ndarray, val: np.ndarray, q: np.ndarray, **kw: object) -> bytes:
    return _encode(ts, sig, val, q, version=wire.VERSION_V2, **kw)


def test_golden_v2_telemetry_decodes_bit_exact() -> None:
    b = wire.decode_batch(GOLDEN_V2_TELEMETRY)
    assert (b.gateway, b.boot_epoch_ns, b.seq, b.table_hash) == ("gw-golden", 123456789, 42, bytes(range(8)))
    assert b.ts_ns.tolist() == [1_700_000_000 * 10**9] * 6 + [1_700_000_001 * 10**9] * 6
    assert b.signal.tolist() == [0, 1, 2, 3, 4, 5] * 2
    assert np.array_equal(b.value.view(np.uint64), GOLDEN_V2_VALUES.view(np.uint64))
    assert b.quality.tolist() == [0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0]


def test_header_of_v2_encoder_matches_golden() -> None:
    b = wire.decode_batch(GOLDEN_V2_TELEMETRY)
    again = wire.encode_batch(
        gateway=b.gateway, boot_epoch_ns=b.boot_epoch_ns, seq=b.seq, table_hash=b.table_hash,
        ts_ns=b.ts_ns, signal=b.signal, value=b.value, quality=b.quality,
        version=wire.VERSION_V2, quant=wire.quantisation(*GOLDEN_V2_QUANT),
    )
    header_len = 4 + 30 + len(b.gateway)
    assert again[:header_len] == GOLDEN_V2_TELEMETRY[:header_len]


def test_v2_picks_each_value_code() -> None:
    """Each kind of value gets the code meant for it (a regression to raw would still round-trip)."""
    sig = np.array([0, 1, 2, 3, 4, 5] * 2, np.uint32)
    with np.errstate(all="ignore"):
        mode, k, p_scale, p_offset = wire._code_values(GOLDEN_V2_VALUES, sig, wire.quantisation(*GOLDEN_V2_QUANT))
    pair, f32, raw = wire.MODE_PAIR, wire.MODE_F32, wire.MODE_RAW
    dec, dec32 = wire.MODE_DEC, wire.MODE_DEC32
    assert mode.tolist() == [pair, dec + 1, dec32 + 1, f32, raw, f32, pair, dec + 2, dec32 + 2, f32, raw, f32]
    assert k[[0, 1, 2, 6, 7, 8]].tolist() == [1234, 215, 3, 1237, 2175, 31]
    assert p_scale.tolist() == [0.1] and p_offset.tolist() == [-40.0]


special = st.sampled_from([0.0, -0.0, np.inf, -np.inf, np.nan, _NAN_PAYLOAD, 5e-324, 1.7976931348623157e308,
                           2.0**53, -(2.0**53) - 2, 0.1, 1e-7])


def _v2_round_trip_is_bit_exact(n: int, data: st.DataObject, scale: float, offset: float) -> None:
    """Mixes every code's kind of value (register values, decimals, float32, specials, arbitrary)."""
    sig = data.draw(hnp.arrays(np.uint32, n, elements=st.integers(0, 40)))
    raw_k = data.draw(hnp.arrays(np.int64, n, elements=st.integers(-(2**40), 2**40)))
    kind = data.draw(hnp.arrays(np.uint8, n, elements=st.integers(0, 5)))
    anyf = data.draw(hnp.arrays(np.float64, n, elements=st.floats(allow_nan=True, allow_infinity=True)))
    spec = data.draw(hnp.arrays(np.float64, n, elements=special))
    with np.errstate(all="ignore"):
        val = np.select(
            [kind == 0, kind == 1, kind == 2, kind == 3, kind == 4],
            [raw_k * scale + offset, np.rint(anyf % 1e4 * 100) / 100, anyf.astype(np.float32).astype(np.float64),
             spec, np.rint(anyf % 1e4 * 100) * 0.01],
            anyf,
        )
    # per-signal scale/offset, some signals without (0 scale) and signals beyond the table
    sc = np.full(30, scale)
    sc[::7] = 0.0
    quant = wire.quantisation(sc, np.full(30, offset))
    ts = data.draw(hnp.arrays(np.int64, n, elements=st.integers(-(2**62), 2**62)))
    q = data.draw(hnp.arrays(np.uint8, n, elements=st.integers(0, 2)))
    for qt in (quant, None):
        b = wire.decode_batch(_encode2(ts, sig, val, q, quant=qt))
        assert np.array_equal(b.value.view(np.uint64), val.view(np.uint64))  # NaN payloads and -0.0 too
        assert np.array_equal(b.ts_ns, ts) and np.array_equal(b.signal, sig) and np.array_equal(b.quality, q)


test_v2_round_trip_is_bit_exact, test_v2_round_trip_is_bit_exact_full = quick_and_full(
    _v2_round_trip_is_bit_exact, quick=60, full=300,
    n=st.integers(0, 300), data=st.data(),
    scale=st.sampled_from([0.1, 0.01, 0.5, 1.0, 3.7, -0.25, 1e-300]),
    offset=st.sampled_from([0.0, -0.0, -40.0, 273.15, 1e308]))


def test_v2_decimal_products_and_float32_decimals_use_few_digits() -> None:
    """``rint(v / 0.01) * 0.01`` (a simulator's or PLC's quantiser) and float32 registers holding a
    decimal get k at their own resolution, not at 1e-6 (which would cost two more bytes)."""
    val = np.array([4205 * 0.01, 7 * 0.1, float(np.float32(42.05)), float(np.float32(-1234.56))])
    with np.errstate(all="ignore"):
        mode, k, _, _ = wire._code_values(val, np.arange(4, dtype=np.uint32), None)
    assert 4205 * 0.01 != 4205 / 100  # so the decimal (division) code cannot take it
    assert mode.tolist() == [wire.MODE_DECM + 2, wire.MODE_DECM + 1, wire.MODE_DEC32 + 2, wire.MODE_DEC32 + 2]
    assert k.tolist() == [4205, 7, 4205, -123456]


def _realistic(n_sig: int = 3000, sweeps: int = 1, seed: int = 1) -> tuple[np.ndarray, ...]:
    """Sweeps of a plant: 0.1-scaled int registers, float32 registers, decimal doubles, counters."""
    rng = np.random.default_rng(seed)
    ts = np.repeat(np.arange(sweeps, dtype=np.int64) * 10**9 + 1_700_000_000 * 10**9, n_sig)
    sig = np.tile(np.arange(n_sig, dtype=np.uint32), sweeps)
    col = sig % 4
    scale = np.where(np.arange(n_sig) % 4 == 0, 0.1, 1.0)
    offset = np.where(np.arange(n_sig) % 8 == 0, -40.0, 0.0)
    base = rng.uniform(0, 500, n_sig)[sig] + rng.normal(size=ts.size)
    val = np.select(
        [col == 0, col == 1, col == 2],
        [np.rint((base - offset[sig]) / 0.1) * 0.1 + offset[sig], base.astype(np.float32).astype(np.float64),
         np.round(base, 2)],
        np.floor(base * 10),
    )
    return ts, sig, val, np.zeros(ts.size, np.uint8), scale, offset


def test_v2_one_sweep_costs_under_three_bytes_per_sample_and_beats_v1() -> None:
    """At 1 Hz each signal appears once per batch: v1's XOR cannot help, v2's codes must."""
    ts, sig, val, q, scale, offset = _realistic()
    v1 = _encode(ts, sig, val, q)
    v2 = _encode2(ts, sig, val, q, quant=wire.quantisation(scale, offset))
    assert len(v2) / ts.size < 3.0
    assert len(v2) < 0.75 * len(v1)
    assert np.array_equal(wire.decode_batch(v2).value.view(np.uint64), val.view(np.uint64))


def test_v2_truncations_and_bit_flips_raise_wire_error() -> None:
    ts, sig, val, q, scale, offset = _realistic(n_sig=400, sweeps=2)
    payload = _encode2(ts, sig, val, q, quant=wire.quantisation(scale, offset))
    for cut in range(0, len(payload), 5):
        with pytest.raises(wire.WireError):
            wire.decode_batch(payload[:cut])
    original = wire.decode_batch(payload)
    body_start = 4 + 30 + len("gw1")
    rejected = 0
    for pos in range(4, len(payload)):
        bad = bytearray(payload)
        bad[pos] ^= 0x10
        try:
            got = wire.decode_batch(bytes(bad))
        except wire.WireError:
            rejected += 1
            continue
        if pos >= body_start:
            assert np.array_equal(got.value.view(np.uint64), original.value.view(np.uint64)), pos
    assert rejected > 0.99 * (len(payload) - body_start)


def _v2_payload(body: bytes, n: int, npairs: int) -> bytes:
    """A v2 payload around a hand-made body (to reach checks that a valid encoder never trips)."""
    import struct

    import zstandard

    head = b"PW\x02\x01" + struct.pack("<qQ8sIBB", 1, 2, b"\0" * 8, n, 3, npairs) + b"gw1"
    return head + zstandard.ZstdCompressor(write_checksum=True).compress(body)


def _v2_body(mode: int, k: int, npairs: int = 0) -> bytes:
    zig = (k << 1) ^ (k >> 63)
    return (
        np.ones(2 * npairs).tobytes() + np.zeros(8, np.uint8).tobytes() + np.zeros(4, np.uint8).tobytes()
        + bytes([mode]) + int(zig % 2**64).to_bytes(8, "little") + bytes(8) + b"\x00"
    )


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (_v2_payload(_v2_body(5, 0)[:-1], 1, 0), "body"),
        (_v2_payload(_v2_body(wire.MODE_DEC + wire.MAX_DECIMALS + 1, 1), 1, 0), "body.mode"),
        (_v2_payload(_v2_body(wire.MODE_PAIR, 1, npairs=0), 1, 0), "body.mode"),
        (_v2_payload(_v2_body(wire.MODE_PAIR + 1, 1, npairs=1), 1, 1), "body.mode"),
        (_v2_payload(_v2_body(wire.MODE_F32, 2**32), 1, 0), "body.k"),
        (_v2_payload(_v2_body(wire.MODE_F32, -1), 1, 0), "body.k"),
        (_v2_payload(_v2_body(0, 0), 1, wire.MAX_PAIRS + 1), "header.npairs"),
        (_v2_payload(_v2_body(0, 0)[:-1] + b"\x03", 1, 0), "body.quality"),
        (b"PW\x02\x01" + b"\x00" * 20, "header: truncated"),
        (b"PW\x02\x02" + b"\x00" * 40, "header.version"),
    ],
)
def test_v2_errors_name_the_field(payload: bytes, field: str) -> None:
    with pytest.raises(wire.WireError, match=re.escape(field)):
        wire.decode_batch(payload)


def test_v2_hand_made_body_decodes() -> None:
    """The helper above builds valid v2 when the fields are in range (so the errors are the fields')."""
    b = wire.decode_batch(_v2_payload(_v2_body(wire.MODE_PAIR, 7, npairs=1), 1, 1))
    assert b.value.tolist() == [8.0]


def test_signal_table_with_version_2_is_rejected() -> None:
    bad = bytearray(GOLDEN_V1_SIGNALS)
    bad[2] = 2
    with pytest.raises(wire.WireError, match=r"header\.version"):
        wire.decode_signal_table(bytes(bad))


def test_quantisation_keeps_the_most_used_pairs() -> None:
    scale = np.concatenate([np.arange(1, 301, dtype=np.float64), np.full(50, 0.1), [0.0, np.nan]])
    offset = np.zeros(scale.shape[0])
    qt = wire.quantisation(scale, offset)
    assert qt.scale.shape[0] == wire.MAX_PAIRS and qt.scale[0] == 0.1
    assert (qt.pair_of_signal[300:350] == 0).all()
    assert (qt.pair_of_signal[-2:] == 255).all()
    assert np.count_nonzero(qt.pair_of_signal != 255) == wire.MAX_PAIRS - 1 + 50


# v3 telemetry as shipped: the v2 golden samples plus a sparse status column (UncertainLastUsableValue
# on sample 6, BadSensorFailure on 10, GoodClamped on 11). Never change it.
GOLDEN_V3_TELEMETRY = bytes.fromhex(
    "5057030115cd5b07000000002a0000000000000000010203040506070c00000009010300000067772d676f6c64656e"
    "28b52ffd649000fd0400c4059a99b93f0044c000ca002a009a0036003b00fe009c009700170001fb0100ff0020030b"
    "01000120040c010001a4ae065600000650380000ff090100550000000f7d0000182d2c44445454fbfb2109f1403f02"
    "00060401918c304080002920a013430ed09532e1ae3191ba17634fda0973d24e989369f7c5d0de3c9e2d166e325a49"
    "30020066f6e7c162b3db968838c41003ce78f1e28b573c471981c002180a507a"
)
GOLDEN_V3_STATUS = [0] * 6 + [0x40910000, 0, 0, 0, 0x808C0000, 0x00300000]


def test_golden_v3_telemetry_decodes_with_its_status_column() -> None:
    b = wire.decode_batch(GOLDEN_V3_TELEMETRY)
    assert (b.gateway, b.boot_epoch_ns, b.seq, b.table_hash) == ("gw-golden", 123456789, 42, bytes(range(8)))
    assert b.signal.tolist() == [0, 1, 2, 3, 4, 5] * 2
    assert np.array_equal(b.value.view(np.uint64), GOLDEN_V2_VALUES.view(np.uint64))
    assert b.quality.tolist() == [0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0]
    assert b.status is not None and b.status.dtype == np.uint32 and b.status.tolist() == GOLDEN_V3_STATUS


def test_older_versions_have_no_status_column() -> None:
    assert wire.decode_batch(GOLDEN_V1_TELEMETRY).status is None
    assert wire.decode_batch(GOLDEN_V2_TELEMETRY).status is None


def test_header_of_v3_encoder_matches_golden() -> None:
    b = wire.decode_batch(GOLDEN_V3_TELEMETRY)
    again = wire.encode_batch(
        gateway=b.gateway, boot_epoch_ns=b.boot_epoch_ns, seq=b.seq, table_hash=b.table_hash,
        ts_ns=b.ts_ns, signal=b.signal, value=b.value, quality=b.quality,
        version=wire.VERSION_V3, quant=wire.quantisation(*GOLDEN_V2_QUANT), status=b.status,
    )
    header_len = 4 + 34 + len(b.gateway)
    assert again[:header_len] == GOLDEN_V3_TELEMETRY[:header_len]


def _v3_round_trip_with_sparse_status(cols: tuple[np.ndarray, ...], data: st.DataObject) -> None:
    ts, sig, val, q = cols
    n = len(ts)
    status = data.draw(hnp.arrays(np.uint32, n, elements=st.sampled_from([0, 0, 0, 0x808C0000, 0x40910000,
                                                                           0x80050000, 2**32 - 1, 1])))
    b = wire.decode_batch(_encode(ts, sig, val, q, version=wire.VERSION_V3, status=status))
    assert np.array_equal(b.value.view(np.uint64), val.view(np.uint64)) and np.array_equal(b.quality, q)
    assert b.status is not None and np.array_equal(b.status, status)
    assert wire.decode_batch(_encode(ts, sig, val, q, version=wire.VERSION_V3)).status.tolist() == [0] * n  # type: ignore[union-attr]


test_v3_round_trip_with_sparse_status, test_v3_round_trip_with_sparse_status_full = quick_and_full(
    _v3_round_trip_with_sparse_status, quick=50, full=200, cols=columns, data=st.data())


def test_v3_status_costs_nothing_when_all_good_and_little_when_not() -> None:
    rng = np.random.default_rng(1)
    n = 15_000
    ts = np.full(n, 1_700_000_000 * 10**9, np.int64)
    sig = np.arange(n, dtype=np.uint32)
    val = np.round(rng.normal(50, 5, n), 2)
    q = np.zeros(n, np.uint8)
    v2 = _encode(ts, sig, val, q, version=wire.VERSION_V2)
    good = _encode(ts, sig, val, q, version=wire.VERSION_V3, status=np.zeros(n, np.uint32))
    assert len(good) - len(v2) <= 8  # the nstatus header field, nothing per sample
    status = np.zeros(n, np.uint32)
    status[rng.choice(n, 31, replace=False)] = 0x808C0000  # 31 failed sensors
    bad = _encode(ts, sig, val, q, version=wire.VERSION_V3, status=status)
    assert len(bad) - len(v2) < 31 * 6


@pytest.mark.parametrize("mutate, field", [
    (lambda h: h[:34] + (100).to_bytes(4, "little") + h[38:], "header.nstatus"),
    (lambda h: h[:34] + (1).to_bytes(4, "little") + h[38:], "body"),  # the body holds two entries
])
def test_v3_malformed_status_names_the_field(mutate: object, field: str) -> None:
    payload = _encode(np.arange(4, dtype=np.int64), np.arange(4, dtype=np.uint32), np.zeros(4), np.zeros(4, np.uint8),
                      version=wire.VERSION_V3, status=np.array([0, 5, 0, 7], np.uint32))
    with pytest.raises(wire.WireError, match=re.escape(field)):
        wire.decode_batch(mutate(payload))  # type: ignore[operator]


def test_v3_status_entries_are_validated() -> None:
    def column(idx_d: list[int], codes: list[int]) -> memoryview:
        return memoryview(wire._shuffle(np.array(idx_d, np.uint32)) + wire._shuffle(np.array(codes, np.uint32)))

    assert wire._read_status(column([1, 2], [5, 6]), 4, 2).tolist() == [0, 5, 0, 6]
    with pytest.raises(wire.WireError, match=r"body\.status: indices not strictly increasing"):
        wire._read_status(column([1, 0], [5, 6]), 4, 2)
    with pytest.raises(wire.WireError, match=r"body\.status: index 4 beyond 4 samples"):
        wire._read_status(column([1, 3], [5, 6]), 4, 2)
    with pytest.raises(wire.WireError, match=r"body\.status: a Good \(0\) code"):
        wire._read_status(column([1, 2], [5, 0]), 4, 2)
