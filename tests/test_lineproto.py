"""cloud.sinks.lineproto: the vectorised line-protocol builder against a plain Python reference.

Floats must print exactly as Python's ``repr`` (shortest round-trip), which hypothesis checks over
arbitrary float64 bit patterns (subnormals, extremes, integers, negative zero); escaping and the
non-finite rule are checked both textually and against a real InfluxDB 1.6 (``influx_db``).
"""

from __future__ import annotations

import math
import struct
import urllib.parse
import urllib.request

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud.sinks.lineproto import BACKSLASH_STANDIN, Lines, SeriesPrefixes, build_lines, escape_tag_value, stored_name
from plantwire.services import InfluxDB1
from tests.property_runs import quick_and_full


def naive_line(prefix: str, ts: int, value: float, quality: int) -> str:
    """The obvious per-point reference the kernel must equal, byte for byte: ``quality`` only when not good."""
    parts = [] if not math.isfinite(value) else [f"value={value!r}"]
    if quality != 0:
        parts.append(f"quality={quality}i")
    if math.isnan(value):
        parts.append('nonfinite="nan"')
    elif math.isinf(value):
        parts.append(f'nonfinite="{"+inf" if value > 0 else "-inf"}"')
    return f"{prefix}{','.join(parts)} {ts}\n"


def one_table(n: int = 3) -> SeriesPrefixes:
    return SeriesPrefixes.build("samples", site="s", gateway="g", ids=[f"sig{i}" for i in range(n)], machines=["m"] * n)


def build(
    values: np.ndarray,
    *,
    ts: np.ndarray | None = None,
    quality: np.ndarray | None = None,
    prefixes: SeriesPrefixes | None = None,
) -> Lines:
    n = values.shape[0]
    prefixes = prefixes or one_table()
    ts = np.arange(n, dtype=np.int64) if ts is None else ts
    quality = np.zeros(n, dtype=np.uint8) if quality is None else quality
    sig = (np.arange(n) % len(prefixes)).astype(np.uint32)
    return build_lines(prefixes, ts, sig, values, quality)


def value_texts(lines: Lines) -> list[str]:
    out = []
    for line in lines.tobytes().decode().splitlines():
        fields = line.split(" ")[1]
        out.append(fields.split(",")[0].removeprefix("value="))
    return out


# -- floats --------------------------------------------------------------------------------------

EDGE_FLOATS = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.1,
    0.2,
    0.3,
    1 / 3,
    2 / 3,
    5e-324,
    -5e-324,
    2.2250738585072014e-308,
    2.225073858507201e-308,
    1.7976931348623157e308,
    -1.7976931348623157e308,
    1e16,
    1e15,
    9999999999999998.0,
    1e17,
    1e22,
    1e23,
    1e-4,
    1e-5,
    0.00012345,
    1.2345e-5,
    123456789012345678.0,
    9007199254740992.0,
    9007199254740993.0,
    4503599627370496.5,
    0.5,
    1.5,
    100.0,
    123.456,
    1e100,
    1e-100,
    1e308,
    1e-308,
    299792458.0,
    6.02214076e23,
    1.602176634e-19,
    2.0**-1074,
    2.0**-1022,
    2.0**1023,
    2.0**52,
    2.0**53,
    2.0**63,
    2.0**64,
    12345678901234567.0,
    0.1 + 0.2,
    1.0000000000000002,
    0.9999999999999999,
]


def test_edge_case_floats_print_as_repr() -> None:
    vals = np.array(EDGE_FLOATS, dtype=np.float64)
    assert value_texts(build(vals)) == [repr(float(v)) for v in EDGE_FLOATS]


def _floats_print_as_repr(xs: list[float]) -> None:
    assert value_texts(build(np.array(xs, dtype=np.float64))) == [repr(x) for x in xs]


test_floats_print_as_repr, test_floats_print_as_repr_full = quick_and_full(
    _floats_print_as_repr, st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=200),
    quick=60, full=300)


def _any_bit_pattern_prints_as_repr_or_nonfinite(bits: list[int]) -> None:
    vals = np.array(bits, dtype=np.uint64).view(np.float64)
    prefixes = one_table(1)
    ts = np.arange(len(bits), dtype=np.int64)
    q = np.zeros(len(bits), dtype=np.uint8)
    lines = build(vals, ts=ts, quality=q, prefixes=prefixes)
    p = prefixes.prefix(0).decode()
    assert lines.tobytes().decode() == "".join(naive_line(p, i, float(v), 0) for i, v in enumerate(vals.tolist()))


