"""OPC-UA node ids as a plant file writes them: every standard string form, parsed without asyncua.

Real servers name their variables in all four identifier types, and an engineer copies the id from
the server's browser (UaExpert, TIA Portal, the server's own docs) into ``node:``. So the plant
accepts exactly the text forms of OPC 10000-6 section 5.3.1.10, nothing home-made:

==========================  ================================================================
form                        example
==========================  ================================================================
numeric                     ``ns=3;i=1001`` (``i=2258`` alone is namespace 0)
string                      ``ns=2;s=Line1.Press07.OilTemp``; everything after ``s=`` is the
                            identifier, quotes and dots included: Siemens S7-1500 ids read
                            ``ns=3;s="DB1"."Temp"``
GUID                        ``ns=2;g=09087e75-8e5e-499b-954f-f2a9603db28a``
opaque (ByteString)         ``ns=2;b=M/RbKBsRVkePCePcx24oRA==`` (base64)
namespace by URI            ``nsu=urn:vendor:plc;s=Temp``: resolved to the server's index at
                            every connect, so a server that renumbers its namespaces is still
                            read right
==========================  ================================================================

``ns=<k>`` is the server's namespace index, unless the device lists ``namespaces`` (as
``plantwire discover`` writes them): then ``k`` indexes that list, and the edge maps the URI to the
server's current index at connect (plantwire.plant, ``DeviceGroup.namespaces``).

This module only parses; turning a :class:`NodeRef` into an asyncua ``NodeId`` with the server's
namespace table is the edge's job (edge/sources/opcua_nodeid.py).
"""

from __future__ import annotations

import base64
import binascii
import enum
import uuid
from dataclasses import dataclass

__all__ = ["IdType", "NodeRef", "parse_node_id"]

_UINT32_MAX = 2**32 - 1


class IdType(enum.StrEnum):
    """The identifier type letter of the text form."""

    NUMERIC = "i"
    STRING = "s"
    GUID = "g"
    OPAQUE = "b"


@dataclass(frozen=True, slots=True)
class NodeRef:
    """A parsed node id: the namespace by index or by URI (exactly one is set), and the identifier."""

    id_type: IdType
    identifier: int | str | uuid.UUID | bytes
    namespace_index: int | None = 0
    namespace_uri: str | None = None

    def text(self) -> str:
        """The canonical text form (what ``parse_node_id`` reads back to an equal NodeRef)."""
        prefix = f"nsu={self.namespace_uri};" if self.namespace_uri is not None else (
            f"ns={self.namespace_index};" if self.namespace_index else "")
        ident = self.identifier
        if isinstance(ident, bytes):
            body = base64.b64encode(ident).decode("ascii")
        else:
            body = str(ident)
        return f"{prefix}{self.id_type.value}={body}"


def parse_node_id(text: str) -> NodeRef:
    """Parse one node id in its standard text form; raises ValueError saying what is wrong."""
    if not isinstance(text, str) or not text:
        raise ValueError("empty node id")
    rest = text
    ns_index: int | None = 0
    ns_uri: str | None = None
    if rest.startswith("nsu="):
        uri, sep, rest = rest[4:].partition(";")
        if not sep or not uri:
            raise ValueError(f"{text!r}: expected nsu=<namespace uri>;<i|s|g|b>=<identifier>")
        ns_index, ns_uri = None, uri
    elif rest.startswith("ns="):
        index, sep, rest = rest[3:].partition(";")
        if not sep or not index.isdigit() or int(index) > 65535:
            raise ValueError(f"{text!r}: expected ns=<index 0..65535>;<i|s|g|b>=<identifier>")
        ns_index = int(index)
    kind, sep, ident = rest.partition("=")
    if not sep or kind not in {t.value for t in IdType}:
        raise ValueError(f"{text!r}: the identifier must start with i=, s=, g= or b= "
                         '(numeric, string, GUID, opaque), e.g. ns=3;i=1001 or ns=3;s="DB1"."Temp"')
    id_type = IdType(kind)
    if not ident:
        raise ValueError(f"{text!r}: empty identifier")
    value: int | str | uuid.UUID | bytes
    if id_type is IdType.NUMERIC:
        if not ident.isdigit() or int(ident) > _UINT32_MAX:
            raise ValueError(f"{text!r}: a numeric identifier is an integer 0..{_UINT32_MAX}")
        value = int(ident)
    elif id_type is IdType.GUID:
        try:
            value = uuid.UUID(ident.strip("{}"))
        except ValueError:
            raise ValueError(f"{text!r}: not a GUID like 09087e75-8e5e-499b-954f-f2a9603db28a") from None
    elif id_type is IdType.OPAQUE:
        try:
            value = base64.b64decode(ident, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{text!r}: an opaque identifier is base64 (b=M/RbKBsRVkePCePcx24oRA==)") from None
    else:
        value = ident
    return NodeRef(id_type=id_type, identifier=value, namespace_index=ns_index, namespace_uri=ns_uri)
