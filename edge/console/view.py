"""What the daemon hands the console (:class:`GatewayFeed`) and the snapshots the pages are built from.

The console reads the daemon through the same snapshot the metrics use (the metrics registry and the
health document), plus the signal tap; it never reaches into sources or the write-ahead log.
:func:`overview_snapshot` and the hook calls run on the daemon's event loop (handed over by the
server, time-bounded), so they copy plain numbers and never race the loop that writes them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.console.hooks import ConsoleHooks, DetectorAlarmBoard
from edge.console.tap import SignalTap
from plantwire.metrics import Registry
from plantwire.plant import SignalTable

__all__ = ["GatewayFeed", "overview_snapshot", "redact"]

#: Per-source metric families shown on the overview (name without prefix -> column).
_SOURCE_FAMILIES = {
    "source_connected": "connected",
    "source_samples_good_total": "good",
    "source_samples_bad_total": "bad",
    "source_errors_total": "errors",
    "source_last_good_poll_age_seconds": "last_good_poll_age_s",
    "source_last_sample_age_seconds": "last_sample_age_s",
    "source_signals_bad": "signals_bad",
    "source_breaker_open": "breaker_open",
    "source_reconnects_total": "reconnects",
}
_SECRET_KEY = re.compile(r"(password|secret|token|passphrase)$", re.IGNORECASE)


@dataclass
class GatewayFeed:
    gateway_id: str
    site: str
    table: SignalTable
    tap: SignalTap
    registry: Registry
    health: Callable[[], dict[str, Any]]
    running_config: dict[str, Any]
    config_dir: Path
    state_dir: Path
    emit_events: Callable[[list[dict[str, Any]]], None]  # onto the events lane (WAL-backed)
    hooks: ConsoleHooks
    detector_alarms: DetectorAlarmBoard

    @property
    def alarms(self) -> Any:
        return self.hooks.alarms if self.hooks.alarms is not None else self.detector_alarms


def redact(doc: Any) -> Any:
    """The config with anything that looks like a secret's value replaced (names of variables and
    credentials stay: they say where a secret is, not what it is)."""
    if isinstance(doc, dict):
        return {k: ("•••" if isinstance(k, str) and _SECRET_KEY.search(k) and v not in (None, "") else redact(v))
                for k, v in doc.items()}
    if isinstance(doc, list):
        return [redact(v) for v in doc]
    return doc


def overview_snapshot(feed: GatewayFeed) -> dict[str, Any]:
    """Sources, write-ahead log, cloud acknowledgement, drops, models and agents (daemon loop only)."""
    reg = feed.registry
    sources: dict[str, dict[str, float]] = {}
    for family, column in _SOURCE_FAMILIES.items():
        for labels, value in reg.values(family).items():
            name = dict(labels).get("source")
            if name is not None:
                sources.setdefault(name, {})[column] = value

    def one(name: str) -> float | None:
        vals = reg.values(name)
        return vals.get((), None) if vals else None

    health = feed.health()
    hooks = feed.hooks
    return {
        "gateway": feed.gateway_id,
        "site": feed.site,
        "condition": health.get("status"),
        "degraded": health.get("degraded", []),
        "sources_degraded": health.get("sources_degraded", {}),
        "mqtt_connected": health.get("mqtt_connected"),
        "signals": len(feed.table),
        "sources": sources,
        "samples_read": one("samples_read_total"),
        "samples_acked": one("samples_acked_total"),
        "samples_unacked": one("samples_unacked"),
        "wal_records": one("spool_wal_records"),
        "wal_bytes": one("spool_wal_bytes"),
        "oldest_unacked_age_s": one("spool_oldest_unacked_age_s"),
        "last_cloud_ack_age_s": one("spool_last_ack_age_s"),
        "dropped_samples": one("spool_dropped_samples_total"),
        "events_dropped": one("events_dropped_total"),
        "alarms_opened": one("alarms_opened_total"),
        "anomalies": one("anomalies_total"),
        "models": hooks.models() if hooks.models is not None else None,
        "agents": hooks.agents() if hooks.agents is not None else None,
        "incidents_connected": hooks.alarms is not None,
        "open_alarms": len(feed.alarms.open_alarms()),
    }
