"""Cloud ingestor configuration. Tokens and passwords come from environment variables named here."""

from __future__ import annotations

import enum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cloud.retention import RetentionSettings
from plantwire.configfile import ConfigKind, read_yaml, validate


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InfluxApi(enum.StrEnum):
    """v1: HTTP ``/write`` + InfluxQL (InfluxDB 1.x, Debian's 1.6); v2: influxdb-client (1.8+, 2.x, 3.x)."""

    V1 = "v1"
    V2 = "v2"


class TlsSettings(_Strict):
    """TLS to the broker: the server is always verified (hostname and chain); a client certificate is optional."""

    ca_file: Path | None = Field(default=None, description="CA bundle for the broker's certificate; unset: system CAs")
    cert_file: Path | None = Field(default=None, description="client certificate (PEM), with key_file")
    key_file: Path | None = Field(default=None, description="client key (PEM), with cert_file")
    key_password_env: str | None = Field(default=None, description="environment variable holding the key's password")

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (a client certificate needs its key)")
        return self


class Compression(enum.StrEnum):
    """Request bodies to InfluxDB: ``gzip`` shrinks line protocol ~10x for a remote server (costs CPU)."""

    NONE = "none"
    GZIP = "gzip"


class MqttSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    client_id: str = "plantwire-ingest"
    keepalive_s: int = Field(default=30, ge=5)
    username: str | None = None
    password_env: str | None = None
    tls: TlsSettings | None = Field(default=None, description="TLS (usually port 8883); unset: plain TCP")
    topic: str = Field(
        default="plantwire/v1/+/+/#",
        description="subscription; '$share/<group>/plantwire/v1/+/+/#' lets several ingestors share the load",
    )
    max_inflight: int = Field(
        default=1000, ge=1, le=65535, description="MQTT 5 Receive Maximum: unacknowledged messages the broker sends us"
    )
    broadcast_topics: tuple[str, ...] = Field(
        default=("plantwire/v1/+/+/signals", "plantwire/v1/+/+/ack"),
        description="with a shared subscription, also subscribed unshared: every ingestor needs every signal "
        "table (retained messages are not sent to shared subscriptions) and every peer's ack watermark",
    )
    session_expiry_s: int = Field(
        default=7 * 24 * 3600, ge=0, description="how long the broker queues for us while we are away"
    )


class InfluxSettings(_Strict):
    api: InfluxApi = InfluxApi.V1
    url: str = "http://127.0.0.1:8086"
    database: str = "plantwire"  # v1 database; v2 bucket when ``bucket`` is unset
    retention_policy: str | None = None
    org: str = "plantwire"
    bucket: str | None = None
    token_env: str | None = Field(default=None, description="environment variable holding the v2 token")
    username: str | None = None
    password_env: str | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    ping_interval_s: float = Field(
        default=1.0, gt=0, le=60, description="ping /ping this often on a connection of its own (health, influx_up)"
    )
    ping_timeout_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="a ping unanswered this long marks InfluxDB down at once, whatever the write timeout",
    )
    create_database: bool = True
    measurement: str = "samples"
    compression: Compression = Compression.NONE


