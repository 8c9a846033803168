"""asyncua servers for in-process tests that start in a fraction of a second instead of seconds.

Why: every ``asyncua.Server.init()`` builds the OPC-UA standard address space (~6,200 nodes) from
generated code: ~1.5 s of CPU on a quiet 2-core box and 10-17 s when the box is loaded (measured
2026-12-03), and the OPC-UA source tests start a fresh server per test (~25 starts). asyncua's own
remedy for slow devices is a shelf (``AddressSpace.load_aspace_shelf``: standard nodes unpickled on
first access); here the same lazy loading reads from one pristine copy built once per test process.
Each server gets private copies of the nodes it touches (a pickle round trip on first access), so no
server state is shared between servers or tests: a test still gets a brand-new server.

The server's clock task is also switched off: ``Server.stop()`` otherwise waits up to 1 s for its
once-a-second ``ServerStatus.CurrentTime`` write, and nothing under test reads that clock.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Iterator, MutableMapping
from typing import Any

from asyncua import Server
from asyncua.server.address_space import NodeData
from asyncua.server.internal_server import InternalServer
from asyncua.server.standard_address_space import standard_address_space

__all__ = ["fast_init"]


@functools.cache
def _standard_nodes() -> dict[Any, NodeData]:
    """The standard address space, built once per process and never handed to a server itself."""
    template = InternalServer()
    standard_address_space.fill_address_space(template.node_mgt_service)
    nodes = dict(template.aspace._nodes)
    assert all(n.call is None for n in nodes.values())  # nothing unpicklable (method callbacks come later)
    return nodes


class _CopyOnAccess(MutableMapping[Any, NodeData]):
    """A server's node table: standard nodes copied from the template when first read, own nodes kept.

    Iteration covers the nodes touched so far, as with asyncua's shelf-backed table.
    """

    def __init__(self, template: dict[Any, NodeData]) -> None:
        self._template = template
        self._own: dict[Any, NodeData] = {}

    def __getitem__(self, key: Any) -> NodeData:
        try:
            return self._own[key]
        except KeyError:
            node = self._own[key] = pickle.loads(pickle.dumps(self._template[key], pickle.HIGHEST_PROTOCOL))
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


async def fast_init(server: Server) -> None:
    """``await server.init()`` with the standard address space copied on access, and no clock task."""
    iserver = server.iserver

    async def load_standard_address_space(shelf_file: Any = None) -> None:
        iserver.aspace._nodes = _CopyOnAccess(_standard_nodes())

    iserver.load_standard_address_space = load_standard_address_space  # type: ignore[method-assign]
    await server.init()
    server.disable_clock()
