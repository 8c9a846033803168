"""InfluxDB sinks: one interface, two write paths, the same line protocol.

- :class:`InfluxV1Sink` posts to ``/write?db=..&precision=ns`` (InfluxDB 1.x; Debian's 1.6 has no
  v2 API, shared/MEASURED.md trap 6) over one kept-alive HTTP connection.
- :class:`InfluxV2Sink` writes through influxdb-client's synchronous write API
  (``/api/v2/write``: InfluxDB 1.8+, 2.x, 3.x; tested against VictoriaMetrics).

Contract (Telegraf's output, Vector's sink): ``write(body)`` returns only once the server accepted
the points, or raises. Errors are classified so that the caller can decide without parsing text:

- :class:`RetryableWriteError`: connection refused/reset, timeouts, 5xx, 429 (with the server's
  ``Retry-After`` in ``retry_after_s``), and also 401/403/404 (wrong credentials or a missing
  database are fixed by an operator; dropping the data meanwhile would be worse). Nothing was
  stored, or whatever was is stored again idempotently on retry.
- :class:`PartialWriteError`: HTTP 400. The server stored every point it could parse and
  rejected the rest; ``bad_lines`` holds the rejected lines it named and ``dropped`` how many it
  said it dropped. Retrying cannot help: the caller dead-letters them and carries on.

Each sink also has a ping (:class:`InfluxV1Ping`, :class:`InfluxV2Ping`): ``GET /ping`` on a
connection of its own with a short timeout of its own. A write may legitimately take tens of
seconds (a large batch, a compacting server), so its timeout cannot tell a busy InfluxDB from a
stalled or unreachable one; a ping that goes unanswered for two seconds can (cloud.influx_watch).
"""


from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "InfluxPing",
    "InfluxSink",
    "InfluxV1Ping",
    "InfluxV1Sink",
    "InfluxV2Ping",
    "InfluxV2Sink",
    "PartialWriteError",
    "RetryableWriteError",
    "WriteError",
    "conflicting_field",
    "parse_rejections",
]


class WriteError(Exception):
    """A write InfluxDB did not (completely) accept."""


class RetryableWriteError(WriteError):
    """Nothing (reliably) stored; try again later, not before ``retry_after_s`` if the server said so."""

    def __init__(self, message: str, *, status: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


class PartialWriteError(WriteError):
    """HTTP 400: the good points are stored; these lines were rejected with the server's reason."""

    def __init__(self, reason: str, *, bad_lines: list[str], dropped: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.bad_lines = bad_lines
        self.dropped = dropped


class InfluxSink(Protocol):
    """A write path to InfluxDB. ``write`` blocks until accepted or raises a :class:`WriteError`."""

    def write(self, body: bytes | memoryview) -> None: ...

    def ensure_database(self) -> None: ...

    def close(self) -> None: ...


_UNABLE = re.compile(r"unable to parse '((?:[^'\\]|\\.|'(?!: ))*)': ([^\n]*)")
_DROPPED = re.compile(r"dropped=(\d+)")


_CONFLICT = re.compile(r'field type conflict: input field "((?:[^"\\]|\\.)*)" on measurement "((?:[^"\\]|\\.)*)"')


def parse_rejections(message: str) -> tuple[list[str], int | None]:
    """Lines named in an InfluxDB 400 error (``unable to parse '<line>': why``) and ``dropped=N``."""
    lines = [m.group(1) for m in _UNABLE.finditer(message)]
    d = _DROPPED.search(message)
    return lines, (int(d.group(1)) if d else None)


def conflicting_field(message: str) -> tuple[str, str] | None:
    """(measurement, field) of a "field type conflict" 400, whose lines the server does not name."""
    m = _CONFLICT.search(message)
    return (m.group(2), m.group(1)) if m else None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    return None


def _classify(status: int, body: bytes, retry_after: str | None, what: str) -> WriteError:
    text = body[: 64 * 1024].decode(errors="replace")
    with contextlib.suppress(ValueError, AttributeError):
        doc = json.loads(text)
        text = str(doc.get("error") or doc.get("message") or text)
    if status == 400:
        lines, dropped = parse_rejections(text)
        return PartialWriteError(f"{what}: HTTP 400: {text}", bad_lines=lines, dropped=dropped or len(lines))
    return RetryableWriteError(
        f"{what}: HTTP {status}: {text[:500]}", status=status, retry_after_s=_retry_after(retry_after)
    )


@dataclass
class SinkStats:
    requests: int = 0
    bytes: int = 0
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)


class InfluxV1Sink:
    """``POST /write`` (InfluxDB 1.x) with precision ns, on one persistent HTTP connection."""

    def __init__(
        self,
        url: str,
        database: str,
        *,
        retention_policy: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 30.0,
        gzip_level: int | None = None,
    ) -> None:
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"influx.url: expected http(s)://host:port, got {url!r}")
        self._https = u.scheme == "https"
        self._host = u.hostname
        self._port = u.port or (443 if self._https else 80)
        self._base = u.path.rstrip("/")
        self.database = database
        params = {"db": database, "precision": "ns"}
        if retention_policy:
            params["rp"] = retention_policy
        if username:
            params["u"] = username
            params["p"] = password or ""
        self._auth = {k: params[k] for k in ("u", "p") if k in params}
        self._write_path = f"{self._base}/write?{urllib.parse.urlencode(params)}"
        self.timeout_s = timeout_s
        self.gzip_level = gzip_level
        self._conn: http.client.HTTPConnection | None = None
        self.stats = SinkStats()

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self.timeout_s)
        return self._conn

    def _request(
        self, method: str, path: str, body: bytes | memoryview | None, headers: dict[str, str]
    ) -> tuple[int, bytes, str | None]:
        conn = self._connection()
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            retry_after = resp.getheader("Retry-After")
            if resp.getheader("Connection", "").lower() == "close":
                self.close()
            return resp.status, data, retry_after
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise RetryableWriteError(f"influx {self._host}:{self._port}: {type(exc).__name__}: {exc}") from exc

    def write(self, body: bytes | memoryview) -> None:
        t0 = time.perf_counter()
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self.gzip_level is not None:
            body = gzip.compress(body, compresslevel=self.gzip_level)
            headers["Content-Encoding"] = "gzip"
        status, data, retry_after = self._request("POST", self._write_path, body, headers)
        self.stats.requests += 1
        self.stats.bytes += len(body)
        self.stats.seconds += time.perf_counter() - t0
        if status == 204 or status == 200:
            return
        raise _classify(status, data, retry_after, f"influx write to {self.database}")

    def ensure_database(self) -> None:
        """``CREATE DATABASE`` (idempotent in InfluxQL); raises RetryableWriteError when unreachable."""
        q = urllib.parse.urlencode({"q": f'CREATE DATABASE "{self.database}"', **self._auth})
        status, data, _ = self._request(
            "POST", f"{self._base}/query", q.encode(), {"Content-Type": "application/x-www-form-urlencoded"}
        )
        if status != 200:
            raise RetryableWriteError(
                f"influx CREATE DATABASE {self.database}: HTTP {status}: {data[:300]!r}", status=status
            )

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None


