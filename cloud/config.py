"""Cloud ingestor configuration. Tokens and passwords come from environment variables named here."""

from __future__ import annotations

import enum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from plantwire.configfile import read_yaml, validate


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InfluxApi(enum.StrEnum):
    """v1: HTTP ``/write`` + InfluxQL (InfluxDB 1.x, Debian's 1.6); v2: influxdb-client (1.8+, 2.x, 3.x)."""

    V1 = "v1"
    V2 = "v2"


class MqttSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    client_id: str = "plantwire-ingest"
    keepalive_s: int = Field(default=30, ge=5)
    username: str | None = None
    password_env: str | None = None
    topic: str = "plantwire/v1/+/+/#"
    max_inflight: int = Field(default=100, ge=1, le=65535)


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
    create_database: bool = True
    measurement: str = "samples"


class MetricsSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=9109, ge=0, le=65535, description="0 picks a free port (see state_dir/metrics.port)")


class CloudConfig(_Strict):
    mqtt: MqttSettings = MqttSettings()
    influx: InfluxSettings = InfluxSettings()
    state_dir: Path = Path("/var/lib/plantwire/ingest")
    metrics: MetricsSettings = MetricsSettings()


def load_cloud(path: Path) -> CloudConfig:
    """Load an ingestor config; a relative ``state_dir`` is taken relative to the config's folder."""
    cfg = validate(CloudConfig, read_yaml(path), str(path))
    if not cfg.state_dir.is_absolute():
        cfg = cfg.model_copy(update={"state_dir": path.parent / cfg.state_dir})
    return cfg
