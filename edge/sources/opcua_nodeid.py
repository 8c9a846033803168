"""Plant node ids (plantwire.nodeid text) -> asyncua NodeIds, with the server's namespace table.

Namespace indices are the server's to assign and may change when it is reconfigured or updated;
URIs do not. So namespaces are resolved at every connect, never cached across sessions:

- ``nsu=<uri>;...`` -> the index of ``uri`` in the server's NamespaceArray.
- ``ns=<k>;...`` on a device that lists ``namespaces`` (as ``plantwire discover`` writes them) ->
  the URI ``namespaces[k]``, then its index on the server now. A server that renumbered is still
  read right; one that lost the URI is a setup error naming it.
- ``ns=<k>;...`` on a device without ``namespaces`` -> index ``k`` as written.

Parsing happens once at start-up (``parse_nodes``); ``resolve`` is a dictionary walk per connect.
"""

from __future__ import annotations

from asyncua import ua

from plantwire.nodeid import NodeRef, parse_node_id
from plantwire.plant import Device

__all__ = ["NamespaceError", "parse_nodes", "resolve"]


class NamespaceError(Exception):
    """A namespace the plant names is not on the server; the message lists what is."""


def parse_nodes(texts: dict[int, str]) -> dict[int, NodeRef]:
    """Row -> parsed node id; the plant validated the text already, so a ValueError here is a bug."""
    return {row: parse_node_id(text) for row, text in texts.items()}


def resolve(refs: dict[int, NodeRef], server_namespaces: list[str], device: Device) -> dict[int, ua.NodeId]:
    """Row -> asyncua NodeId with the server's current namespace indices; NamespaceError when one is missing."""
    index_of = {uri: i for i, uri in enumerate(server_namespaces)}
    missing: set[str] = set()
    out: dict[int, ua.NodeId] = {}
    for row, ref in refs.items():
        ns: int | None
        uri = ref.namespace_uri
        if uri is None and device.namespaces and ref.namespace_index is not None:
            uri = device.namespaces[ref.namespace_index]
        if uri is not None:
            ns = index_of.get(uri)
            if ns is None:
                missing.add(uri)
                continue
        else:
            ns = ref.namespace_index or 0
        out[row] = ua.NodeId(ref.identifier, ns)
    if missing:
        names = ", ".join(repr(u) for u in sorted(missing))
        raise NamespaceError(f"namespace {names} is not on the server (it has {server_namespaces})")
    return out
