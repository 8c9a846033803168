"""Logging set-up shared by the daemons: plain text or one JSON object per line, rate-limited.

A daemon that runs for months must not fill the journal when a device stays down: a record
repeated with the same logger, level and message template is let through at most ``burst``
times per ``window_s``; the rest are counted, never dropped silently. When the window closes a
summary line says how many were suppressed ("suppressed N similar messages in the last 60 s:
<template>"): it is written with the next record of any kind, or at the latest when logging shuts
down (``logging.shutdown`` at interpreter exit closes the handler, which writes what is pending).
The running total is :attr:`RateLimitFilter.suppressed_total`, which a daemon can serve as a metric.
Only WARNING and above are limited: info and debug lines are not emitted per poll by design.

**Library records** (any logger outside plantwire's own packages: pymodbus, asyncua, paho, ...) are
reshaped before they are limited, because libraries put the variable part in the text: pymodbus
formats every timeout into a unique ERROR with a multi-kilobyte hex dump of the last frames of
*all* its clients (its frame buffer is process-wide, so the dump may show another device's
traffic). Such a record keeps its first line, shortened to ``LIBRARY_TEXT_CHARS``, with its
traceback reduced to the exception's type and text (both in full at ``--log-level DEBUG``); it is
tagged with the acquisition source whose task emitted it (:func:`log_source`, a context variable
the sources set, so a pymodbus line names the device although pymodbus does not), and it is
limited under the stable key (logger, level, source, kind) with a burst of
``LIBRARY_BURST`` per window, where the kind is the first words of the text with numbers masked.
The source's own line says what to do; the library line is supporting evidence. Library INFO and
DEBUG lines (asyncua's per-connect chatter) are shown only at ``--log-level DEBUG``.

JSON lines (``--log-json``) carry ``ts`` (epoch seconds), ``time`` (ISO 8601 UTC), ``level``,
``logger``, ``msg`` and any ``extra=`` fields, for Loki/ELK style collectors.

Under systemd, stderr is the journal (``JOURNAL_STREAM`` names it): each line then starts with the
syslog priority (``<3>`` for errors, sd-daemon(3)), which journald strips and stores as the entry's
PRIORITY, so ``journalctl -p warning -u plantwire-edge`` works; the text format also leaves out
the timestamp, which the journal records itself.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

__all__ = ["JsonFormatter", "RateLimitFilter", "RateLimitedHandler", "active_limiter", "current_source", "is_library",
           "log_source", "setup_logging", "stderr_is_journal"]

_STD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}

#: logging level -> syslog priority (sd-daemon(3) prefixes).
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}

#: Bound on distinct (logger, level, template) keys tracked; beyond it, the oldest closed windows go.
MAX_KEYS = 10_000
#: Our own top-level packages, plus Python's own reporters of our bugs (the root logger, asyncio's
#: "Task exception was never retrieved", warnings), whose tracebacks must stay whole; every other
#: logger is a library's.
OWN_PACKAGES = frozenset({"plantwire", "edge", "cloud", "simulators", "tools", "bench", "__main__",
                          "root", "asyncio", "py"})
#: Characters of a library record's first line kept at INFO level and above (the rest at DEBUG only).
LIBRARY_TEXT_CHARS = 240
#: Library records let through per (logger, level, source, kind) and window.
LIBRARY_BURST = 1

#: The acquisition source (device or server name) whose task is running; read by the limiter to tag
#: library records. A ContextVar is per task (asyncio copies it on task creation), not shared state.
_SOURCE: ContextVar[str | None] = ContextVar("plantwire_log_source", default=None)
_NUMBERS = re.compile(r"0x[0-9a-fA-F]+|\d+(?:\.\d+)?")


@contextmanager
def log_source(name: str) -> Iterator[None]:
    """Tag library records emitted by this task (and tasks it creates) with ``name``."""
    token = _SOURCE.set(name)
    try:
        yield
    finally:
        _SOURCE.reset(token)


def current_source() -> str | None:
    """The source set by :func:`log_source` in the running context, if any."""
    return _SOURCE.get()


def is_library(name: str) -> bool:
    """True for loggers that are not plantwire's own (``pymodbus.logging``, ``asyncua.client...``)."""
    return name.partition(".")[0] not in OWN_PACKAGES