class InfluxV2Sink:
    """influxdb-client's synchronous write API (``/api/v2/write``), raw line protocol in, ns precision."""

    def __init__(
        self, url: str, *, org: str, bucket: str, token: str | None, timeout_s: float = 30.0, gzip: bool = False
    ) -> None:
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.bucket = bucket
        self.org = org
        self._client = InfluxDBClient(
            url=url, token=token or "", org=org, timeout=int(timeout_s * 1000), enable_gzip=gzip
        )
        self._write = self._client.write_api(write_options=SYNCHRONOUS)
        self.stats = SinkStats()

    def write(self, body: bytes | memoryview) -> None:
        from influxdb_client.client.write_api import WritePrecision
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        t0 = time.perf_counter()
        try:
            self._write.write(bucket=self.bucket, org=self.org, record=bytes(body), write_precision=WritePrecision.NS)
        except ApiException as exc:
            headers = exc.headers or {}
            raise _classify(
                int(exc.status or 0),
                (exc.body or b"") if isinstance(exc.body, bytes) else str(exc.body or "").encode(),
                headers.get("Retry-After"),
                f"influx v2 write to {self.bucket}",
            ) from exc
        except (TimeoutError, OSError, Urllib3Error) as exc:
            raise RetryableWriteError(f"influx v2 write: {type(exc).__name__}: {exc}") from exc
        finally:
            self.stats.requests += 1
            self.stats.bytes += len(body)
            self.stats.seconds += time.perf_counter() - t0

    def ensure_database(self) -> None:
        """Buckets are provisioned by the operator on 2.x/3.x; nothing to do (no network at start)."""

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()


class InfluxPing(Protocol):
    """A liveness probe: ``ping()`` returns once the server answered, or raises RetryableWriteError."""

    def ping(self) -> None: ...

    def close(self) -> None: ...


class InfluxV1Ping:
    """``GET /ping`` (204) on its own kept-alive connection, never the writer's, with ``timeout_s``.

    A stopped (SIGSTOP) server still completes the TCP handshake (the kernel's listen backlog
    does it), so only the timeout on the answer tells it apart from a healthy one.
    """

    def __init__(self, url: str, *, timeout_s: float = 2.0) -> None:
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"influx.url: expected http(s)://host:port, got {url!r}")
        self._https = u.scheme == "https"
        self._host = u.hostname
        self._port = u.port or (443 if self._https else 80)
        self._path = u.path.rstrip("/") + "/ping"
        self.timeout_s = timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def ping(self) -> None:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self.timeout_s)
        try:
            self._conn.request("GET", self._path)
            resp = self._conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            what = "no answer within" if isinstance(exc, TimeoutError) else "failed after at most"
            raise RetryableWriteError(
                f"influx ping {self._host}:{self._port}: {what} {self.timeout_s:g} s ({type(exc).__name__}: {exc})"
            ) from exc
        if resp.status not in (200, 204):
            self.close()
            raise RetryableWriteError(f"influx ping {self._host}:{self._port}: HTTP {resp.status}", status=resp.status)

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None


class InfluxV2Ping:
    """influxdb-client's ``/ping`` (``InfluxDBClient.version``) on a client of its own with ``timeout_s``."""

    def __init__(self, url: str, *, org: str, token: str | None, timeout_s: float = 2.0) -> None:
        from influxdb_client import InfluxDBClient

        self.timeout_s = timeout_s
        self._url = url
        self._client = InfluxDBClient(url=url, token=token or "", org=org, timeout=max(1, int(timeout_s * 1000)))

    def ping(self) -> None:
        try:
            self._client.version()  # GET /ping; raises where ``ping()`` would only say False
        except Exception as exc:  # urllib3 and ApiException alike: the server is not answering
            raise RetryableWriteError(
                f"influx v2 ping {self._url} (timeout {self.timeout_s:g} s): {type(exc).__name__}: {exc}"
            ) from exc

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()
