"""The ``models`` section of the edge config: which key to trust, and when a shadow model is promoted.

Absent (the default), the gateway subscribes to no bundle topics and runs the models its config names.
Why a public key file and not an inline key: it is a credential like the others (TLS files), deployed
with the config; the edge never holds the private key. Relative paths are against the config folder.

Rates are machine alarms opened per machine-hour of shadow (or post-promotion) time, so the bound does
not depend on how many machines a template has. The defaults follow EEMUA 191's order of magnitude
(about one alarm per operator area per 10 minutes on a healthy plant, i.e. well under one per machine
per hour for a model that is any good); they are starting points, chosen a priori, not tuned.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class ModelStoreSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    public_key_file: Path = Field(description="Ed25519 public key of the cloud's model signer (PEM, or 32 raw "
                                              "bytes, or 64 hex characters)")
    max_bundle_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, description="larger heads are refused")
    auto_promote_after_s: float | None = Field(
        default=3600.0, gt=0, description="promote a shadow model after this long in shadow if its alarm rate is "
                                          "within auto_promote_max_rate; unset: promotion by command only")
    auto_promote_max_rate: float = Field(default=0.5, ge=0,
                                         description="shadow machine alarms per machine-hour allowed for promotion")
    watch_s: float = Field(default=1800.0, ge=0,
                           description="after a promotion, this long the new model's alarm rate is watched")
    rollback_max_rate: float | None = Field(
        default=2.0, ge=0, description="machine alarms per machine-hour during watch_s above which the promotion is "
                                       "rolled back automatically; unset: never automatically")
    min_watch_s: float = Field(default=60.0, ge=0,
                               description="the watch judges a rate only after this long (one early alarm is not a "
                                           "rate)")
    refusals_kept: int = Field(default=10, ge=1, le=1000, description="last refusals shown on the health topic")