def _library_kind(first_line: str) -> str:
    """A stable key for a library message: its first words with numbers and hex masked."""
    return _NUMBERS.sub("#", first_line[:120])[:64]


def _priority(levelno: int) -> int:
    for level, prio in sorted(_PRIORITY.items(), reverse=True):
        if levelno >= level:
            return prio
    return 7


class JsonFormatter(logging.Formatter):
    """One JSON object per record; values that are not JSON scalars are written as their repr."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 6),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_") and key not in doc:
                doc[key] = value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, ensure_ascii=False)


class _Window:
    __slots__ = ("count", "start", "suppressed")

    def __init__(self, start: float) -> None:
        self.start = start
        self.count = 1
        self.suppressed = 0


class RateLimitFilter(logging.Filter):
    """At most ``burst`` records per (logger, level, template) per ``window_s``; counts the rest.

    The key is the unformatted template (``record.msg``), so "device %s timed out" for 50 devices
    is one key: a storm of the same failure is summarised, whichever device it names.
    """

    def __init__(self, burst: int = 5, window_s: float = 60.0, *, library_verbose: bool = False) -> None:
        """``library_verbose``: let library records through whole and at every level (``--log-level DEBUG``)."""
        super().__init__()
        if burst < 1 or window_s <= 0:
            raise ValueError(f"burst must be >= 1 and window_s > 0, got {burst}, {window_s}")
        self.burst = burst
        self.window_s = window_s
        self.library_verbose = library_verbose
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, int, str], _Window] = {}
        self.suppressed_total = 0
        self.library_demoted_total = 0  # library INFO/DEBUG records not shown (library_verbose off)

    def _reshape_library(self, record: logging.LogRecord) -> str:
        """Shorten a library record in place (first line, no traceback) and return its limiter key."""
        source = current_source()
        if source is not None and not hasattr(record, "source"):
            record.source = source
        text = record.getMessage()
        first, _, rest = text.partition("\n")
        kind = _library_kind(first)
        if not self.library_verbose:
            dropped = len(rest) + max(0, len(first) - LIBRARY_TEXT_CHARS)
            first = first[:LIBRARY_TEXT_CHARS]
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                first += f" ({type(exc).__name__}: {exc})" if str(exc) else f" ({type(exc).__name__})"
                record.exc_info = None
                record.exc_text = None
            if dropped:
                first += f" [{dropped} more characters at --log-level DEBUG]"
            prefix = f"[{source}] " if source is not None else ""
            record.msg, record.args = prefix + first, None
        return f"[{source}] {kind}" if source is not None else kind

    def filter(self, record: logging.LogRecord) -> bool:
        library = is_library(record.name)
        if record.levelno < logging.WARNING:
            if library and not self.library_verbose:
                self.library_demoted_total += 1
                return False
            return True
        if library:
            template = self._reshape_library(record)
            burst = min(self.burst, LIBRARY_BURST)
        else:
            template = str(record.msg)
            burst = self.burst
        key = (record.name, record.levelno, template)
        now = time.monotonic()
        with self._lock:
            w = self._windows.get(key)
            if w is None or now - w.start >= self.window_s:
                if w is not None and w.suppressed:
                    # The summary rides on the first record of the new window.
                    record.msg = f"{record.msg} (suppressed {w.suppressed} similar messages in the last window)"
                if w is None and len(self._windows) >= MAX_KEYS:
                    self._evict(now)
                self._windows[key] = _Window(now)
                return True
            w.count += 1
            if w.count <= burst:
                return True
            w.suppressed += 1
            self.suppressed_total += 1
            return False

    def _evict(self, now: float) -> None:
        """Forget closed windows with nothing pending; if all are open, the oldest half (their
        suppressed counts stay in ``suppressed_total``)."""
        closed = [k for k, w in self._windows.items() if now - w.start >= self.window_s and not w.suppressed]
        for k in closed:
            del self._windows[k]
        if len(self._windows) >= MAX_KEYS:
            for k in sorted(self._windows, key=lambda k: self._windows[k].start)[: MAX_KEYS // 2]:
                del self._windows[k]

    def pending_summaries(self, *, force: bool = False) -> list[logging.LogRecord]:
        """Summary records for windows that closed with suppressed records (all of them if
        ``force``); each is reported once. Called by :class:`RateLimitedHandler`."""
        now = time.monotonic()
        out: list[logging.LogRecord] = []
        with self._lock:
            for (name, levelno, template), w in list(self._windows.items()):
                if w.suppressed and (force or now - w.start >= self.window_s):
                    span = min(now - w.start, self.window_s)
                    rec = logging.LogRecord(name, levelno, __file__, 0,
                                            "suppressed %d similar messages in the last %.0f s: %s",
                                            (w.suppressed, span, template), None)
                    rec.suppressed = w.suppressed
                    out.append(rec)
                    del self._windows[(name, levelno, template)]
        return out


class RateLimitedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that rate-limits through its :class:`RateLimitFilter` and writes the
    suppression summaries of closed windows before the next record, and all of them on close."""

    def __init__(self, stream: IO[str], limiter: RateLimitFilter, *, journal: bool = False) -> None:
        super().__init__(stream)
        self.limiter = limiter
        self.journal = journal
        self.addFilter(limiter)
        self._next_check = 0.0

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if self.journal:
            return f"<{_priority(record.levelno)}>{text}"
        return text

    def handle(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + min(1.0, self.limiter.window_s / 4)
            self._emit_all(self.limiter.pending_summaries())
        return bool(super().handle(record))

    def _emit_all(self, records: list[logging.LogRecord]) -> None:
        if not records:
            return
        self.acquire()
        try:
            for rec in records:
                self.emit(rec)  # not through the filter: a summary is never suppressed
        finally:
            self.release()

    def close(self) -> None:
        try:
            self._emit_all(self.limiter.pending_summaries(force=True))
            self.flush()
        finally:
            super().close()


def active_limiter() -> RateLimitFilter | None:
    """The limiter of the handler :func:`setup_logging` installed on the root logger, if any (for metrics)."""
    for h in logging.getLogger().handlers:
        if isinstance(h, RateLimitedHandler):
            return h.limiter
    return None


def stderr_is_journal() -> bool:
    """True when stderr is connected to journald (systemd sets ``JOURNAL_STREAM=dev:inode``)."""
    raw = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = raw.partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
        return bool(raw) and st.st_dev == int(dev) and st.st_ino == int(ino)
    except (OSError, ValueError, AttributeError):
        return False


def setup_logging(
    level: str = "INFO",
    *,
    json: bool = False,
    burst: int = 5,
    window_s: float = 60.0,
    stream: IO[str] | None = None,
    journal: bool | None = None,
) -> RateLimitFilter:
    """Route the root logger to one rate-limited handler on ``stream`` (stderr); returns the
    limiter, whose ``suppressed_total`` a daemon may export. ``journal`` defaults to
    :func:`stderr_is_journal`. Calling it again replaces the previous handler (tests, reloads)."""
    if journal is None:
        journal = stream is None and stderr_is_journal()
    limiter = RateLimitFilter(burst, window_s, library_verbose=logging.getLevelName(level.upper()) == logging.DEBUG)
    handler = RateLimitedHandler(stream or sys.stderr, limiter, journal=journal)
    if json:
        handler.setFormatter(JsonFormatter())
    elif journal:
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        if isinstance(h, RateLimitedHandler):
            h.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    return limiter
