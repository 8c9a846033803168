"""The console's web server: aiohttp in a thread of its own, reading the daemon through a feed.

Why a thread with its own event loop, not a task on the daemon's: a handler that hangs or burns CPU in
Python would stall the daemon's loop (acquisition, flush, forwarding). In its own thread the console
can only slow down, never stop, the daemon: everything it needs from the daemon's loop (the overview
snapshot, alarm actions, audit documents) is handed over with ``call_soon_threadsafe`` and waited for
with a deadline; the signal tap is read directly (numpy arrays, copied). Every request runs under
``handler_timeout_s``; an exception in a handler is a counted, logged 500, never more.

Live values are server-sent events (``/api/stream``), latest-value-only: each tick a stream reads the
current values of the rows its page shows and writes one message; a tab that reads slower than
``stream_write_timeout_s`` is dropped (counted), ticks a stream could not keep up with are skipped
(counted), and at most ``max_clients`` streams run at once. A stream's socket has a fixed send buffer
(``STREAM_SNDBUF_BYTES``, no autotuning) and as much in its transport, so a tab can cost the daemon about
200 KB and one message, however long it is forgotten.

Security: see :mod:`edge.console.auth` and :mod:`edge.console.settings`. Every POST needs the session's
CSRF token (and a same-origin ``Origin`` header when the browser sends one); static files are served
from a fixed table of names (no path reaches the file system); requests larger than
``max_request_bytes`` are refused with 413; every alarm action and every login is audited on the events
lane (``{"type": "audit", "source": "console", ...}``, contracts.md).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import json
import logging
import shutil
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

from edge.console import pages
from edge.console.auth import Session, SessionStore, User, UserError, parse_users, verify_password
from edge.console.hooks import ALARM_ACTIONS, ActionResult, Outcome
from edge.console.settings import ConsoleSettings, Role
from edge.console.tap import SignalIndex
from edge.console.view import GatewayFeed, overview_snapshot, redact
from plantwire.metrics import Registry
from plantwire.tls import SecretError, read_secret

__all__ = ["ConsoleCounters", "ConsoleServer", "check_secrets"]

log = logging.getLogger("plantwire.edge.console")

COOKIE = "plantwire_session"
SESSION = web.RequestKey("session", Session)
STATIC_DIR = Path(__file__).resolve().parent / "static"
_STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".svg": "image/svg+xml"}
#: Rows a signals page shows and a stream follows at most.
MAX_ROWS = 100
#: Refused logins audited per minute at most (beyond: counted and logged only, so a password-guessing
#: flood cannot fill the write-ahead log).
REFUSED_LOGIN_AUDITS_PER_MIN = 20
#: Password checks are serialised and followed by a pause of this many times their cost, so a flood of
#: logins takes at most ~1/4 of a core from the daemon.
LOGIN_PAUSE_FACTOR = 3.0
STARTUP_TIMEOUT_S = 10.0
#: Kernel send buffer and transport buffer of a live stream: what an unread tab can hold at most.
STREAM_SNDBUF_BYTES = 64 * 1024
_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


@dataclass
class ConsoleCounters:
    requests: int = 0
    errors: int = 0  # handlers that raised (500)
    timeouts: int = 0  # handlers past handler_timeout_s (503)
    logins: int = 0
    login_failures: int = 0
    csrf_refused: int = 0
    unauthenticated: int = 0
    forbidden: int = 0  # role insufficient
    too_large: int = 0
    actions: int = 0
    audits_failed: int = 0
    streams: int = 0  # live streams now
    streams_refused: int = 0  # beyond max_clients
    streams_dropped: int = 0  # slow readers cut off
    updates_skipped: int = 0  # ticks a stream could not keep up with
    crashes: int = 0  # the server thread itself failed


def _load_users(s: ConsoleSettings) -> dict[str, User]:
    if not s.users_configured:
        return {}
    text = read_secret(s.users_credential, s.users_env)
    try:
        users = parse_users(text)
    except UserError as exc:
        raise SecretError(f"console users: {exc}") from None
    if not users:
        raise SecretError("console users: the user table is empty")
    return users


def _server_context(s: ConsoleSettings) -> ssl.SSLContext | None:
    if s.tls is None:
        return None
    t = s.tls
    password = None
    if t.key_password_credential or t.key_password_env:
        password = read_secret(t.key_password_credential, t.key_password_env)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(t.cert_file, t.key_file, password=password)
    except (OSError, ssl.SSLError) as exc:
        raise SecretError(f"console.tls: cannot load {t.cert_file} / {t.key_file}: {exc}") from None
    return ctx


def check_secrets(settings: ConsoleSettings) -> None:
    """Open the user table and the TLS key as a start would (raises SecretError): a SIGHUP reload runs this
    before it stops the running gateway."""
    _load_users(settings)
    _server_context(settings)


class ConsoleServer:
    """Serve the console for one gateway; :meth:`start` from the daemon's loop, :meth:`stop` at its end.

    The constructor reads the user table and the TLS key (a missing secret raises SecretError: the
    daemon exits 2 with the reason, as for the broker's secrets)."""

    def __init__(self, settings: ConsoleSettings, feed: GatewayFeed) -> None:
        self.settings = settings
        self.feed = feed
        self.users = _load_users(settings)
        self.ssl_context = _server_context(settings)
        self.sessions = SessionStore(settings.session_ttl_s, settings.session_idle_s, settings.max_sessions)
        self.index = SignalIndex(feed.table)
        self.counters = ConsoleCounters()
        self.port: int | None = None
        self.scheme = "https" if self.ssl_context is not None else "http"
        self._static = {p.name: p.read_bytes() for p in STATIC_DIR.iterdir() if p.suffix in _STATIC_TYPES}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._daemon_loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._stopping = False
        self._rates: deque[tuple[float, dict[str, float]]] = deque(maxlen=16)
        self._login_lock: asyncio.Lock | None = None
        self._refused_audits: deque[float] = deque(maxlen=REFUSED_LOGIN_AUDITS_PER_MIN)

    # -- life cycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host = self.settings.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else (f"[{host}]" if ":" in host else host)
        return f"{self.scheme}://{shown}:{self.port}/"

    def start(self, daemon_loop: asyncio.AbstractEventLoop) -> bool:
        """Start the server thread and wait (bounded) until it listens; False (logged) if it could not."""
        self._daemon_loop = daemon_loop
        self._thread = threading.Thread(target=self._thread_main, name="console", daemon=True)
        self._thread.start()
        self._started.wait(STARTUP_TIMEOUT_S)
        return self.port is not None

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping = True
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("console: server thread did not stop within %.0f s (left behind as a daemon thread)",
                            timeout_s)

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._serve())
        except Exception:
            self.counters.crashes += 1
            log.exception("console: server failed (acquisition and forwarding carry on)")
        finally:
            self._started.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._login_lock = asyncio.Lock()
        app = web.Application(middlewares=[self._guard], client_max_size=self.settings.max_request_bytes,
                              handler_args={"max_line_size": 8190, "max_field_size": 8190})
        r = app.router
        r.add_get("/", self._overview)
        r.add_get("/fragment/overview", self._overview_fragment)
        r.add_get("/signals", self._signals)
        r.add_get("/api/stream", self._stream)
        r.add_get("/alarms", self._alarms)
        r.add_post("/alarms/action", self._alarm_action)
        r.add_get("/config", self._config)
        r.add_post("/config/check", self._config_check)
        r.add_get("/login", self._login_form)
        r.add_post("/login", self._login)
        r.add_post("/logout", self._logout)
        r.add_get("/static/{name}", self._static_file)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.settings.host, self.settings.port, ssl_context=self.ssl_context)
            await site.start()
            self.port = int(runner.addresses[0][1])
            log.info("console: %s", self.url)
            self._started.set()
            await self._stop.wait()
        finally:
            self._stopping = True
            await runner.cleanup()

    def export_metrics(self, m: Registry) -> None:
        """``console_*`` counters and gauges (called from the daemon's metrics update)."""
        gauges = {"streams"}
        for name, value in asdict(self.counters).items():
            if name in gauges:
                m.gauge(f"console_{name}", f"console: {name}").set(value)
            else:
                m.counter(f"console_{name}_total", f"console: {name}").set(value)
        m.gauge("console_sessions", "console: live sessions").set(len(self.sessions))
        m.gauge("console_up", "1 while the console listens").set(1.0 if self.port is not None and not self._stopping
                                                                 else 0.0)
        m.gauge("console_sparkline_ring_bytes", "console: memory of the sparkline ring (0 while nobody watches)").set(
            self.feed.tap.ring_bytes)

    # -- the daemon's loop ---------------------------------------------------------------------
    async def _on_daemon(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the daemon's loop and wait for it, at most handler_timeout_s."""
        loop = self._daemon_loop
        if loop is None or loop.is_closed():
            raise web.HTTPServiceUnavailable(text="the daemon is stopping")
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # handed to the waiting handler, which logs it
                fut.set_exception(exc)

        try:
            loop.call_soon_threadsafe(run)
        except RuntimeError:
            raise web.HTTPServiceUnavailable(text="the daemon is stopping") from None
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), self.settings.handler_timeout_s)
        finally:
            fut.cancel()

    # -- middleware: time bound, errors, sessions, CSRF, headers --------------------------------
    @web.middleware
    async def _guard(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        self.counters.requests += 1
        new_session: Session | None = None
        try:
            if not self.users and request.url.host not in _LOOPBACK_NAMES:
                # DNS rebinding: a page from elsewhere whose name now points at 127.0.0.1 gets nothing
                self.counters.forbidden += 1
                raise web.HTTPMisdirectedRequest(text="this console answers to loopback names only\n")
            session = self.sessions.get(request.cookies.get(COOKIE))
            public = request.path in ("/login",) or request.path.startswith("/static/")
            if session is None and not self.users and not public:  # loopback, no user table: a local visitor
                session = new_session = self.sessions.create("local", self.settings.loopback_role, anonymous=True)
            request[SESSION] = session
            if session is None and not public:
                self.counters.unauthenticated += 1
                if request.method == "GET" and not request.path.startswith(("/api/", "/fragment/")):
                    raise web.HTTPSeeOther("/login")
                raise web.HTTPUnauthorized(text="log in first\n")
            if request.method == "POST":  # the login form has no session yet: its origin is checked
                await self._check_csrf(request, session, token=request.path != "/login")
            if request.path == "/api/stream":
                resp = await handler(request)  # a stream bounds itself (write timeout, session expiry)
            else:
                async with asyncio.timeout(self.settings.handler_timeout_s):
                    resp = await handler(request)
        except web.HTTPException as exc:  # as a plain response, so the headers below apply to it too
            if exc.status == 413:
                self.counters.too_large += 1
            resp = web.Response(status=exc.status, text=exc.text, headers=exc.headers)
        except TimeoutError:
            self.counters.timeouts += 1
            log.warning("console: %s %s took longer than %.0f s", request.method, request.path,
                        self.settings.handler_timeout_s)
            resp = web.Response(status=503, text="the console timed out on this request\n")
        except Exception:
            self.counters.errors += 1
            log.exception("console: %s %s failed", request.method, request.path)
            resp = web.Response(status=500, text="the console failed on this request (logged)\n")
        if not resp.prepared:
            h = resp.headers
            h.setdefault("Content-Security-Policy", _CSP)
            h.setdefault("X-Content-Type-Options", "nosniff")
            h.setdefault("X-Frame-Options", "DENY")
            h.setdefault("Referrer-Policy", "same-origin")  # no-referrer makes Chromium send "Origin: null"
            h.setdefault("Cache-Control", "no-store")
            if new_session is not None:
                self._set_cookie(resp, new_session)
        return resp

    def _set_cookie(self, resp: web.StreamResponse, s: Session) -> None:
        resp.set_cookie(COOKIE, s.token, httponly=True, samesite="Strict", secure=self.ssl_context is not None,
                        path="/", max_age=int(self.settings.session_ttl_s))

    async def _check_csrf(self, request: web.Request, session: Session | None, *, token: bool) -> None:
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            self.counters.csrf_refused += 1
            log.warning("console: refused %s %s from origin %r", request.method, request.path, origin)
            raise web.HTTPForbidden(text="cross-origin request refused\n")
        if not token:
            return
        sent = request.headers.get("X-CSRF-Token")
        if sent is None:
            form = await request.post()
            value = form.get("csrf")
            sent = value if isinstance(value, str) else None
        if session is None or not sent or not hmac.compare_digest(sent, session.csrf):
            self.counters.csrf_refused += 1
            log.warning("console: refused %s %s without a valid CSRF token (user %s)", request.method, request.path,
                        session.user if session else None)
            raise web.HTTPForbidden(text="missing or wrong CSRF token: reload the page\n")

    # -- pages ---------------------------------------------------------------------------------
    def _page(self, request: web.Request, title: str, body: str, active: str, page: str) -> web.Response:
        s: Session = request[SESSION]
        html = pages.layout(title, body, user=None if s.anonymous else s.user,
                            role=s.role.value, csrf=s.csrf, active=active, gateway=self.feed.gateway_id, page=page)
        if s.anonymous:
            html = html.replace("</header>", f'<span class="who">local visitor ({e_role(s.role)})</span></header>', 1)
        return web.Response(text=html, content_type="text/html")

    def _source_rates(self, ov: dict[str, Any]) -> dict[str, float]:
        now = time.monotonic()
        totals = {n: s.get("good", 0.0) + s.get("bad", 0.0) for n, s in ov["sources"].items()}
        if not self._rates or now - self._rates[-1][0] >= 1.0:
            self._rates.append((now, totals))
        base = next(((t, v) for t, v in self._rates if now - t <= 30.0 and now - t >= 1.5), None)
        if base is None:
            return {}
        dt = now - base[0]
        return {n: max(0.0, (totals[n] - base[1].get(n, 0.0)) / dt) for n in totals if n in base[1]}

    async def _overview_html(self) -> str:
        ov = await self._on_daemon(overview_snapshot, self.feed)
        return pages.overview_fragment(ov, self._source_rates(ov))

    async def _overview(self, request: web.Request) -> web.Response:
        return self._page(request, "Overview", await self._overview_html(), "/", "overview")

    async def _overview_fragment(self, request: web.Request) -> web.Response:
        return web.Response(text=await self._overview_html(), content_type="text/html")

    async def _signals(self, request: web.Request) -> web.Response:
        query = request.query.get("q", "")[:200]
        t0 = time.perf_counter()
        tap = self.feed.tap
        rows, total = self.index.search(query, tap.latest_quality, MAX_ROWS)
        tap.watch()
        spark = tap.sparklines(rows)
        html = pages.signal_rows(self.index, rows, tap.latest_value[rows], tap.latest_quality[rows],
                                 tap.latest_score[rows], spark, total, query,
                                 (time.perf_counter() - t0) * 1e3)
        if request.query.get("fragment") == "1":
            return web.Response(text=html, content_type="text/html")
        return self._page(request, "Signals", pages.signals_page(query, html), "/signals", "signals")

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        try:
            rows = np.array([int(x) for x in request.query.get("rows", "").split(",") if x][:MAX_ROWS], dtype=np.int64)
        except ValueError:
            raise web.HTTPBadRequest(text="rows: comma-separated signal rows\n") from None
        if rows.size and (rows.min() < 0 or rows.max() >= len(self.index)):
            raise web.HTTPBadRequest(text="rows: out of range\n")
        if self.counters.streams >= self.settings.max_clients:
            self.counters.streams_refused += 1
            raise web.HTTPServiceUnavailable(text="too many live streams; close other console tabs\n")
        token = request[SESSION].token
        _bound_stream_buffers(request)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Content-Type-Options": "nosniff"})
        self.counters.streams += 1
        interval = self.settings.stream_interval_s
        loop = asyncio.get_running_loop()
        tap = self.feed.tap
        stop = self._stop
        assert stop is not None
        try:
            await resp.prepare(request)
            next_t = loop.time()
            while not self._stopping and self.sessions.alive(token):
                tap.watch()
                msg = {"ts_ns": time.time_ns(), "rows": rows.tolist(),
                       "value": [None if not np.isfinite(v) else v for v in tap.latest_value[rows].tolist()],
                       "quality": tap.latest_quality[rows].tolist(),
                       "score": [None if not np.isfinite(v) else round(v, 4) for v in tap.latest_score[rows].tolist()]}
                try:
                    async with asyncio.timeout(self.settings.stream_write_timeout_s):
                        await resp.write(b"data: " + json.dumps(msg).encode() + b"\n\n")
                except TimeoutError:
                    self.counters.streams_dropped += 1
                    log.info("console: dropped a live stream that read slower than %.0f s",
                             self.settings.stream_write_timeout_s)
                    break
                next_t += interval
                now = loop.time()
                if now > next_t:
                    skipped = int((now - next_t) / interval) + 1
                    self.counters.updates_skipped += skipped
                    next_t += skipped * interval
                with contextlib.suppress(TimeoutError):  # a stop wakes every stream at once
                    await asyncio.wait_for(stop.wait(), next_t - now)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.counters.streams -= 1
        return resp

    async def _alarms_html(self, request: web.Request, message: str = "") -> web.Response:
        board = self.feed.alarms
        open_alarms, closed = await self._on_daemon(lambda: (board.open_alarms(), board.recent_closed()))
        s: Session = request[SESSION]
        note = ("Incidents from the alarm layer." if self.feed.hooks.alarms is not None else
                "Detector alarm episodes (the incident layer, edge/alarms, is not connected on this gateway).")
        body = pages.alarms_page(open_alarms, closed, can_act=s.role is Role.OPERATOR, csrf=s.csrf,
                                 source_note=note, message=message)
        if request.method == "GET" and request.query.get("fragment") == "1":
            return web.Response(text=body, content_type="text/html")
        return self._page(request, "Alarms", body, "/alarms", "alarms")

    async def _alarms(self, request: web.Request) -> web.Response:
        return await self._alarms_html(request)

    async def _alarm_action(self, request: web.Request) -> web.Response:
        s: Session = request[SESSION]
        form = await request.post()
        action = str(form.get("action", ""))[:32]
        target = str(form.get("target", ""))[:200]
        reason = str(form.get("reason", ""))[:500]
        shelve_s: float | None = None
        with contextlib.suppress(ValueError):
            shelve_s = float(str(form.get("shelve_s", "")))
        request_id = uuid.uuid4().hex
        self.counters.actions += 1
        if s.role is not Role.OPERATOR:
            self.counters.forbidden += 1
            result = ActionResult(Outcome.REFUSED, f"role {s.role.value} may not act on alarms")
        elif action not in ALARM_ACTIONS:
            result = ActionResult(Outcome.REFUSED, f"unknown action {action!r}")
        else:
            board = self.feed.alarms
            try:
                result = await self._on_daemon(board.act, action, target, s.user, reason, shelve_s, request_id)
            except TimeoutError:
                result = ActionResult(Outcome.FAILED, "the alarm layer did not answer in time")
            except Exception as exc:
                log.exception("console: alarm action %s on %s failed", action, target)
                result = ActionResult(Outcome.FAILED, f"{type(exc).__name__}: {exc}")
        if not result.audited:  # the incident layer audits its own commands
            await self._audit(s.user, "alarms", action, target, reason, result, request_id)
        resp = await self._alarms_html(request, f"{action} {target}: {result.outcome.value}"
                                                f"{' (' + result.detail + ')' if result.detail else ''}")
        if result.outcome is Outcome.REFUSED and s.role is not Role.OPERATOR:
            resp.set_status(403)
        return resp

    async def _config(self, request: web.Request) -> web.Response:
        s: Session = request[SESSION]
        return self._page(request, "Configuration", pages.config_page(redact(self.feed.running_config), s.csrf),
                          "/config", "config")

    async def _config_check(self, request: web.Request) -> web.Response:
        s: Session = request[SESSION]
        form = await request.post()
        field = form.get("file")
        kind = str(form.get("kind", "")) or None
        if not isinstance(field, web.FileField):
            text, ok = "no file uploaded", False
        else:
            data = field.file.read()
            text, ok = await asyncio.to_thread(_check_upload, data, field.filename or "upload.yaml", kind,
                                               self.feed.config_dir)
        name = field.filename if isinstance(field, web.FileField) else ""
        await self._audit(s.user, "console", "config_check", str(name)[:200], "",
                          ActionResult(Outcome.DRY_RUN, ("valid" if ok else "invalid") + ": " + text[:300]),
                          uuid.uuid4().hex)
        body = pages.config_page(redact(self.feed.running_config), s.csrf, text, ok)
        return self._page(request, "Configuration", body, "/config", "config")

    # -- login ---------------------------------------------------------------------------------
    async def _login_form(self, request: web.Request) -> web.StreamResponse:
        if not self.users:
            raise web.HTTPSeeOther("/")
        return web.Response(text=pages.login_page(), content_type="text/html")

    async def _login(self, request: web.Request) -> web.StreamResponse:
        if not self.users:
            raise web.HTTPSeeOther("/")
        form = await request.post()
        name = str(form.get("user", ""))[:64]
        password = str(form.get("password", ""))[:256]
        user = self.users.get(name)
        assert self._login_lock is not None
        async with self._login_lock:  # one check at a time, then a pause: a flood cannot eat the box
            t0 = time.perf_counter()
            # An unknown user costs the same as a wrong password (no timing oracle for user names).
            ok = await asyncio.to_thread(verify_password, password, user.password_hash if user else _DUMMY_HASH)
            await asyncio.sleep((time.perf_counter() - t0) * LOGIN_PAUSE_FACTOR)
        if user is None or not ok:
            self.counters.login_failures += 1
            log.warning("console: failed login for %r from %s", name, request.remote)
            now = time.monotonic()
            if len(self._refused_audits) < REFUSED_LOGIN_AUDITS_PER_MIN or now - self._refused_audits[0] > 60:
                self._refused_audits.append(now)
                await self._audit(name or "(none)", "console", "login", name, "",
                                  ActionResult(Outcome.REFUSED, f"wrong user or password from {request.remote}"),
                                  uuid.uuid4().hex)
            return web.Response(status=401, text=pages.login_page("Wrong user or password."), content_type="text/html")
        self.sessions.end(request.cookies.get(COOKIE))  # a new token at login (no session fixation)
        session = self.sessions.create(user.name, user.role)
        self.counters.logins += 1
        await self._audit(user.name, "console", "login", user.name, "",
                          ActionResult(Outcome.APPLIED, f"role {user.role.value} from {request.remote}"),
                          uuid.uuid4().hex)
        resp = _redirect("/")
        self._set_cookie(resp, session)
        return resp

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        s: Session = request[SESSION]
        self.sessions.end(s.token)
        if not s.anonymous:
            await self._audit(s.user, "console", "logout", s.user, "", ActionResult(Outcome.APPLIED), uuid.uuid4().hex)
        resp = _redirect("/login" if self.users else "/")
        resp.del_cookie(COOKIE, path="/")
        return resp

    async def _static_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = self._static.get(name)  # a fixed table: no request path ever reaches the file system
        if body is None:
            raise web.HTTPNotFound(text="not found\n")
        return web.Response(body=body, content_type=_STATIC_TYPES[Path(name).suffix],
                            headers={"Cache-Control": "max-age=300"})

    # -- audit -------------------------------------------------------------------------------------
    async def _audit(self, actor: str, service: str, action: str, target: str, reason: str, result: ActionResult,
                     request_id: str) -> None:
        doc = {"type": "audit", "ts_ns": time.time_ns(), "request_id": request_id, "actor": actor,
               "source": "console", "service": service, "action": action, "target": target, "reason": reason,
               "outcome": result.outcome.value, "detail": result.detail}
        log.info("audit: %s %s %s %s -> %s %s", actor, service, action, target, result.outcome.value, result.detail)
        try:
            await self._on_daemon(self.feed.emit_events, [doc])
        except Exception:
            self.counters.audits_failed += 1
            log.exception("console: audit document for %s %s not written", service, action)


def _bound_stream_buffers(request: web.Request) -> None:
    """A fixed kernel send buffer and a small transport buffer for a live stream: the kernel's autotuning
    would otherwise let an unread stream hold megabytes before the write timeout could notice."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF_BYTES)
    with contextlib.suppress(AttributeError, NotImplementedError):
        transport.set_write_buffer_limits(high=STREAM_SNDBUF_BYTES)


def _redirect(location: str) -> web.Response:
    """303 See Other as a plain response (cookies set on it are sent, unlike on a raised HTTPException)."""
    return web.Response(status=303, headers={"Location": location})


def e_role(role: Role) -> str:
    return "operator" if role is Role.OPERATOR else "read-only"


#: A valid hash nobody's password matches: unknown users are checked against it (same cost).
_DUMMY_HASH = ("scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$"
               "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")


def _check_upload(data: bytes, filename: str, kind: str | None, config_dir: Path) -> tuple[str, bool]:
    """``plantwire check`` on an uploaded file, in a scratch folder (nothing is applied). A relative
    ``plant:`` reference of an edge config is resolved against the running config's folder."""
    from plantwire.check import check_file
    from plantwire.configfile import ConfigError, ConfigKind

    safe = "".join(c for c in Path(filename).name if c.isalnum() or c in "._-")[:64] or "upload.yaml"
    tmp = Path(tempfile.mkdtemp(prefix="plantwire-console-check-"))
    try:
        path = tmp / safe
        path.write_bytes(data)
        with contextlib.suppress(Exception):  # a file YAML cannot read is reported by the check itself
            import yaml

            doc = yaml.safe_load(data)
            ref = doc.get("plant") if isinstance(doc, dict) else None
            if isinstance(ref, str) and not Path(ref).is_absolute() and (config_dir / ref).is_file():
                doc["plant"] = str((config_dir / ref).resolve())  # the plant beside the running config
                path.write_text(yaml.safe_dump(doc, sort_keys=False))
        try:
            k = ConfigKind(kind) if kind else None
        except ValueError:
            return f"kind: {kind!r} is not one of {', '.join(ConfigKind)}", False
        try:
            summary = check_file(path, k)
        except ConfigError as exc:
            return exc.report().replace(str(tmp) + "/", ""), False
        except Exception as exc:  # a file that breaks the checker is reported, never raised
            return f"{safe}: cannot be checked: {type(exc).__name__}: {exc}", False
        return summary.replace(str(tmp) + "/", ""), True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
