"""Verified bundles and each slot's versions in the state directory, so a restart resumes them.

Layout: ``models/<kind>/<template>/<version>.pwbundle`` (the bundle's bytes as received: re-verified
when loaded, so a file altered on disk is refused like one altered in transit) and ``models/slots.json``
(per ``kind/template``: active, previous, shadow, and versions rolled back, which are not taken again
when the broker re-delivers them). Writes are atomic (temporary file, then rename). Files no slot
refers to are removed, so the directory holds at most three bundles per slot.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edge.modelstore.reasons import BundleRefused, Refusal
from edge.statefile import write_atomically

SLOTS_FILE = "slots.json"
RETIRED_KEPT = 50
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")


@dataclass
class SlotState:
    active: str | None = None
    previous: str | None = None
    shadow: str | None = None
    retired: list[str] = field(default_factory=list)

    def doc(self) -> dict[str, str | None]:
        return {"active": self.active, "shadow": self.shadow, "previous": self.previous}


def check_name(kind: str, template: str, version: str) -> None:
    """Names become path parts: refuse anything that could leave the store."""
    for what, v in (("kind", kind), ("template", template), ("version", version)):
        if not _SAFE.match(v):
            raise BundleRefused(Refusal.BAD_MANIFEST, f"manifest.{what} {v[:40]!r} is not a safe name "
                                                      f"(letters, digits, . _ : + -)")


class BundleStore:
    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / "models"
        self.slots: dict[str, SlotState] = {}

    def path(self, kind: str, template: str, version: str) -> Path:
        return self.root / kind / template / f"{version}.pwbundle"

    def load_slots(self) -> list[str]:
        """Read ``slots.json``; returns problems (an unreadable file starts empty, it never stops the edge)."""
        p = self.root / SLOTS_FILE
        try:
            doc = json.loads(p.read_text())
            self.slots = {k: SlotState(v.get("active"), v.get("previous"), v.get("shadow"),
                                       list(v.get("retired", []))) for k, v in doc.items()}
        except FileNotFoundError:
            return []
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            self.slots = {}
            return [f"{p}: unreadable ({exc}); no stored model is resumed"]
        return []

    def slot(self, key: str) -> SlotState:
        return self.slots.setdefault(key, SlotState())

    def save_bundle(self, kind: str, template: str, version: str, data: bytes) -> Path:
        p = self.path(kind, template, version)
        p.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(p, data)
        return p

    def read_bundle(self, kind: str, template: str, version: str) -> bytes:
        return self.path(kind, template, version).read_bytes()

    def save_slots(self, keep: dict[str, set[str]] | None = None) -> None:
        """Persist the slot table and remove bundle files no slot (or ``keep``) refers to."""
        self.root.mkdir(parents=True, exist_ok=True)
        for st in self.slots.values():
            del st.retired[:-RETIRED_KEPT]
        _atomic_write(self.root / SLOTS_FILE, json.dumps({k: asdict(v) for k, v in self.slots.items()},
                                                         indent=1).encode())
        for key, st in self.slots.items():
            kind, _, template = key.partition("/")
            folder = self.root / kind / template
            wanted = {st.active, st.previous, st.shadow} | (keep or {}).get(key, set())
            for f in folder.glob("*.pwbundle") if folder.is_dir() else []:
                if f.stem not in wanted:
                    f.unlink(missing_ok=True)


def _atomic_write(path: Path, data: bytes) -> None:
    write_atomically(path, lambda f: f.write(data))
