"""The incident engine's checkpoint: one JSON file in the state directory, written atomically.

JSON, not .npz: the state is a few dozen incidents with strings (ids, signal names, reasons), not arrays.
Written after every flush that changed something and *before* that flush's documents are handed to the
write-ahead log, with those documents as its ``outbox``: a kill between the two re-sends them at the next
start (identical ``id`` and ``seq``: the cloud stores a replay as the same point), so a transition is never
lost and a ``seq`` is never reused for a different document. Atomic like the detectors' checkpoints
(temporary file, fsync, rename, fsync of the folder).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge.statefile import write_atomically

FILE = "incidents.json"


class StoreError(Exception):
    """A checkpoint that cannot be used (missing, unreadable, another layout or plant)."""


def save(state_dir: Path, state: dict[str, Any], outbox: list[dict[str, Any]]) -> None:
    path = Path(state_dir) / FILE
    data = json.dumps({**state, "outbox": outbox}, separators=(",", ":")).encode()
    write_atomically(path, lambda f: f.write(data))


def load(state_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(engine state, documents not known to have reached the write-ahead log)."""
    path = Path(state_dir) / FILE
    try:
        d = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise StoreError(f"{path}: no incident checkpoint") from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: unreadable ({exc})") from None
    if not isinstance(d, dict):
        raise StoreError(f"{path}: not an incident checkpoint")
    outbox = d.pop("outbox", [])
    return d, outbox if isinstance(outbox, list) else []
