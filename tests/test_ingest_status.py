"""The ingestor stores which Bad it was: a wire v3 batch's status codes become a ``status`` field on the
non-Good points only, through a real Mosquitto and InfluxDB."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from plantwire import wire
from plantwire.services import InfluxDB1, Mosquitto
from tests.test_ingest import GW, HASH, IDS, SITE, Publisher, make_cfg, running, table_payload, wait_for

pytestmark = pytest.mark.integration


def test_v3_status_lands_as_a_field_on_bad_points_only(
    tmp_path: Path, mosquitto: Mosquitto, influxdb: InfluxDB1, influx_db: str
) -> None:
    n = 8
    t0 = time.time_ns() - 60_000_000_000
    cols = {
        "ts_ns": t0 + np.arange(n, dtype=np.int64) * 1_000_000,
        "signal": (np.arange(n) % len(IDS)).astype(np.uint32),
        "value": np.array([1.0, np.nan, 3.0, 4.0, 5.0, np.nan, 7.0, 8.0]),
        "quality": np.array([0, 2, 1, 0, 0, 2, 0, 0], np.uint8),
    }
    status = np.array([0, 0x808C0000, 0x40910000, 0, 0, 0x80050000, 0, 0], np.uint32)
    payload = wire.encode_batch(gateway=GW, boot_epoch_ns=1_000, seq=0, table_hash=HASH, version=wire.VERSION_V3,
                                status=status, **cols)
    cfg = make_cfg(tmp_path, mosquitto, influxdb.url, influx_db)
    pub = Publisher(mosquitto)
    try:
        pub.pub(wire.topic(SITE, GW, "signals"), table_payload(), retain=True)
        with running(cfg) as ing:
            pub.pub(wire.topic(SITE, GW, "telemetry"), payload)
            wait_for(lambda: ing.m_samples.get() >= n and ing.pending() == 0, what="written and acked")
    finally:
        pub.close()
    rows = influxdb.rows('SELECT "quality", "status" FROM samples GROUP BY "signal"', influx_db)
    got = {(r["signal"], r["time"]): (r["quality"], r["status"]) for r in rows}
    names = {0x808C0000: "BadSensorFailure", 0x40910000: "UncertainLastUsableValue",
             0x80050000: "BadCommunicationError"}
    # Good points carry neither quality nor status (absent means good): only the three others have either.
    want = {(IDS[s], t): (q, names.get(c))
            for t, s, q, c in zip(cols["ts_ns"].tolist(), cols["signal"].tolist(), cols["quality"].tolist(),
                                  status.tolist(), strict=True) if q or c}
    assert got == want
    counted = influxdb.rows('SELECT count("value") AS "finite", count("nonfinite") AS "nonfinite" FROM samples',
                            influx_db)
    assert (counted[0]["finite"], counted[0]["nonfinite"]) == (6, 2)  # all eight stored
