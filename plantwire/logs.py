"""Logging set-up shared by the daemons: plain text or one JSON object per line, rate-limited.

A daemon that runs for months must not fill the journal when a device stays down: a record
repeated with the same logger, level and message template is let through at most ``burst``
times per ``window_s``; the rest are counted and summarised once the window closes
("suppressed N similar messages"). JSON lines (``--log-json``) carry ``ts``, ``level``,
``logger``, ``msg`` and any ``extra=`` fields, for Loki/ELK style collectors.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any

__all__ = ["JsonFormatter", "RateLimitFilter", "setup_logging"]

_STD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                doc[key] = value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


class RateLimitFilter(logging.Filter):
    """At most ``burst`` records per (logger, level, template) per ``window_s``; counts the rest."""

    def __init__(self, burst: int = 5, window_s: float = 60.0) -> None:
        super().__init__()
        self.burst = burst
        self.window_s = window_s
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, int, str], list[float]] = {}  # key -> [start, count, suppressed]
        self.suppressed_total = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True  # info/debug are not repeated per poll by design; only errors storm
        key = (record.name, record.levelno, str(record.msg))
        now = time.monotonic()
        with self._lock:
            w = self._windows.get(key)
            if w is None or now - w[0] >= self.window_s:
                suppressed = int(w[2]) if w else 0
                self._windows[key] = [now, 1, 0]
                if len(self._windows) > 10_000:
                    self._windows.clear()
                if suppressed:
                    record.msg = f"{record.msg} (suppressed {suppressed} similar messages in the last window)"
                return True
            w[1] += 1
            if w[1] <= self.burst:
                return True
            w[2] += 1
            self.suppressed_total += 1
            return False


def setup_logging(level: str = "INFO", *, json: bool = False, burst: int = 5, window_s: float = 60.0) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RateLimitFilter(burst, window_s))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
