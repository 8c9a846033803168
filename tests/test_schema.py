"""cloud.schema: names agree with the vectorised writer, points are checked, types land as declared."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest

from cloud import schema
from cloud.schema import SchemaError, format_point
from cloud.sinks.lineproto import SeriesPrefixes, build_lines
from plantwire.services import InfluxDB1


def test_samples_schema_matches_what_lineproto_writes() -> None:
    prefixes = SeriesPrefixes.build(schema.M_SAMPLES, site="s1", gateway="gw1", ids=["a.b"], machines=["m1"])
    line = build_lines(prefixes, np.array([5]), np.array([0]), np.array([1.5]), np.array([0], np.uint8)).tobytes()
    nonfinite = build_lines(prefixes, np.array([6]), np.array([0]), np.array([np.nan]), np.array([2], np.uint8))
    head, fields, _ts = line.decode().strip().split(" ")
    tags = {kv.split("=")[0] for kv in head.split(",")[1:]}
    assert tags == set(schema.SAMPLES.tags)
    names = {kv.split("=")[0] for kv in fields.split(",")}
    names |= {kv.split("=")[0] for kv in nonfinite.tobytes().decode().split(" ")[1].split(",")}
    assert names == set(schema.SAMPLES.field_names)


def test_tags_are_bounded_vocabulary() -> None:
    for m in schema.MEASUREMENTS:
        for tag in m.tags:
            # area, priority, transition, service, action, outcome: fixed vocabularies of the alarm layer (issue 16)
            assert tag in {"site", "gateway", "machine", "signal", "kind", "ingestor", "area", "priority",
                           "transition", "service", "action", "outcome"}, (m.name, tag)
        assert not set(m.tags) & set(m.field_names), m.name


def test_format_point_escapes_and_leaves_out_empty_and_none() -> None:
    line = format_point(
        schema.M_EVENTS,
        {"site": "plant a", "gateway": "gw,1", "machine": "m=1", "signal": "", "kind": "machine"},
        {"active": 1, "state": 'open "now"', "peak": 0.5, "duration_s": None},
        123,
    )
    assert line == (
        'events,gateway=gw\\,1,kind=machine,machine=m\\=1,site=plant\\ a active=1i,state="open \\"now\\"",peak=0.5 123'
    )


@pytest.mark.parametrize(
    ("measurement", "tags", "fields", "message"),
    [
        ("nope", {}, {"x": 1}, "unknown measurement 'nope'"),
        ("health", {"signal": "x"}, {"health": 1.0}, "health: unknown tag 'signal'"),
        ("health", {}, {"rul_s": 1.0}, "health: unknown field 'rul_s'"),
        ("health", {}, {"health": float("nan")}, "health.health: InfluxDB cannot store nan"),
        ("pipeline", {}, {"samples": 1.5}, "pipeline.samples: expected an integer"),
        ("pipeline", {}, {"samples": True}, "pipeline.samples: expected a number"),
        ("events", {}, {"state": 1}, "events.state: expected a string"),
        ("health", {}, {"rul": None}, "health: a point needs at least one field"),
    ],
)
def test_format_point_rejects_with_the_place(measurement: str, tags: dict, fields: dict, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        format_point(measurement, tags, fields, 0)


@pytest.mark.integration
def test_every_field_lands_with_its_declared_type(influxdb: InfluxDB1, influx_db: str) -> None:
    values = {schema.FieldType.FLOAT: 1.25, schema.FieldType.INTEGER: 3, schema.FieldType.STRING: "x"}
    lines = [
        format_point(m.name, {}, {f.name: values[f.type] for f in m.fields}, 1_000_000_000)
        for m in schema.MEASUREMENTS
    ]
    _write(influxdb, influx_db, "\n".join(lines))
    for m in schema.MEASUREMENTS:
        rows = influxdb.rows(f'SHOW FIELD KEYS FROM "{m.name}"', influx_db)
        got = {row["fieldKey"]: row["fieldType"] for row in rows}
        assert got == {f.name: f.type.value for f in m.fields}, m.name


def _write(server: InfluxDB1, db: str, body: str) -> None:
    req = urllib.request.Request(f"{server.url}/write?db={db}&precision=ns", data=body.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 204


@pytest.mark.integration
def test_an_alarm_episode_is_one_point_whatever_arrives(influxdb: InfluxDB1, influx_db: str) -> None:
    """Open, close, then both replayed in order (a re-sent log): one merged row at the start, closed."""
    tags = {"site": "s", "gateway": "g", "machine": "m", "signal": "m.x", "kind": "level"}
    start = 1_700_000_000_000_000_000
    opened = format_point(schema.M_EVENTS, tags, {"active": 1, "state": "open", "peak": 0.4}, start)
    closed = format_point(
        schema.M_EVENTS, tags,
        {"active": 0, "state": "closed", "peak": 0.9, "duration_s": 30.0, "end_ms": start // 1_000_000 + 30_000},
        start,
    )
    for body in (opened, closed, opened, closed):
        _write(influxdb, influx_db, body)
    rows = influxdb.rows('SELECT * FROM "events"', influx_db)
    assert len(rows) == 1
    assert (rows[0]["active"], rows[0]["state"], rows[0]["peak"], rows[0]["duration_s"]) == (0, "closed", 0.9, 30.0)
