"""The ``console:`` section of the edge config: where the local web console listens and who may log in.

Secure by default: absent, there is no console; present, it listens on 127.0.0.1 only. Listening on any
other address needs TLS and a user table (validated here, at start-up, with the path named), because a
console on the plant network without them would hand every visitor the gateway's view. The user table
never lives in this file: it is a secret read like every other (systemd credential or environment
variable, :func:`plantwire.tls.read_secret`), one user per line ``name role scrypt-hash`` (make a hash
with ``plantwire console passwd``).
"""

from __future__ import annotations

import enum
import ipaddress
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ConsoleSettings", "ConsoleTls", "Role"]


class Role(enum.StrEnum):
    """What a console user may do: look (read_only), or also act on alarms (operator)."""

    READ_ONLY = "read_only"
    OPERATOR = "operator"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConsoleTls(_Strict):
    """The console's server certificate (PEM) and key; relative paths are against the config's folder.
    A key password, if any, comes from a credential or an environment variable, never from this file."""

    cert_file: Path
    key_file: Path
    key_password_credential: str | None = None
    key_password_env: str | None = None


class ConsoleSettings(_Strict):
    host: str = Field(default="127.0.0.1", description="listen address; anything but loopback needs tls and users")
    port: int = Field(default=8108, ge=0, le=65535, description="0 picks a free port (see state_dir/console.port)")
    tls: ConsoleTls | None = None
    users_credential: str | None = Field(default=None, description="systemd credential holding the user table")
    users_env: str | None = Field(default=None, description="environment variable holding the user table")
    loopback_role: Role = Field(
        default=Role.READ_ONLY, description="role of a visitor on a loopback console without a user table")
    session_ttl_s: float = Field(default=8 * 3600.0, gt=0, description="a session ends this long after login")
    session_idle_s: float = Field(default=1800.0, gt=0, description="... or after this long without a request")
    max_sessions: int = Field(default=64, ge=1)
    max_clients: int = Field(default=16, ge=1, description="live-value streams at once (browser tabs)")
    stream_interval_s: float = Field(default=1.0, ge=0.1, le=60)
    stream_write_timeout_s: float = Field(default=5.0, gt=0, description="a tab that reads slower is dropped")
    handler_timeout_s: float = Field(default=10.0, gt=0, description="longest a page or action may take")
    max_request_bytes: int = Field(default=1 << 20, ge=1024, description="larger requests are refused (413)")
    sparkline_points: int = Field(default=180, ge=8, le=3600, description="flushes kept per signal while watched")
    watch_linger_s: float = Field(default=60.0, ge=0, description="sparkline ring kept this long after the last "
                                                                    "viewer leaves")

    @property
    def users_configured(self) -> bool:
        return self.users_credential is not None or self.users_env is not None

    @model_validator(mode="after")
    def _exposed_needs_tls_and_login(self) -> ConsoleSettings:
        try:
            loopback = ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            loopback = self.host == "localhost"
        if not loopback:
            missing = [w for w, ok in (("tls", self.tls is not None), ("users_credential or users_env",
                                                                       self.users_configured)) if not ok]
            if missing:
                raise ValueError(f"host {self.host!r} exposes the console beyond this machine: it needs "
                                 + " and ".join(missing))
        return self