test_any_bit_pattern_prints_as_repr_or_nonfinite, test_any_bit_pattern_prints_as_repr_or_nonfinite_full = (
    quick_and_full(_any_bit_pattern_prints_as_repr_or_nonfinite,
                   st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=200), quick=60, full=300))


def _random_floats_match_repr(half: int) -> None:
    """Bulk check over random bit patterns and decimal-looking values (what sensors deliver), ``half`` of each."""
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2**63, half, dtype=np.uint64, endpoint=False) | (
        rng.integers(0, 2, half, dtype=np.uint64) << np.uint64(63)
    )
    vals = bits.view(np.float64)
    vals = np.concatenate([vals[np.isfinite(vals)], np.round(rng.normal(0, 1000, half), 3)])
    texts = value_texts(build(vals, prefixes=one_table(1)))
    ref = [repr(v) for v in vals.tolist()]
    bad = [(r, t) for r, t in zip(ref, texts, strict=True) if r != t]
    assert not bad, bad[:10]


def test_200k_random_floats_match_repr() -> None:
    """The default run's share of the million below."""
    _random_floats_match_repr(100_000)


@pytest.mark.slow
def test_a_million_random_floats_match_repr() -> None:
    _random_floats_match_repr(500_000)


def test_parsed_back_values_are_the_same_floats() -> None:
    rng = np.random.default_rng(1)
    vals = rng.normal(0, 1, 10_000) * 10.0 ** rng.integers(-30, 30, 10_000)
    assert [float(t) for t in value_texts(build(vals))] == vals.tolist()


# -- the rest of the line ----------------------------------------------------------------------------


@given(
    st.lists(
        st.tuples(st.integers(-(2**63), 2**63 - 1), st.integers(0, 255), st.floats(), st.integers(0, 3)),
        min_size=1,
        max_size=100,
    )
)
@settings(max_examples=200, deadline=None)
def test_whole_lines_equal_the_naive_reference(rows: list[tuple[int, int, float, int]]) -> None:
    prefixes = SeriesPrefixes.build(
        "samples", site="plant 1", gateway="gw,1", ids=["a", "b=c", "d e", "x"], machines=["m", "", "m 2", "m"]
    )
    ts = np.array([r[0] for r in rows], dtype=np.int64)
    q = np.array([r[1] for r in rows], dtype=np.uint8)
    v = np.array([r[2] for r in rows], dtype=np.float64)
    s = np.array([r[3] for r in rows], dtype=np.uint32)
    lines = build_lines(prefixes, ts, s, v, q)
    want = "".join(
        naive_line(prefixes.prefix(int(si)).decode(), int(t), float(x), int(qq))
        for t, qq, x, si in zip(ts, q, v, s, strict=True)
    )
    assert lines.tobytes().decode() == want
    assert len(lines) == len(rows)
    assert lines.line_end.tolist() == (np.cumsum([len(w) + 1 for w in want.split("\n")[:-1]])).tolist()


def test_nonfinite_values_become_a_string_field_and_keep_quality() -> None:
    lines = build(np.array([np.nan, np.inf, -np.inf, 1.0, 2.5]), quality=np.array([2, 1, 0, 0, 1], dtype=np.uint8))
    fields = [line.split(" ")[1] for line in lines.tobytes().decode().splitlines()]
    assert fields == [
        'quality=2i,nonfinite="nan"',
        'quality=1i,nonfinite="+inf"',
        'nonfinite="-inf"',  # good: no quality field (absent means good)
        "value=1.0",
        "value=2.5,quality=1i",
    ]
    # A NaN with a sign bit and payload is still "nan" (InfluxDB cannot store either).
    neg_nan = np.array([0xFFF8000000000001], dtype=np.uint64).view(np.float64)
    assert 'nonfinite="nan"' in build(neg_nan).tobytes().decode()


def test_series_prefixes_escape_and_omit_empty_tags() -> None:
    p = SeriesPrefixes.build(
        "my samples,x", site="s 1", gateway="g=1", ids=["a,b", "", "c\nd"], machines=["", "m", "m"]
    )
    assert p.prefix(0) == b"my\\ samples\\,x,gateway=g\\=1,signal=a\\,b,site=s\\ 1 "
    assert p.prefix(1) == b"my\\ samples\\,x,gateway=g\\=1,machine=m,site=s\\ 1 "
    assert p.prefix(2) == b"my\\ samples\\,x,gateway=g\\=1,machine=m,signal=c\\nd,site=s\\ 1 "
    assert len(p) == 3


