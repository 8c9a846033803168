"""asyncua servers for in-process tests that start in a fraction of a second instead of seconds.

Why: every ``asyncua.Server.init()`` builds the OPC-UA standard address space (~6,200 nodes) from
generated code: ~1.5 s of CPU on a quiet 2-core box and 10-17 s when the box is loaded (measured
2026-12-03), and the OPC-UA source tests start a fresh server per test (~25 starts). The simulator's
remedy (simulators/aspace.py: standard nodes copied out of a cached template on first access) is used
here with the template loaded once per test process, so each test still gets a brand-new server that
shares no state with any other.

The server's clock task is also switched off: ``Server.stop()`` otherwise waits up to 1 s for its
once-a-second ``ServerStatus.CurrentTime`` write, and nothing under test reads that clock.
"""

from __future__ import annotations

import functools
from typing import Any

from asyncua import Server

from simulators.aspace import fast_init as _fast_init
from simulators.aspace import load_standard_nodes

__all__ = ["fast_init"]


@functools.cache
def _template() -> dict[Any, bytes]:
    return load_standard_nodes()


async def fast_init(server: Server) -> None:
    """``await server.init()`` from the cached standard address space, with no clock task."""
    await _fast_init(server, _template())
    server.disable_clock()