class IngestSettings(_Strict):
    """How messages are grouped into InfluxDB writes, retried and bounded."""

    max_batch_messages: int = Field(default=500, ge=1, description="messages per durable write (then all acked)")
    max_batch_samples: int = Field(default=200_000, ge=1, description="samples per durable write")
    linger_ms: int = Field(default=20, ge=0, le=10_000, description="wait this long for more messages to batch")
    write_connections: int = Field(
        default=1, ge=1, le=8, description="concurrent InfluxDB requests per group (drains a back-log faster)"
    )
    # At most 100,000 lines (~12 MB, under InfluxDB 1.x's 25 MB max-body-size; a 413 halves the request
    # anyway), cut evenly over the connections (cloud.sinks.split): influxd spends ~1/3 less CPU per
    # point in requests of 50,000-100,000 lines than of 10,000 (bench/influx_cost.py, bench/RESULTS.md).
    lines_per_request: int = Field(
        default=100_000, ge=100, description="most line-protocol lines per HTTP request (groups are cut evenly)"
    )
    max_payload_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, description="larger payloads are dead-lettered")
    held_max_messages: int = Field(
        default=200,
        ge=0,
        description="batches held waiting for their signal table; beyond it the oldest is dead-lettered",
    )
    held_max_age_s: float = Field(default=300.0, gt=0, description="a batch held longer is dead-lettered")
    retry_min_s: float = Field(default=0.5, gt=0)
    retry_max_s: float = Field(default=30.0, gt=0)
    ack_interval_s: float = Field(default=5.0, gt=0, description="re-publish ack watermarks at least this often")
    report_interval_s: float = Field(default=10.0, gt=0, description="pipeline statistics points into InfluxDB")
    dead_letter_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024 * 1024)
    backfill_quiet_s: float = Field(
        default=30.0, gt=0, description="recompute rollups for late (replayed) data once none arrived for this long"
    )
    instance: str = Field(default="", description="ingestor tag on pipeline points (set when several share a load)")


class MetricsSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=9109, ge=0, le=65535, description="0 picks a free port (see state_dir/metrics.port)")


class CloudConfig(_Strict):
    mqtt: MqttSettings = MqttSettings()
    influx: InfluxSettings = InfluxSettings()
    state_dir: Path = Path("/var/lib/plantwire/ingest")
    metrics: MetricsSettings = MetricsSettings()
    ingest: IngestSettings = IngestSettings()
    retention: RetentionSettings | None = Field(
        default=None,
        description="when set (``{}`` takes the defaults), the ingestor runs cloud.retention.ensure on start "
        "(InfluxDB 1.x only: retention policies, rollup continuous queries), retrying until it succeeds",
    )

    @model_validator(mode="after")
    def _held_below_window(self) -> CloudConfig:
        error = _held_window_error(self.ingest.held_max_messages, self.mqtt.max_inflight)
        if error:
            raise ValueError(error)
        return self


def _held_window_error(held: int, inflight: int) -> str | None:
    # Held batches are unacknowledged: if they could fill the broker's window (Receive Maximum),
    # the signal table they wait for could not be delivered until they expire.
    if held >= inflight:
        return (
            f"ingest.held_max_messages ({held}) must be below mqtt.max_inflight ({inflight}), "
            "or held batches could block the signal table they wait for"
        )
    return None


def cross_errors(data: dict[str, object]) -> list[str]:
    """The cross-field checks on the raw mapping (defaults where unset), to report with field errors."""

    def value(section: str, key: str, model: type[BaseModel]) -> object:
        sub = data.get(section)
        v = sub.get(key, model.model_fields[key].default) if isinstance(sub, dict) else model.model_fields[key].default
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    held = value("ingest", "held_max_messages", IngestSettings)
    inflight = value("mqtt", "max_inflight", MqttSettings)
    error = _held_window_error(held, inflight) if isinstance(held, int) and isinstance(inflight, int) else None
    return [error] if error else []


def load_cloud(path: Path) -> CloudConfig:
    """Load an ingestor config; relative ``state_dir`` and TLS file paths are taken relative to the config's folder."""
    cfg = validate(CloudConfig, read_yaml(path, kind=ConfigKind.INGESTOR), str(path), raw_checks=cross_errors)
    if not cfg.state_dir.is_absolute():
        cfg = cfg.model_copy(update={"state_dir": path.parent / cfg.state_dir})
    tls = cfg.mqtt.tls
    if tls is not None:
        rel = {
            k: path.parent / v
            for k in ("ca_file", "cert_file", "key_file")
            if (v := getattr(tls, k)) and not v.is_absolute()
        }
        if rel:
            cfg = cfg.model_copy(update={"mqtt": cfg.mqtt.model_copy(update={"tls": tls.model_copy(update=rel)})})
    return cfg
