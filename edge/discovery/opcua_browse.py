"""Browse an OPC-UA server into the variables a plant file can name.

What is collected, and why:
- The walk starts at the Objects folder (or ``root``) and follows hierarchical references forward
  (Organizes, HasComponent, ...: what a server's browser shows as the tree). Objects in namespace 0
  (Server, Aliases, Locations: the server's own bookkeeping) are not entered. Variables are
  browsed too: their HasProperty children carry ``EngineeringUnits`` and ``EURange``, and their
  component variables (members of a structure, e.g. a Siemens DB's struct) are signals as well.
  Properties themselves are not signals.
- Browse and Read requests never carry more nodes than the server's MaxNodesPerBrowse and
  MaxNodesPerRead (read first; 0 or unreadable means "no limit" and ``default_chunk`` is used),
  and browse continuation points are followed, so a large server is walked in full.
- For each variable: DataType and ValueRank. Only scalars of a numeric or Boolean built-in type
  (or Duration) can become a float sample; the others are counted in ``skipped`` by reason, so the
  engineer sees what was left out and why.

Failures raise DiscoveryError with one sentence: unreachable, timed out, refused (security,
identity), with what to do.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from asyncua import Client, ua

from edge.config import OpcuaSecurity
from edge.sources.opcua_security import SecurityConfigError, apply_security
from plantwire.nodeid import IdType, NodeRef, parse_node_id

from .errors import DiscoveryError

__all__ = ["BrowseResult", "FoundVariable", "Progress", "browse_server", "node_text"]

#: Numeric and Boolean built-in types (ns=0 DataType ids) -> the plant's type names.
DATA_TYPES: dict[int, str] = {
    1: "bool", 2: "int16", 3: "uint16", 4: "int16", 5: "uint16", 6: "int32", 7: "uint32", 8: "int64",
    9: "int64", 10: "float32", 11: "float64", 290: "float64",
}
#: The server's names for them, for the report.
DATA_TYPE_NAMES: dict[int, str] = {
    1: "Boolean", 2: "SByte", 3: "Byte", 4: "Int16", 5: "UInt16", 6: "Int32", 7: "UInt32", 8: "Int64",
    9: "UInt64", 10: "Float", 11: "Double", 290: "Duration",
}
_HAS_PROPERTY = ua.NodeId(ua.ObjectIds.HasProperty)
_LIMITS = {
    "max_nodes_per_browse": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse,
    "max_nodes_per_read": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
}
_ID_TYPE = {
    ua.NodeIdType.TwoByte: IdType.NUMERIC, ua.NodeIdType.FourByte: IdType.NUMERIC,
    ua.NodeIdType.Numeric: IdType.NUMERIC, ua.NodeIdType.String: IdType.STRING, ua.NodeIdType.Guid: IdType.GUID,
    ua.NodeIdType.ByteString: IdType.OPAQUE,
}

Progress = Callable[[int, int], None]  # (nodes browsed, variables found)


@dataclass(slots=True)
class FoundVariable:
    """One variable that can be a signal: where it sits, its node, type, unit and range."""

    path: tuple[str, ...]  # browse names from below the root down to the parent
    name: str  # browse name
    node: ua.NodeId
    data_type: str = ""  # plant type name (DATA_TYPES)
    unit: str = ""
    low: float | None = None
    high: float | None = None
    _eu_node: ua.NodeId | None = None
    _range_node: ua.NodeId | None = None


@dataclass(slots=True)
class BrowseResult:
    namespaces: list[str]
    limits: dict[str, int]
    variables: list[FoundVariable] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    nodes_browsed: int = 0
    requests: int = 0  # Browse/BrowseNext/Read calls made (what the limits shaped)


def node_text(node: ua.NodeId) -> str:
    """The plant's text form of a server node id (``ns=<server index>;...``)."""
    return NodeRef(_ID_TYPE[node.NodeIdType], node.Identifier, node.NamespaceIndex).text()


async def browse_server(url: str, security: OpcuaSecurity, *, timeout_s: float = 10.0, root: str | None = None,
                        default_chunk: int = 500, progress: Progress | None = None) -> BrowseResult:
    """Connect, browse and read everything a plant file needs; DiscoveryError on any failure."""
    # asyncua's connection watchdog probes the server with a read that times out after watchdog_intervall,
    # queued behind our (large) Browse/Read requests: at its 1 s default a busy server looks dead.
    client = Client(url, timeout=timeout_s, watchdog_intervall=timeout_s)
    client.application_uri = security.application_uri
    client.name = client.description = "plantwire discover"
    try:
        await apply_security(client, security, timeout_s)
        async with asyncio.timeout(timeout_s * 2 + 1):
            await client.connect()
    except SecurityConfigError as exc:
        raise DiscoveryError(str(exc)) from None
    except Exception as exc:
        raise DiscoveryError(_connect_failure(url, security, exc, timeout_s)) from None
    try:
        return await _Walker(client, default_chunk, progress).run(root)
    except DiscoveryError:
        raise
    except TimeoutError:
        raise DiscoveryError(f"{url}: the server stopped answering within {timeout_s:g} s while browsing "
                             "(raise --timeout-s for a slow server)") from None
    except ua.UaStatusCodeError as exc:
        raise DiscoveryError(f"{url}: the server refused a request while browsing: {type(exc).__name__}") from None
    except (OSError, ConnectionError) as exc:
        raise DiscoveryError(f"{url}: connection lost while browsing ({exc or type(exc).__name__})") from None
    finally:
        try:
            async with asyncio.timeout(min(timeout_s, 5.0)):
                await client.disconnect()
        except Exception:  # a dead server cannot take part in closing; drop the socket
            client.disconnect_socket()


