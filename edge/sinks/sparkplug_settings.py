"""The edge config's ``sparkplug:`` section: off unless present.

Kept apart from the edge node (edge/sinks/sparkplug.py) so that validating a config imports neither paho
nor protobuf. Ids are checked against the specification's reserved characters (+ / #) at load time.
"""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

#: Sparkplug ids: UTF-8 without + / # (tck-id-topic-structure-namespace-valid-group-id and friends).
SPARKPLUG_ID = r"^[^+/#]{1,128}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceMapping(enum.StrEnum):
    """What a Sparkplug device is: a machine of the plant file (default), or the PLC that serves it."""

    MACHINE = "machine"
    PLC = "plc"


class HistoryMode(enum.StrEnum):
    """What happens to reported values while they cannot be published (broker away, primary host offline)."""

    STORE = "store"  # kept in a bounded log under state_dir/sparkplug, sent later flagged is_historical
    DROP = "drop"  # counted and dropped: the host sees the current values in the next BIRTH only


class FeedMode(enum.StrEnum):
    """Where the daemon runs the node's per-frame work (edge/sinks/sparkplug_feed.py)."""

    THREAD = "thread"  # a worker thread: the event loop (sources, compact wire) never waits for protobuf work
    INLINE = "inline"  # on the event loop after the compact wire: ~1.4 µs per sample less CPU (bench/RESULTS.md)


class DeadbandRule(_Strict):
    """Report-by-exception deadband for the signals whose id matches one of ``match`` (fnmatch patterns).

    A value is reported when it differs from the last reported one by more than ``absolute`` (engineering
    units) or by more than ``percent`` of the signal's range (``high - low`` in the plant file; ignored where
    the range is unset). The first rule that matches a signal wins.
    """

    match: Annotated[list[str], Field(min_length=1)]
    absolute: float = Field(default=0.0, ge=0)
    percent: float = Field(default=0.0, ge=0, le=100)


class SparkplugSettings(_Strict):
    group_id: Annotated[str, Field(pattern=SPARKPLUG_ID)]
    edge_node_id: Annotated[str, Field(pattern=SPARKPLUG_ID)]
    devices: DeviceMapping = DeviceMapping.MACHINE
    host: str | None = Field(default=None, description="broker; unset: the edge's mqtt.host (TLS, user as mqtt)")
    port: int | None = Field(default=None, ge=1, le=65535, description="unset: the edge's mqtt.port")
    client_id: str | None = Field(default=None, min_length=1, description="default: plantwire-spb-<edge_node_id>")
    primary_host_id: Annotated[str, Field(pattern=SPARKPLUG_ID)] | None = Field(
        default=None, description="publish only while spBv1.0/STATE/<primary_host_id> says online"
    )
    deadband_absolute: float = Field(default=0.0, ge=0, description="default deadband: any change is reported")
    deadbands: list[DeadbandRule] = []
    feed: FeedMode = FeedMode.THREAD
    history: HistoryMode = HistoryMode.STORE
    store_max_bytes: int = Field(default=256 * 1024**2, ge=256 * 1024, description="disk the history store may use")
    store_max_age_s: float = Field(default=86400.0, gt=0, description="stored values older than this are dropped")
    replay_samples_per_s: int = Field(default=50_000, ge=100, description="rate cap of historical DDATA")
