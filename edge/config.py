"""Edge gateway configuration: which plant to read, and how to publish it.

The plant file (signal catalogue) is referenced, not inlined, so the same register map serves the
simulator and the gateway. Secrets (MQTT and OPC-UA passwords) are never in this file: they are
read from environment variables or systemd credentials named here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from plantwire.configfile import ConfigError, read_yaml, validate
from plantwire.plant import PlantConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    client_id: str | None = None
    keepalive_s: int = Field(default=30, ge=5)
    username: str | None = None
    password_env: str | None = Field(default=None, description="environment variable holding the password")
    max_inflight: int = Field(default=100, ge=1, le=65535)


class PublishSettings(_Strict):
    batch_interval_ms: int = Field(default=1000, ge=10, le=60_000)
    max_batch_samples: int = Field(default=50_000, ge=100, le=1_000_000)
    buffer_samples: int = Field(default=400_000, ge=1000, description="frame buffer capacity")


class ModbusSettings(_Strict):
    period_ms: int = Field(default=1000, ge=10)
    timeout_s: float = Field(default=1.0, gt=0)
    max_block_registers: int = Field(default=125, ge=1, le=125)
    max_block_bits: int = Field(default=2000, ge=1, le=2000)
    max_gap: int = Field(default=16, ge=0, le=124, description="unused registers a block read may span")
    connections_per_device: int = Field(default=1, ge=1, le=16)


class OpcuaSettings(_Strict):
    publishing_interval_ms: int = Field(default=1000, ge=10)
    sampling_interval_ms: int = Field(default=0, ge=0)
    max_items_per_subscription: int = Field(default=1000, ge=1)
    timeout_s: float = Field(default=10.0, gt=0)


class DetectorSettings(_Strict):
    alpha: float = Field(default=0.01, gt=0, lt=1)
    threshold: float = Field(default=6.0, gt=0)
    warmup: int = Field(default=30, ge=1)
    min_std: float = Field(default=1e-6, gt=0)


class MetricsSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65535, description="0 picks a free port (see state_dir/metrics.port)")


class EdgeConfig(_Strict):
    gateway_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    plant: Path
    state_dir: Path = Path("/var/lib/plantwire/edge")
    mqtt: MqttSettings = MqttSettings()
    publish: PublishSettings = PublishSettings()
    modbus: ModbusSettings = ModbusSettings()
    opcua: OpcuaSettings = OpcuaSettings()
    detector: DetectorSettings = DetectorSettings()
    metrics: MetricsSettings = MetricsSettings()


def load_edge(path: Path) -> tuple[EdgeConfig, PlantConfig]:
    """Load an edge config and the plant file it references (relative to the config's folder)."""
    cfg = validate(EdgeConfig, read_yaml(path), str(path))
    plant_path = cfg.plant if cfg.plant.is_absolute() else path.parent / cfg.plant
    try:
        from plantwire.configfile import load_plant

        plant = load_plant(plant_path)
    except ConfigError as exc:
        raise ConfigError(str(path), [f"plant: {e}" for e in exc.report().splitlines()]) from None
    state_dir = cfg.state_dir if cfg.state_dir.is_absolute() else path.parent / cfg.state_dir
    cfg = cfg.model_copy(update={"plant": plant_path, "state_dir": state_dir})
    return cfg, plant
