"""A small HTTP control API on loopback, so tests and engineers can trigger faults on command.

``plantwire sim PLANT --control-port 8765`` (0 picks a free port; the port is printed):

- ``GET /status``: JSON with the epoch, the simulated time, tick counts, labels written, and the
  transport faults scheduled so far.
- ``POST /faults``: a body in the faults-file format (YAML or JSON, see ``simulators.schedule``)
  with ``events`` and ``transport`` entries whose ``at_s`` counts from *now* (add ``?absolute=1``
  to give simulated seconds since the epoch). They are validated against the plant (400 with
  every error named by its path), applied by this process (Modbus) and forwarded to the OPC-UA
  server processes, and labelled like scheduled faults. ``wear`` is only accepted in the faults
  file given at start (a wear history cannot be changed after the fact).

    curl -X POST localhost:8765/faults -d '{"transport": [{"device": "plc-a01", "kind": "timeout",
                                           "at_s": 0, "duration_s": 30}]}'

Loopback only and without authentication: it is a test bench's switchboard, not a plant service.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from plantwire.configfile import ConfigError

__all__ = ["ControlServer"]

log = logging.getLogger(__name__)

Handler = Callable[[str, str, dict[str, list[str]], bytes], Awaitable[tuple[int, Any]]]
_REASON = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}
MAX_BODY = 1 << 20


class ControlServer:
    """Minimal HTTP/1.1 (one request per connection) calling ``handler(method, path, query, body)``."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, obj = await self._request(reader)
        except (ValueError, asyncio.IncompleteReadError) as exc:
            status, obj = 400, {"error": str(exc)}
        except Exception as exc:  # the switchboard must not take the simulator down
            log.exception("control request failed")
            status, obj = 500, {"error": str(exc)}
        body = json.dumps(obj, indent=1).encode()
        writer.write(f"HTTP/1.1 {status} {_REASON.get(status, '')}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        try:
            await writer.drain()
        finally:
            writer.close()

    async def _request(self, reader: asyncio.StreamReader) -> tuple[int, Any]:
        line = (await asyncio.wait_for(reader.readline(), 10)).decode("latin-1").strip()
        parts = line.split()
        if len(parts) != 3:
            raise ValueError(f"bad request line {line!r}")
        method, target = parts[0], parts[1]
        length = 0
        while True:
            header = (await asyncio.wait_for(reader.readline(), 10)).decode("latin-1").strip()
            if not header:
                break
            name, _, value = header.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length > MAX_BODY:
            raise ValueError(f"body of {length} bytes is over {MAX_BODY}")
        body = await asyncio.wait_for(reader.readexactly(length), 10) if length else b""
        url = urlsplit(target)
        return await self.handler(method, url.path, parse_qs(url.query), body)


def parse_body(body: bytes) -> dict[str, Any]:
    """JSON or YAML mapping (YAML is a superset; JSON errors read better, so try it first)."""
    try:
        data = json.loads(body or b"{}")
    except json.JSONDecodeError:
        try:
            data = yaml.safe_load(body)
        except yaml.YAMLError as exc:
            raise ConfigError("request body", [f"neither JSON nor YAML ({exc})"]) from None
    if not isinstance(data, dict):
        raise ConfigError("request body", ["(top level): expected a mapping with events and/or transport"])
    return data
