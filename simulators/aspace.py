"""Start an asyncua server without rebuilding the OPC-UA standard address space every time.

Why: ``asyncua.Server.init()`` builds the standard address space (~6,200 nodes) from generated code:
~1.5 s of CPU per server start on a quiet 2-core box and 10-17 s on a loaded one (2026-12-03). Each
simulated OPC-UA device is a process of its own, a ``restart`` fault starts it again, and the tests
start a simulator or a test server dozens of times. asyncua's remedy for slow devices is a shelf
(``AddressSpace.load_aspace_shelf``: standard nodes unpickled on first access); its dbm file needs a
dbm module this Python may lack (Debian's has only ``dbm.dumb``, which asyncua does not recognise), so
this module keeps the same lazy scheme over a plain pickle: every standard node pickled on its own,
the lot in one cache file per asyncua version (``$XDG_CACHE_HOME/plantwire``, else
``~/.cache/plantwire``; written atomically by whichever process misses it first, rebuilt when it
cannot be read). A server copies a standard node out of the template when it first touches it, so
servers share nothing: each is a brand-new server, as before.

The server's clock task stays on here (clients may read ServerStatus.CurrentTime); the tests that do
not need it switch it off (``tests/asyncua_fast.py``).
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
from collections.abc import Iterator, MutableMapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

from asyncua import Server
from asyncua.server.address_space import NodeData
from asyncua.server.internal_server import InternalServer
from asyncua.server.standard_address_space import standard_address_space

__all__ = ["build_standard_nodes", "cache_path", "fast_init", "load_standard_nodes"]

log = logging.getLogger(__name__)


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "plantwire" / f"asyncua-{version('asyncua')}-standard-nodes.pickle"


def build_standard_nodes() -> dict[Any, bytes]:
    """The standard address space, each node pickled on its own (built on a server that never runs)."""
    template = InternalServer()
    standard_address_space.fill_address_space(template.node_mgt_service)
    nodes = template.aspace._nodes
    if any(n.call is not None for n in nodes.values()):
        raise RuntimeError("asyncua's standard address space holds method callbacks: it cannot be cached")
    return {nid: pickle.dumps(node, pickle.HIGHEST_PROTOCOL) for nid, node in nodes.items()}


def load_standard_nodes(path: Path | None = None) -> dict[Any, bytes]:
    """The cached template, built and written first when the cache is missing or unreadable."""
    path = path or cache_path()
    try:
        with path.open("rb") as f:
            nodes = pickle.load(f)
        if isinstance(nodes, dict) and nodes:
            return nodes
    except FileNotFoundError:
        pass
    except Exception as exc:  # a torn or foreign file: rebuild it, and say so
        log.warning("asyncua address-space cache %s unreadable (%s); rebuilding it", path, exc)
    nodes = build_standard_nodes()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            pickle.dump(nodes, f, pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only home: the server still starts, only slower next time
        log.warning("asyncua address-space cache %s not written: %s", path, exc)
    return nodes


class CopyOnAccess(MutableMapping[Any, NodeData]):
    """One server's node table: standard nodes unpickled from the template when first read, own nodes kept.

    Iteration covers the nodes touched so far, as with asyncua's shelf-backed table.
    """

    def __init__(self, template: dict[Any, bytes]) -> None:
        self._template = template
        self._own: dict[Any, NodeData] = {}

    def __getitem__(self, key: Any) -> NodeData:
        try:
            return self._own[key]
        except KeyError:
            node = self._own[key] = pickle.loads(self._template[key])
            return node

    def __setitem__(self, key: Any, value: NodeData) -> None:
        self._own[key] = value

    def __delitem__(self, key: Any) -> None:
        del self._own[key]

    def __contains__(self, key: object) -> bool:
        return key in self._own or key in self._template

    def __iter__(self) -> Iterator[Any]:
        return iter(self._own)

    def __len__(self) -> int:
        return len(self._own)


async def fast_init(server: Server, template: dict[Any, bytes] | None = None) -> None:
    """``await server.init()`` with the standard address space copied on access from ``template``
    (default: the cache file's)."""
    iserver = server.iserver
    nodes = template if template is not None else load_standard_nodes()

    async def load_standard_address_space(shelf_file: Any = None) -> None:
        iserver.aspace._nodes = CopyOnAccess(nodes)

    iserver.load_standard_address_space = load_standard_address_space  # type: ignore[method-assign]
    await server.init()
