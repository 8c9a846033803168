"""Counters and gauges served as Prometheus text on ``/metrics``, plus ``/health`` as JSON.

One :class:`Registry` per daemon instance (no module-level state, so several daemons can share a
process in tests). Values are plain floats updated from the event loop or worker threads; a
read racing a write sees either the old or the new value, which is all Prometheus needs.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Metric:
    __slots__ = ("help", "kind", "name", "values")

    def __init__(self, name: str, kind: str, help_: str) -> None:
        self.name = name
        self.kind = kind
        self.help = help_
        self.values: dict[tuple[tuple[str, str], ...], float] = {}

    def _key(self, labels: dict[str, str] | None) -> tuple[tuple[str, str], ...]:
        return tuple(sorted(labels.items())) if labels else ()

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        self.values[key] = self.values.get(key, 0.0) + amount

    def set(self, value: float, **labels: str) -> None:
        self.values[self._key(labels)] = float(value)

    def get(self, **labels: str) -> float:
        return self.values.get(self._key(labels), 0.0)

    def total(self) -> float:
        return sum(self.values.values())


class Registry:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._metrics: dict[str, Metric] = {}
        self._lock = threading.Lock()

    def _get(self, name: str, kind: str, help_: str) -> Metric:
        full = f"{self.prefix}_{name}"
        with self._lock:
            m = self._metrics.get(full)
            if m is None:
                m = self._metrics[full] = Metric(full, kind, help_)
            return m

    def counter(self, name: str, help_: str) -> Metric:
        """A monotonically increasing count; by convention ``name`` ends in ``_total``."""
        return self._get(name, "counter", help_)

    def gauge(self, name: str, help_: str) -> Metric:
        return self._get(name, "gauge", help_)

    def histogram(self, name: str, help_: str) -> Metric:
        """One histogram family: its samples are set with the pseudo-label ``suffix`` (``_bucket``
        with ``le=...``, ``_sum``, ``_count``), rendered under one ``# TYPE name histogram``."""
        return self._get(name, "histogram", help_)

    def values(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """A copy of one family's samples by label set (``name`` without the prefix); empty if absent.
        For readers such as the edge console that show what the metrics show."""
        with self._lock:
            m = self._metrics.get(f"{self.prefix}_{name}")
        return dict(m.values) if m is not None else {}

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            metrics = list(self._metrics.values())
        for m in metrics:
            lines.append(f"# HELP {m.name} {m.help}")
            lines.append(f"# TYPE {m.name} {m.kind}")
            for key, value in list(m.values.items()):
                name = m.name
                if m.kind == "histogram":
                    name += dict(key).get("suffix", "")
                    key = tuple(kv for kv in key if kv[0] != "suffix")
                if key:
                    lab = ",".join(f'{k}="{_escape(v)}"' for k, v in key)
                    lines.append(f"{name}{{{lab}}} {_fmt(value)}")
                else:
                    lines.append(f"{name} {_fmt(value)}")
        return "\n".join(lines) + "\n"

    def snapshot(self) -> dict[str, float]:
        """Totals per metric (labels summed): what the demo's progress line shows."""
        with self._lock:
            return {m.name: m.total() for m in self._metrics.values()}


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _fmt(v: float) -> str:
    return str(int(v)) if v.is_integer() and abs(v) < 2**53 else repr(v)


class MetricsServer:
    """Serves ``/metrics`` and ``/health`` from a daemon thread on a loopback port."""

    def __init__(self, registry: Registry, host: str, port: int, health: Callable[[], dict[str, Any]]) -> None:
        reg = registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/metrics"):
                    body = reg.render().encode()
                    ctype = "text/plain; version=0.0.4"
                    code = 200
                elif self.path.startswith("/health"):
                    doc = health()
                    body = json.dumps(doc).encode()
                    ctype = "application/json"
                    code = 200 if doc.get("status") == "ok" else 503
                else:
                    body, ctype, code = b"not found\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
