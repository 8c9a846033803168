"""Edge gateway configuration: which plant to read, and how to publish it.

The plant file (signal catalogue) is referenced, not inlined, so the same register map serves the
simulator and the gateway. Secrets (MQTT and OPC-UA passwords) are never in this file: they are
read from environment variables or systemd credentials named here.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.actions.settings import ActionsSettings, check_targets
from edge.agents.settings import AgentsSettings
from edge.alarms.settings import AlarmSettings
from edge.console.settings import ConsoleSettings
from edge.detectors.settings import AnalyticsSettings
from edge.modelstore.settings import ModelStoreSettings
from edge.sinks.sparkplug_settings import SparkplugSettings
from edge.spool import SpoolSettings
from plantwire.configfile import ConfigError, read_yaml, validate
from plantwire.plant import PlantConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttTlsSettings(_Strict):
    """TLS to the broker: the broker is always verified (chain and hostname); a client certificate
    (whose CN the shipped Mosquitto ACL uses as the gateway's identity) is optional. Relative paths
    are against the config file's folder. The key's password, if any, comes from a systemd
    credential (``key_password_credential``) or an environment variable, never from this file."""

    ca_file: Path = Field(description="CA certificate(s) the broker's certificate must chain to")
    cert_file: Path | None = Field(default=None, description="client certificate (PEM), with key_file")
    key_file: Path | None = Field(default=None, description="client private key (PEM), with cert_file")
    key_password_credential: str | None = Field(default=None, description="systemd credential name (LoadCredential)")
    key_password_env: str | None = Field(default=None, description="environment variable holding the key's password")

    @model_validator(mode="after")
    def _pair(self) -> MqttTlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (a client certificate needs its key)")
        return self


class MqttSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    client_id: str | None = None
    keepalive_s: int = Field(default=30, ge=5)
    username: str | None = None
    password_env: str | None = Field(default=None, description="environment variable holding the password")
    max_inflight: int = Field(default=100, ge=1, le=65535)
    tls: MqttTlsSettings | None = Field(default=None, description="TLS (usually port 8883); unset: plain TCP")


class PublishSettings(_Strict):
    batch_interval_ms: int = Field(default=1000, ge=10, le=60_000)
    flush_phase_ms: int = Field(
        default=250, ge=0, le=30_000, description="flush this long after each interval boundary (polls land first)"
    )
    max_batch_samples: int = Field(default=50_000, ge=100, le=1_000_000)
    buffer_samples: int = Field(default=400_000, ge=1000, description="frame buffer capacity")


class JudgeSettings(_Strict):
    """The judge thread (edge/judge.py) shares the GIL with the event loop the sources poll in.

    Its Python parts (alarm layer, agents) hold the GIL until the interpreter's switch interval asks them to
    hand it over; every wake-up of the loop (each Modbus response) may wait that long. Python's 5 ms let a
    150 ms GIL-holding flush thread make 81-115 of 1,200 10 Hz polls late; 1 ms made 12-14 late
    (bench/modbus_source.py, bench/RESULTS.md). A process-wide setting: the edge daemon sets it at start.
    """

    switch_interval_ms: float = Field(
        default=1.0, gt=0, le=100, description="sys.setswitchinterval of the edge daemon (Python's default is 5 ms)"
    )


class ModbusSettings(_Strict):
    period_ms: int = Field(default=1000, ge=10)
    timeout_s: float = Field(default=1.0, gt=0)
    max_block_registers: int = Field(default=125, ge=1, le=125)
    max_block_bits: int = Field(default=2000, ge=1, le=2000)
    max_gap: int = Field(default=16, ge=0, le=124, description="unused registers a block read may span")
    connections_per_device: int = Field(default=1, ge=1, le=16)


class OpcuaMode(enum.StrEnum):
    """How a group of OPC-UA signals is acquired."""

    SUBSCRIBE = "subscribe"  # monitored items; the server pushes changes (default)
    POLL = "poll"  # bulk Read on wall-clock ticks (servers with poor subscription support, slow signals)


class DeadbandType(enum.StrEnum):
    """OPC-UA DataChangeFilter deadband (Part 4 7.22.2); ``percent`` needs an EURange on the server."""

    NONE = "none"
    ABSOLUTE = "absolute"
    PERCENT = "percent"


class SecurityMode(enum.StrEnum):
    """OPC-UA message security mode; Sign and SignAndEncrypt use the Basic256Sha256 policy."""

    NONE = "None"
    SIGN = "Sign"
    SIGN_AND_ENCRYPT = "SignAndEncrypt"


class OpcuaGroup(_Strict):
    """Acquisition settings for the signals whose id matches one of ``match`` (fnmatch patterns).

    The first group that matches a signal wins; signals no group matches use the top-level
    ``opcua`` settings. Unset fields inherit the top-level value.
    """

    name: str = ""
    match: Annotated[list[str], Field(min_length=1)]
    mode: OpcuaMode = OpcuaMode.SUBSCRIBE
    publishing_interval_ms: int | None = Field(default=None, ge=10)
    sampling_interval_ms: int | None = Field(default=None, ge=0)
    queue_size: int | None = Field(default=None, ge=1)
    deadband: DeadbandType | None = None
    deadband_value: float | None = Field(default=None, ge=0)
    poll_period_ms: int | None = Field(default=None, ge=10)


class OpcuaSecurity(_Strict):
    """Secure channel and user identity. Secrets never live here: only where to find them.

    ``certificate`` (DER) and ``private_key`` (PEM) are generated (self-signed, 2048-bit RSA, one year)
    on first run when absent; the server must then be told to trust the certificate (see
    edge/sources/opcua_security.py). ``credentials_file`` is an environment file (``KEY=value``
    lines, as systemd's EnvironmentFile) holding ``username_key`` and ``password_key``; without a
    file, the process environment is used.
    """

    mode: SecurityMode = SecurityMode.NONE
    policy: Literal["Basic256Sha256"] = "Basic256Sha256"
    certificate: Path | None = None
    private_key: Path | None = None
    server_certificate: Path | None = Field(default=None, description="pin the server certificate (DER/PEM)")
    application_uri: str = "urn:plantwire:edge"
    credentials_file: Path | None = None
    username_key: str | None = Field(default=None, description="variable naming the OPC-UA user name")
    password_key: str | None = Field(default=None, description="variable naming the OPC-UA password")

    @model_validator(mode="after")
    def _paths_for_secure_modes(self) -> OpcuaSecurity:
        if self.mode is not SecurityMode.NONE and (self.certificate is None or self.private_key is None):
            raise ValueError(f"security mode {self.mode.value} needs certificate and private_key paths")
        if (self.username_key is None) != (self.password_key is None):
            raise ValueError("username_key and password_key go together")
        return self


class OpcuaSettings(_Strict):
    """OPC-UA acquisition defaults, per-group overrides, limits, reconnect, watchdog and back-fill."""

    publishing_interval_ms: int = Field(default=1000, ge=10)
    sampling_interval_ms: int = Field(default=0, ge=0)
    max_items_per_subscription: int = Field(default=1000, ge=1)
    timeout_s: float = Field(default=10.0, gt=0)
    queue_size: int | None = Field(default=None, ge=1, description="default: enough for one publishing interval")
    deadband: DeadbandType = DeadbandType.NONE
    deadband_value: float = Field(default=0.0, ge=0)
    keepalive_count: int = Field(default=10, ge=1)
    lifetime_count: int = Field(default=60, ge=3)
    poll_period_ms: int = Field(default=1000, ge=10)
    max_nodes_per_read: int = Field(default=1000, ge=1, description="also capped by the server's MaxNodesPerRead")
    reads_in_flight: int = Field(default=4, ge=1, le=64)
    reconnect_initial_s: float = Field(default=1.0, gt=0)
    reconnect_max_s: float = Field(default=60.0, gt=0)
    reconnect_jitter: float = Field(default=0.2, ge=0, lt=1)
    watchdog_margin: float = Field(default=1.5, ge=1.0, description="silence tolerated, in keep-alive periods")
    backfill: bool = True
    backfill_max_s: float = Field(default=3600.0, ge=0, description="longest outage back-filled by HistoryRead")
    groups: list[OpcuaGroup] = []
    security: OpcuaSecurity = OpcuaSecurity()

    @model_validator(mode="after")
    def _backoff_order(self) -> OpcuaSettings:
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be >= reconnect_initial_s")
        if self.lifetime_count < 3 * self.keepalive_count:
            raise ValueError("lifetime_count must be at least 3 x keepalive_count (OPC-UA Part 4 5.13.2)")
        return self


class MetricsSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65535, description="0 picks a free port (see state_dir/metrics.port)")


class EdgeConfig(_Strict):
    gateway_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    plant: Path
    state_dir: Path = Path("/var/lib/plantwire/edge")
    mqtt: MqttSettings = MqttSettings()
    publish: PublishSettings = PublishSettings()
    judge: JudgeSettings = JudgeSettings()
    modbus: ModbusSettings = ModbusSettings()
    opcua: OpcuaSettings = OpcuaSettings()
    analytics: AnalyticsSettings = AnalyticsSettings()
    spool: SpoolSettings = SpoolSettings()
    metrics: MetricsSettings = MetricsSettings()
    sparkplug: SparkplugSettings | None = Field(default=None, description="Sparkplug B edge node; off when absent")
    models: ModelStoreSettings | None = Field(default=None, description="shipped model bundles (issue 17); off when "
                                                                        "absent")
    alarms: AlarmSettings = Field(default=AlarmSettings(), description="alarm management: incidents (edge/alarms)")
    console: ConsoleSettings | None = Field(default=None, description="local web console; off when absent")
    agents: AgentsSettings = Field(default_factory=AgentsSettings, description="edge agents (edge/agents)")
    actions: ActionsSettings = Field(default_factory=ActionsSettings,
                                     description="allow-listed writes (docs/actions.md)")


def load_edge(path: Path) -> tuple[EdgeConfig, PlantConfig]:
    """Load an edge config and the plant file it references (relative to the config's folder)."""
    cfg = validate(EdgeConfig, read_yaml(path), str(path))
    plant_path = cfg.plant if cfg.plant.is_absolute() else path.parent / cfg.plant
    try:
        from plantwire.configfile import load_plant

        plant = load_plant(plant_path)
    except ConfigError as exc:
        raise ConfigError(str(path), [f"plant: {e}" for e in exc.report().splitlines()]) from None
    if cfg.actions.targets:  # each target's device must be in the plant, with the protocol its address implies
        from plantwire.plant import expand

        if errors := check_targets(cfg.actions, expand(plant)):
            raise ConfigError(str(path), errors)
    state_dir = cfg.state_dir if cfg.state_dir.is_absolute() else path.parent / cfg.state_dir
    cfg = cfg.model_copy(update={"plant": plant_path, "state_dir": state_dir})
    sec = cfg.opcua.security
    # Generated identity (certificate, key) lives with the state; what the operator supplies
    # (pinned server certificate, credentials file) is beside the config.
    sec_rel = {
        k: (state_dir if k in ("certificate", "private_key") else path.parent) / v
        for k in ("certificate", "private_key", "server_certificate", "credentials_file")
        if (v := getattr(sec, k)) is not None and not v.is_absolute()
    }
    if sec_rel:
        opcua = cfg.opcua.model_copy(update={"security": sec.model_copy(update=sec_rel)})
        cfg = cfg.model_copy(update={"opcua": opcua})
    if (tls := cfg.mqtt.tls) is not None:
        rel = {
            k: path.parent / v
            for k in ("ca_file", "cert_file", "key_file")
            if (v := getattr(tls, k)) is not None and not v.is_absolute()
        }
        mqtt = cfg.mqtt.model_copy(update={"tls": tls.model_copy(update=rel)})
        cfg = cfg.model_copy(update={"mqtt": mqtt})
    if cfg.models is not None and not cfg.models.public_key_file.is_absolute():
        models = cfg.models.model_copy(update={"public_key_file": path.parent / cfg.models.public_key_file})
        cfg = cfg.model_copy(update={"models": models})
    if (ctls := cfg.console.tls if cfg.console is not None else None) is not None:
        rel = {k: path.parent / v for k in ("cert_file", "key_file") if not (v := getattr(ctls, k)).is_absolute()}
        console = cfg.console.model_copy(update={"tls": ctls.model_copy(update=rel)})  # type: ignore[union-attr]
        cfg = cfg.model_copy(update={"console": console})
    return cfg, plant
