"""What each gateway runs: ``plantwire models status``, from the gateways' retained health documents.

Every gateway keeps a retained document on ``plantwire/v1/{site}/{gateway}/health`` (``status`` online or
offline, ...) with, once it runs the model loop (contracts.md), ``"models"``:
``{"<kind>/<template>": {"active", "shadow", "previous"}}`` and ``"model_refusals_total"``. One subscription
collects them all; a gateway whose document has no ``models`` key runs no shipped model (shown as such).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cloud.models.mqtt import Session

HEALTH_FILTER = "plantwire/v1/+/+/health"


@dataclass(frozen=True)
class SlotVersions:
    slot: str  # kind/template
    active: str | None
    shadow: str | None
    previous: str | None


@dataclass
class GatewayModels:
    site: str
    gateway: str
    online: bool
    refusals: int | None
    slots: list[SlotVersions] = field(default_factory=list)
    problem: str = ""  # an unreadable health document: what was wrong with it


def _str_or_none(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def parse_health(topic: str, payload: bytes) -> GatewayModels | None:
    """The model part of one gateway's health document; None for a cleared (empty) one."""
    parts = topic.split("/")
    if len(parts) != 5 or not payload:
        return None
    site, gateway = parts[2], parts[3]
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        return GatewayModels(site, gateway, False, None, problem=f"health not JSON ({exc})")
    if not isinstance(doc, dict):
        return GatewayModels(site, gateway, False, None, problem="health not a JSON object")
    refusals = doc.get("model_refusals_total")
    out = GatewayModels(site, gateway, doc.get("status") == "online",
                        refusals if isinstance(refusals, int) and not isinstance(refusals, bool) else None)
    models = doc.get("models")
    if isinstance(models, dict):
        for slot in sorted(models):
            v = models[slot]
            if isinstance(v, dict):
                out.slots.append(SlotVersions(str(slot), _str_or_none(v.get("active")), _str_or_none(v.get("shadow")),
                                              _str_or_none(v.get("previous"))))
    elif models is not None:
        out.problem = "health.models is not an object"
    return out


def models_text(doc: dict[str, Any]) -> str | None:
    """The ``models`` key of a health document as one line (the ingestor's ``pipeline.models`` field).

    ``kind/template active=V shadow=V previous=V; ...`` sorted by slot, ``-`` for none; None without the key.
    Bounded: at most 64 slots and 4 KiB, so a malformed document cannot make a huge field.
    """
    models = doc.get("models")
    if not isinstance(models, dict):
        return None
    parts = []
    for slot in sorted(models)[:64]:
        v = models[slot]
        if not isinstance(v, dict):
            continue
        parts.append(f"{slot} " + " ".join(f"{k}={_str_or_none(v.get(k)) or '-'}"
                                           for k in ("active", "shadow", "previous")))
    return "; ".join(parts)[:4096]


def collect(session: Session, settle_s: float = 1.0) -> list[GatewayModels]:
    got = session.retained(HEALTH_FILTER, settle_s)
    out = [g for t, p in sorted(got.items()) if (g := parse_health(t, p)) is not None]
    return out


def render(gateways: list[GatewayModels]) -> str:
    """A plain table: one line per gateway and slot."""
    rows = [("site", "gateway", "online", "refused", "slot", "active", "shadow", "previous")]
    for g in gateways:
        ref = "-" if g.refusals is None else str(g.refusals)
        on = "yes" if g.online else "no"
        if not g.slots:
            rows.append((g.site, g.gateway, on, ref, g.problem or "(no shipped model)", "-", "-", "-"))
        for s in g.slots:
            rows.append((g.site, g.gateway, on, ref, s.slot, s.active or "-", s.shadow or "-", s.previous or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