def _connect_failure(url: str, security: OpcuaSecurity, exc: BaseException, timeout_s: float) -> str:
    """One sentence for a failed connect, with what to do."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    name = type(exc).__name__
    if isinstance(exc, TimeoutError):
        return (f"{url}: no OPC-UA answer within {timeout_s:g} s (is the host reachable, the port an OPC-UA "
                "server's, the server not overloaded? --timeout-s waits longer)")
    if isinstance(exc, ConnectionRefusedError):
        return f"{url}: connection refused (no OPC-UA server listens on that port)"
    if isinstance(exc, OSError):
        return f"{url}: cannot connect: {exc.strerror or exc}"
    if name.startswith("BadCertificate") or name in ("BadSecurityChecksFailed", "BadSecurityPolicyRejected") or (
            isinstance(exc, AssertionError) and security.certificate is not None):
        # asyncua reports an untrusted client certificate as a bare AssertionError (MEASURED trap 15).
        return (f"{url}: the server refused our certificate {security.certificate} ({name}): add it to the "
                "server's trusted certificates (most servers list it under rejected certificates) and run again")
    if name in ("BadUserAccessDenied", "BadIdentityTokenRejected", "BadIdentityTokenInvalid"):
        return f"{url}: the server refused the user ({name}): check the user name and password"
    if isinstance(exc, ua.UaError) and "security" in str(exc).lower():
        return f"{url}: {exc} (choose --security-mode to match an endpoint the server offers)"
    return f"{url}: cannot connect: {name}: {exc}" if str(exc) else f"{url}: cannot connect: {name}"


class _Walker:
    """One walk of one server: chunked Browse/BrowseNext, then chunked Reads."""

    def __init__(self, client: Client, default_chunk: int, progress: Progress | None) -> None:
        self.client = client
        self.default_chunk = default_chunk
        self.progress = progress
        self.result = BrowseResult(namespaces=[], limits={})
        self._last_progress = 0.0

    async def run(self, root: str | None) -> BrowseResult:
        r = self.result
        r.namespaces = await self.client.get_namespace_array()
        r.limits = await self._read_limits()
        start = self._root(root) if root else ua.NodeId(ua.ObjectIds.ObjectsFolder)
        await self._walk(start)
        await self._read_attributes()
        self._report(force=True)
        return r

    def _root(self, text: str) -> ua.NodeId:
        try:
            ref = parse_node_id(text)
        except ValueError as exc:
            raise DiscoveryError(f"--root: {exc}") from None
        ns = ref.namespace_index or 0
        if ref.namespace_uri is not None:
            if ref.namespace_uri not in self.result.namespaces:
                raise DiscoveryError(f"--root {text}: namespace {ref.namespace_uri!r} is not on the server "
                                     f"(it has {self.result.namespaces})")
            ns = self.result.namespaces.index(ref.namespace_uri)
        return ua.NodeId(ref.identifier, ns)

    def _chunk(self, limit: str) -> int:
        server = self.result.limits.get(limit, 0)
        return server if server > 0 else self.default_chunk

    def _report(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.progress is not None and (force or now - self._last_progress >= 1.0):
            self._last_progress = now
            self.progress(self.result.nodes_browsed, len(self.result.variables))

    async def _read_limits(self) -> dict[str, int]:
        values = await self._read([ua.NodeId(i) for i in _LIMITS.values()], ua.AttributeIds.Value, chunk=2)
        out = {}
        for name, dv in zip(_LIMITS, values, strict=True):
            v = dv.Value.Value if dv.StatusCode is not None and dv.StatusCode.is_good() and dv.Value else 0
            out[name] = int(v) if isinstance(v, int) and v > 0 else 0
        return out

    async def _walk(self, start: ua.NodeId) -> None:
        # (node, path below the root, FoundVariable when the node is a variable)
        queue: deque[tuple[ua.NodeId, tuple[str, ...], FoundVariable | None]] = deque([(start, (), None)])
        seen = {start}
        per_call = self._chunk("max_nodes_per_browse")
        while queue:
            batch = [queue.popleft() for _ in range(min(per_call, len(queue)))]
            for (node, path, var), (status, refs) in zip(batch, await self._browse([n for n, _, _ in batch]),
                                                         strict=True):
                self.result.nodes_browsed += 1
                if status is not None:
                    if node == start:
                        raise DiscoveryError(f"the server refuses to browse the root {node_text(node)}: {status}")
                    reason = f"browse refused ({status})"
                    self.result.skipped[reason] = self.result.skipped.get(reason, 0) + 1
                for ref in refs:
                    target = ref.NodeId
                    if getattr(target, "ServerIndex", 0) or target in seen:
                        continue
                    seen.add(target)
                    name = ref.BrowseName.Name or str(target.Identifier)
                    if ref.NodeClass == ua.NodeClass.Object:
                        if target.NamespaceIndex != 0:
                            queue.append((target, (*path, name), None))
                    elif ref.NodeClass == ua.NodeClass.Variable:
                        if ref.ReferenceTypeId == _HAS_PROPERTY:
                            if var is not None and name == "EngineeringUnits":
                                var._eu_node = target
                            elif var is not None and name == "EURange":
                                var._range_node = target
                            continue
                        child_path = (*path, var.name) if var is not None else path
                        found = FoundVariable(path=child_path, name=name, node=target)
                        self.result.variables.append(found)
                        queue.append((target, child_path, found))
            self._report()

    async def _browse(self, nodes: list[ua.NodeId]) -> list[tuple[str | None, list[ua.ReferenceDescription]]]:
        """Per node: (the status name when the server refused to browse it, else None; its references)."""
        params = ua.BrowseParameters()
        params.NodesToBrowse = [ua.BrowseDescription(
            NodeId=n, BrowseDirection=ua.BrowseDirection.Forward,
            ReferenceTypeId=ua.NodeId(ua.ObjectIds.HierarchicalReferences), IncludeSubtypes=True,
            NodeClassMask=int(ua.NodeClass.Object) | int(ua.NodeClass.Variable),
            ResultMask=int(ua.BrowseResultMask.All),
        ) for n in nodes]
        self.result.requests += 1
        results = await self.client.uaclient.browse(params)
        refs = [list(r.References or []) for r in results]
        statuses = [None if r.StatusCode is None or r.StatusCode.is_good() else r.StatusCode.name for r in results]
        pending = {i: r.ContinuationPoint for i, r in enumerate(results) if r.ContinuationPoint}
        while pending:
            idx = list(pending)
            nxt = ua.BrowseNextParameters()
            nxt.ReleaseContinuationPoints = False
            nxt.ContinuationPoints = [pending[i] for i in idx]
            self.result.requests += 1
            more = await self.client.uaclient.browse_next(nxt)
            pending = {}
            for i, r in zip(idx, more, strict=True):
                refs[i].extend(r.References or [])
                if r.ContinuationPoint:
                    pending[i] = r.ContinuationPoint
        return list(zip(statuses, refs, strict=True))

    async def _read(self, nodes: list[ua.NodeId], attribute: ua.AttributeIds, chunk: int | None = None
                    ) -> list[ua.DataValue]:
        per_call = chunk or self._chunk("max_nodes_per_read")
        out: list[ua.DataValue] = []
        for a in range(0, len(nodes), per_call):
            params = ua.ReadParameters()
            params.NodesToRead = [ua.ReadValueId(NodeId=n, AttributeId=attribute) for n in nodes[a:a + per_call]]
            self.result.requests += 1
            out.extend(await self.client.uaclient.read(params))
        return out

    async def _read_attributes(self) -> None:
        found = self.result.variables
        types = await self._read([v.node for v in found], ua.AttributeIds.DataType)
        ranks = await self._read([v.node for v in found], ua.AttributeIds.ValueRank)
        keep: list[FoundVariable] = []
        for v, dt, rank in zip(found, types, ranks, strict=True):
            type_id = dt.Value.Value if dt.StatusCode is not None and dt.StatusCode.is_good() and dt.Value else None
            value_rank = rank.Value.Value if rank.Value is not None else -1
            numeric = (isinstance(type_id, ua.NodeId) and type_id.NamespaceIndex == 0
                       and type_id.Identifier in DATA_TYPES)
            if not numeric:
                reason = "data type not a number or boolean"
            elif isinstance(value_rank, int) and value_rank >= 0:
                reason = "array value"
            else:
                v.data_type = DATA_TYPES[int(type_id.Identifier)]
                keep.append(v)
                continue
            self.result.skipped[reason] = self.result.skipped.get(reason, 0) + 1
        self.result.variables = keep
        eu = [v for v in keep if v._eu_node is not None]
        for v, dv in zip(eu, await self._read([v._eu_node for v in eu if v._eu_node], ua.AttributeIds.Value),
                         strict=True):
            info = dv.Value.Value if dv.Value is not None else None
            if isinstance(info, ua.EUInformation):
                v.unit = info.DisplayName.Text or ""
        ranged = [v for v in keep if v._range_node is not None]
        for v, dv in zip(ranged, await self._read([v._range_node for v in ranged if v._range_node],
                                                  ua.AttributeIds.Value), strict=True):
            rng = dv.Value.Value if dv.Value is not None else None
            if isinstance(rng, ua.Range) and rng.Low is not None and rng.High is not None and rng.Low < rng.High:
                v.low, v.high = float(rng.Low), float(rng.High)