def test_backslashes_influxdb_cannot_store_get_a_standin() -> None:
    assert escape_tag_value("a\\") == "a" + BACKSLASH_STANDIN
    assert escape_tag_value("a\\,b") == "a" + BACKSLASH_STANDIN + "\\,b"
    assert escape_tag_value("a\\b") == "a\\b"  # stored as written
    assert escape_tag_value("a\\\\ ") == "a\\" + BACKSLASH_STANDIN + "\\ "


def test_errors_and_empty_input() -> None:
    p = one_table(2)
    z = np.zeros(3)
    with pytest.raises(ValueError, match="differ in length"):
        build_lines(p, np.zeros(3, np.int64), np.zeros(2, np.uint32), z, np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="outside the signal table"):
        build_lines(p, np.zeros(3, np.int64), np.array([0, 1, 2], np.uint32), z, np.zeros(3, np.uint8))
    empty = build_lines(p, np.zeros(0, np.int64), np.zeros(0, np.uint32), np.zeros(0), np.zeros(0, np.uint8))
    assert len(empty) == 0 and empty.nbytes == 0


def test_chunks_split_on_whole_lines() -> None:
    lines = build(np.arange(10, dtype=np.float64))
    chunks = [bytes(c) for c in lines.chunks(3)]
    assert [c.count(b"\n") for c in chunks] == [3, 3, 3, 1]
    assert b"".join(chunks) == lines.tobytes()


# -- against a real InfluxDB 1.6 -------------------------------------------------------------------


def _write(influx: InfluxDB1, db: str, body: bytes) -> None:
    url = f"{influx.url}/write?{urllib.parse.urlencode({'db': db, 'precision': 'ns'})}"
    req = urllib.request.Request(url, data=body, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 204


TAG_TEXT = st.text(alphabet=st.sampled_from(list("ab Z9,= \\\"'.-_/:é")), min_size=1, max_size=12)


@given(ids=st.lists(TAG_TEXT, min_size=1, max_size=6, unique=True), machine=TAG_TEXT)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_influxdb_reads_back_tags_and_values_exactly(
    influxdb: InfluxDB1, influx_db: str, ids: list[str], machine: str
) -> None:
    if _has_samples(influxdb, influx_db):
        influxdb.query('DROP MEASUREMENT "samples"', influx_db)
    p = SeriesPrefixes.build("samples", site="site 1", gateway="gw,1", ids=ids, machines=[machine] * len(ids))
    n = len(ids)
    vals = np.array([1.5, -0.0, 5e-324, np.nan, 1e300, 0.1][:n])
    lines = build_lines(
        p, np.arange(n, dtype=np.int64) + 10**18, np.arange(n, dtype=np.uint32), vals, np.zeros(n, np.uint8)
    )
    _write(influxdb, influx_db, lines.tobytes())
    rows = influxdb.rows(
        'SELECT "value", "nonfinite" FROM samples GROUP BY "signal", "machine", "site", "gateway"', influx_db
    )
    got = {r["signal"]: (r["machine"], r["site"], r["gateway"], r["value"], r["nonfinite"]) for r in rows}
    want = {}
    for sid, v in zip(ids, vals.tolist(), strict=True):
        stored = (
            stored_name(machine),
            "site 1",
            "gw,1",
            None if math.isnan(v) else v,
            "nan" if math.isnan(v) else None,
        )
        want[stored_name(sid)] = stored
    assert got == want


def _has_samples(influx: InfluxDB1, db: str) -> bool:
    return bool(influx.rows("SHOW MEASUREMENTS", db))


def test_repr_matches_struct_roundtrip_for_some_special_patterns() -> None:
    pats = [0x0000000000000001, 0x000FFFFFFFFFFFFF, 0x0010000000000000, 0x7FEFFFFFFFFFFFFF, 0x3FF0000000000001]
    vals = np.array(pats, dtype=np.uint64).view(np.float64)
    assert value_texts(build(vals)) == [repr(struct.unpack("<d", struct.pack("<Q", p))[0]) for p in pats]


# -- the status field (wire v3) ---------------------------------------------------------------------


def naive_status_line(prefix: str, ts: int, value: float, quality: int, code: int) -> str:
    from plantwire.status import status_name

    line = naive_line(prefix, ts, value, quality)
    if not code:
        return line
    head, _, stamp = line.rstrip("\n").rpartition(" ")
    return f'{head},status="{status_name(code)}" {stamp}\n'


@settings(max_examples=200, deadline=None)
@given(data=st.data(), n=st.integers(1, 60))
def test_status_field_only_on_points_that_are_not_good(data: st.DataObject, n: int) -> None:
    prefixes = one_table(4)
    values = np.array(data.draw(st.lists(st.sampled_from([1.5, np.nan, -np.inf, 0.1, 1e300]), min_size=n, max_size=n)))
    codes = np.array(data.draw(st.lists(st.sampled_from([0, 0, 0x808C0000, 0x80050000, 0x40910000, 0x80FE1234,
                                                        0x00300000]), min_size=n, max_size=n)), dtype=np.uint32)
    quality = (codes >> 30).astype(np.uint8).clip(0, 2)
    ts = np.arange(n, dtype=np.int64) * 7
    sig = (np.arange(n) % 4).astype(np.uint32)
    got = build_lines(prefixes, ts, sig, values, quality, codes).tobytes().decode()
    want = "".join(naive_status_line(prefixes.prefix(int(s)).decode(), int(t), float(v), int(q), int(c))
                   for s, t, v, q, c in zip(sig, ts, values, quality, codes, strict=True))
    assert got == want
    # Without codes (a v1/v2 batch), and with all-Good codes, the lines are the old ones, byte for byte.
    plain = build_lines(prefixes, ts, sig, values, quality).tobytes()
    assert build_lines(prefixes, ts, sig, values, quality, np.zeros(n, np.uint32)).tobytes() == plain


def test_influxdb_stores_the_status_of_bad_points(influxdb: InfluxDB1, influx_db: str) -> None:
    if _has_samples(influxdb, influx_db):
        influxdb.query('DROP MEASUREMENT "samples"', influx_db)
    p = one_table(3)
    codes = np.array([0, 0x808C0000, 0x80050000], np.uint32)
    lines = build_lines(p, np.full(3, 10**18, np.int64), np.arange(3, dtype=np.uint32),
                        np.array([1.0, np.nan, np.nan]), np.array([0, 2, 2], np.uint8), codes)
    _write(influxdb, influx_db, lines.tobytes())
    rows = influxdb.rows('SELECT "quality", "status" FROM samples GROUP BY "signal"', influx_db)
    # sig0 is good: neither quality nor status, so SELECT of those two fields returns no row for it.
    assert {r["signal"]: (r["quality"], r["status"]) for r in rows} == {
        "sig1": (2, "BadSensorFailure"), "sig2": (2, "BadCommunicationError")}
    assert influxdb.rows('SELECT "value" FROM samples', influx_db)[0]["value"] == 1.0


def test_readers_take_points_with_and_without_a_quality_field(influxdb: InfluxDB1, influx_db: str) -> None:
    """Since 2026-12-03 good points carry no ``quality``; older points carry ``quality=0i``. One database
    holds both: samples are counted on value/nonfinite, and max(quality) is the worst of either form."""
    from plantwire.pipeline import influx_counts

    p = one_table(2)
    t0 = 1_500_000_000_000_000_000
    old = "".join(f"{p.prefix(0).decode()}value={i}.5,quality=0i {t0 + i}\n" for i in range(3))  # as before
    old += f'{p.prefix(0).decode()}quality=0i,nonfinite="nan" {t0 + 3}\n'
    new = build_lines(p, t0 + 10 + np.arange(6, dtype=np.int64), np.array([0, 0, 1, 1, 1, 1], np.uint32),
                      np.array([1.0, np.nan, 2.0, np.inf, 3.0, 4.0]), np.array([0, 0, 0, 1, 2, 0], np.uint8))
    _write(influxdb, influx_db, old.encode() + new.tobytes())
    assert influx_counts(influxdb.url, influx_db, t0, t0 + 100) == {"sig0": 6, "sig1": 4}
    worst = {r["signal"]: r["max"] for r in influxdb.rows(
        f'SELECT max("quality") FROM samples WHERE time >= {t0} AND time < {t0 + 100} GROUP BY "signal"', influx_db)}
    assert worst == {"sig0": 0, "sig1": 2}
    only_new = influxdb.rows(
        f'SELECT max("quality") FROM samples WHERE time >= {t0 + 10} AND time < {t0 + 100} AND "signal" = \'sig0\'',
        influx_db)
    assert only_new == []  # every new sig0 point is good: no quality field, nothing to aggregate
