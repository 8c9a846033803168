"""The edge console (edge/console): search, the sparkline ring, and security on a real server.

Each test serves the console from the dev plant's signal table with a stand-in daemon loop (the rest of
the daemon is not needed to check what the console serves and refuses); tests/test_console_browser.py
runs it inside a real edge with the simulated plant.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from edge.console.auth import SessionStore, hash_password, parse_users, verify_password
from edge.console.settings import ConsoleSettings, Role
from edge.console.tap import SignalIndex, SignalTap
from plantwire.configfile import load_plant
from plantwire.plant import expand
from plantwire.tls import CertificateAuthority
from tests.console_helpers import DEV_PLANT, Client, served_console

USERS_ENV = "PLANTWIRE_TEST_CONSOLE_USERS"


def test_search_by_name_machine_device_and_quality() -> None:
    table = expand(load_plant(DEV_PLANT))
    idx = SignalIndex(table)
    q = np.zeros(len(table), dtype=np.uint8)
    q[[3, 900]] = 2
    rows, total = idx.search("press03", q, 1000)
    assert total == sum("press03" in s for s in table.ids) > 0
    assert all("press03" in table.ids[r] for r in rows)
    dev = table.devices[int(table.device[0])].name
    rows, total = idx.search(f"device:{dev}", q, 5000)
    assert total == int(np.count_nonzero(table.device == table.device[0]))
    rows, total = idx.search("quality:bad", q, 10)
    assert rows.tolist() == [3, 900] and total == 2
    machine = table.machine_ids[int(table.machine[3])]
    rows, _ = idx.search(f"quality:bad machine:{machine}", q, 10)
    assert rows.tolist() == [3]


def test_sparkline_ring_exists_only_while_watched() -> None:
    tap = SignalTap(4, points=3, linger_s=60.0)
    sig = np.arange(4, dtype=np.uint32)
    ts = np.full(4, 10, dtype=np.int64)
    tap.update(ts, sig, np.ones(4), np.zeros(4, dtype=np.uint8), None)
    assert tap.ring_bytes == 0 and tap.sparklines(sig).values.shape == (4, 0)
    tap.watch()
    for k in range(5):  # more rows than points: the ring keeps the newest 3, oldest first
        tap.update(ts + k, sig, np.full(4, float(k)), np.zeros(4, dtype=np.uint8), None)
    sp = tap.sparklines(np.array([1, 2]))
    assert sp.values.tolist() == [[2.0, 3.0, 4.0], [2.0, 3.0, 4.0]] and sp.ts_ns.tolist() == [12, 13, 14]
    tap._watched_until = time.monotonic() - 1  # the last viewer left longer than linger_s ago
    tap.update(ts, sig, np.ones(4), np.zeros(4, dtype=np.uint8), None)
    assert tap.ring_bytes == 0


def test_passwords_users_and_sessions() -> None:
    h = hash_password("correct horse")
    assert verify_password("correct horse", h) and not verify_password("wrong", h)
    assert not verify_password("x", "scrypt$broken")
    users = parse_users(f"# comment\nann operator {h}\nbob read_only {h}\n")
    assert users["ann"].role is Role.OPERATOR and users["bob"].role is Role.READ_ONLY
    with pytest.raises(ValueError, match="line 1: role 'admin'"):
        parse_users(f"eve admin {h}")
    store = SessionStore(ttl_s=0.05, idle_s=10, max_sessions=2)
    s = store.create("ann", Role.OPERATOR)
    assert store.get(s.token) is s
    time.sleep(0.1)  # past the session's lifetime (the condition, not a synchronisation)
    assert store.get(s.token) is None and store.expired == 1


def test_exposed_console_needs_tls_and_users() -> None:
    with pytest.raises(ValueError, match="needs tls and users_credential or users_env"):
        ConsoleSettings(host="0.0.0.0")


def test_loopback_console_pages_show_what_the_tap_holds(tmp_path: Path) -> None:
    with served_console(tmp_path) as (server, daemon):
        c = Client(server.url)
        status, html = c.get("/")
        assert status == 200 and "1,234" in html and "dev-plc1" in html and 'id="wal">7 records' in html
        assert "Model store not on this gateway" in html
        status, html = c.get("/signals?q=" + daemon.feed.table.ids[42])
        assert status == 200
        row = re.search(r'<tr data-row="42">.*?</tr>', html, re.S)
        assert row is not None and '<td class="num value">42</td>' in row.group(0)
        assert '<td class="num score">0.042</td>' in row.group(0)
        status, html = c.get("/config")
        assert status == 200 and "s3cret" not in html and "MQTT_PW" in html
        # Read-only by default: the local visitor sees alarms but may not act, and the refusal is audited.
        status, html = c.get("/alarms")
        assert status == 200 and daemon.feed.table.ids[5] in html and "Acknowledge" not in html
        aid = re.search(r'data-alarm="([^"]+)"', html).group(1)  # type: ignore[union-attr]
        status, _ = c.post("/alarms/action", {"csrf": c.csrf(), "action": "ack", "target": aid})
        assert status == 403
        assert daemon.emitted[-1]["outcome"] == "refused" and daemon.emitted[-1]["source"] == "console"
        # DNS rebinding: a name other than a loopback one gets nothing.
        status, _ = c.get("/", headers={"Host": "evil.example:80"})
        assert status == 421


def test_security_login_csrf_traversal_and_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pw = "operator-pass-1"
    monkeypatch.setenv(USERS_ENV, f"op operator {hash_password(pw)}\nviewer read_only {hash_password(pw)}\n")
    with served_console(tmp_path, users_env=USERS_ENV, max_request_bytes=64 * 1024) as (server, daemon):
        anon = Client(server.url)
        # No login: pages redirect to the login form, the API and actions say 401.
        status, html = anon.get("/")
        assert status == 200 and 'action="/login"' in html
        assert anon.get("/api/stream?rows=1")[0] == 401
        assert anon.post("/alarms/action", {"action": "ack", "target": "x"})[0] == 401
        # A wrong password (and an unknown user) is refused and audited.
        status, html = anon.post("/login", {"user": "op", "password": "nope"})
        assert status == 401 and "Wrong user or password" in html
        assert anon.post("/login", {"user": "nobody", "password": pw})[0] == 401
        assert anon.post("/login", {"user": "op", "password": pw}, headers={"Origin": "http://evil.example"})[0] == 403
        assert [d["outcome"] for d in daemon.emitted if d["action"] == "login"] == ["refused", "refused"]
        assert anon.get("/signals")[0] == 200 and 'action="/login"' in anon.get("/signals")[1]
        # The operator logs in, then forged actions fail: no token, a wrong token, another origin.
        op = Client(server.url)
        status, html = op.post("/login", {"user": "op", "password": pw})
        assert status == 200 and "op (operator)" in html, html[:500]
        alarms = op.get("/alarms")[1]
        aid = re.search(r'data-alarm="([^"]+)"', alarms).group(1)  # type: ignore[union-attr]
        token = op.csrf("/alarms")
        assert op.post("/alarms/action", {"action": "ack", "target": aid})[0] == 403
        assert op.post("/alarms/action", {"csrf": token[:-2] + "xx", "action": "ack", "target": aid})[0] == 403
        assert op.post("/alarms/action", {"csrf": token, "action": "ack", "target": aid},
                       headers={"Origin": "http://evil.example"})[0] == 403
        assert server.counters.csrf_refused == 4  # with the cross-origin login above
        assert not [d for d in daemon.emitted if d["service"] == "alarms"], "a forged action reached the alarms"
        # A real acknowledge: applied and audited with the operator's name.
        status, html = op.post("/alarms/action", {"csrf": token, "action": "ack", "target": aid, "reason": "seen"})
        assert status == 200 and "ack " + aid + ": applied" in html
        audit = [d for d in daemon.emitted if d["service"] == "alarms"][-1]
        assert (audit["type"], audit["actor"], audit["action"], audit["target"], audit["outcome"], audit["reason"]) \
            == ("audit", "op", "ack", aid, "applied", "seen")
        # A read-only user may look but not act.
        viewer = Client(server.url)
        assert viewer.post("/login", {"user": "viewer", "password": pw})[0] == 200
        assert "Acknowledge" not in viewer.get("/alarms")[1] and "Shelve" not in viewer.get("/alarms")[1]
        assert viewer.post("/alarms/action", {"csrf": viewer.csrf(), "action": "shelve", "target": aid,
                                              "shelve_s": "900"})[0] == 403
        # Static files come from a fixed table: no traversal, encoded or not.
        assert op.get("/static/app.js")[0] == 200
        for path in ("/static/../server.py", "/static/..%2fserver.py", "/static/%2e%2e%2fserver.py",
                     "/static/..%2f..%2fconfig.py", "/static//etc/passwd", "/static/settings.py"):
            status, body = op.get(path)
            assert status == 404 and "import" not in body, path
        # A huge request is refused before it is read whole, and the console carries on.
        big = b"csrf=" + token.encode() + b"&reason=" + b"x" * (200 * 1024)
        try:
            status, _ = op.post("/alarms/action", big,
                                headers={"Content-Type": "application/x-www-form-urlencoded"})
        except ConnectionError:  # the server may close the connection before reading the whole body
            status = 413
        assert status == 413
        assert op.get("/")[0] == 200
        # A header beyond the server's line limit is refused too.
        try:
            status, _ = op.get("/", headers={"X-Padding": "a" * 100_000})
        except ConnectionError:
            status = 400
        assert status in (400, 431)
        assert op.get("/")[0] == 200
        # Logging out ends the session.
        assert op.post("/logout", {"csrf": op.csrf()})[0] == 200
        assert op.get("/api/stream?rows=1")[0] == 401


def test_config_upload_is_checked_not_applied(tmp_path: Path) -> None:
    good = (DEV_PLANT.parent / "edge.yaml").read_bytes()
    bad = b"kind: edge\ngateway_id: gw\nplant: plant.yaml\npublish: {batch_interval_ms: 1}\n"
    with served_console(tmp_path) as (server, daemon):
        c = Client(server.url)
        for data, want in ((good, "valid"), (bad, "invalid")):
            boundary = "plantwireboundary"
            body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{c.csrf('/config')}\r\n"
                    f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"edge.yaml\"\r\n"
                    "Content-Type: application/yaml\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
            status, html = c.post("/config/check", body,
                                  headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
            assert status == 200 and f"Check result: {want}" in html, html[-1500:]
        assert "publish.batch_interval_ms" in html
        checks = [d for d in daemon.emitted if d["action"] == "config_check"]
        assert [(d["outcome"], d["target"], d["detail"].split(":")[0]) for d in checks] == [
            ("dry_run", "edge.yaml", "valid"), ("dry_run", "edge.yaml", "invalid")]


def test_tls_console_serves_https_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = CertificateAuthority(tmp_path / "ca")
    cert = ca.issue("console", server=True, hosts=("127.0.0.1",))
    monkeypatch.setenv(USERS_ENV, f"op operator {hash_password('operator-pass-1')}")
    tls = {"cert_file": cert.cert, "key_file": cert.key}
    with served_console(tmp_path, users_env=USERS_ENV, tls=tls) as (server, _):
        assert server.url.startswith("https://")
        c = Client(server.url, ca_file=ca.cert_path)
        status, html = c.get("/")
        assert status == 200 and 'action="/login"' in html
        assert c.post("/login", {"user": "op", "password": "operator-pass-1"})[0] == 200
        cookie = next(iter(c.jar))
        assert cookie.secure and cookie.has_nonstandard_attr("HttpOnly")
        with pytest.raises(ConnectionError):
            Client(server.url.replace("https", "http")).get("/")


def test_a_failing_or_hanging_page_never_stalls_the_daemon_loop(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from edge.console import pages

    with served_console(tmp_path) as (server, daemon):
        c = Client(server.url)
        monkeypatch.setattr(pages, "overview_fragment", lambda *a: 1 / 0)
        status, _ = c.get("/")
        assert status == 500 and server.counters.errors == 1
        assert c.get("/signals")[0] == 200  # the other pages carry on
        # A page that blocks the console's thread: the daemon's loop still answers at once.
        release = threading.Event()
        monkeypatch.setattr(pages, "overview_fragment", lambda *a: release.wait(30) and "")
        hung = threading.Thread(target=c.get, args=("/",), daemon=True)
        hung.start()
        try:
            answered = threading.Event()
            t0 = time.monotonic()
            daemon.loop.call_soon_threadsafe(answered.set)
            assert answered.wait(5) and time.monotonic() - t0 < 1.0
        finally:
            release.set()
            hung.join(30)


def test_live_streams_are_bounded_per_console(tmp_path: Path) -> None:
    import http.client

    with served_console(tmp_path, max_clients=2) as (server, _):
        c = Client(server.url)
        cookie = "; ".join(f"{k.name}={k.value}" for k in [*c.jar]) if c.get("/")[0] == 200 else ""
        conns = []
        for _ in range(2):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            conn.request("GET", "/api/stream?rows=1,2,3", headers={"Cookie": cookie})
            resp = conn.getresponse()
            assert resp.status == 200 and resp.readline().startswith(b"data: {")
            conns.append(conn)
        assert c.get("/api/stream?rows=1")[0] == 503 and server.counters.streams_refused == 1
        assert c.get("/api/stream?rows=99999")[0] == 400
        for conn in conns:
            conn.close()


class _Incidents:
    """Stands in for edge/alarms' AlarmService (its snapshot() and command() contract), recording commands."""

    def __init__(self) -> None:
        self.commands: list[tuple[dict[str, object], str]] = []
        self.acked = False

    def snapshot(self) -> list[dict[str, object]]:
        return [{"id": "gw-test-inc-1", "machine": "line1.press01", "area": "line1", "priority": "critical",
                 "active": True, "acked": self.acked, "shelved_until_ns": None, "out_of_service": False,
                 "suppressed_by": None, "kinds": ["machine"], "signals": ["line1.press01.oil_temp"]}]

    def command(self, payload: bytes, source: str = "mqtt") -> dict[str, object]:
        import json

        cmd = json.loads(payload)
        self.commands.append((cmd, source))
        self.acked = True
        return {"id": cmd["id"], "service": "alarms", "action": cmd["action"], "outcome": "applied", "detail": "ok"}


def test_incidents_plug_in_and_their_commands_carry_the_operator(tmp_path: Path) -> None:
    from edge.console import IncidentBoard

    incidents = _Incidents()
    with served_console(tmp_path, loopback_role="operator") as (server, daemon):
        daemon.feed.hooks.alarms = IncidentBoard(incidents)
        c = Client(server.url)
        status, html = c.get("/alarms")
        assert status == 200 and "gw-test-inc-1" in html and "line1.press01.oil_temp" in html
        assert "Incidents from the alarm layer" in html
        status, html = c.post("/alarms/action", {"csrf": c.csrf("/alarms"), "action": "ack", "target": "gw-test-inc-1",
                                                 "reason": "on it"})
        assert status == 200 and "applied" in html
        (cmd, source), = incidents.commands
        assert source == "console" and (cmd["action"], cmd["incident"], cmd["actor"], cmd["reason"]) == (
            "ack", "gw-test-inc-1", "local", "on it")
        assert isinstance(cmd["id"], str) and isinstance(cmd["ts_ns"], int)
        # The alarm layer audits its own commands: the console adds no second audit document.
        assert not [d for d in daemon.emitted if d.get("service") == "alarms"]


@pytest.mark.slow
def test_a_tab_that_stops_reading_is_dropped_and_counted(tmp_path: Path) -> None:
    """A live stream whose reader never reads: once the socket buffers are full, the stream is dropped
    after stream_write_timeout_s (counted), instead of queueing messages in the daemon."""
    import socket

    with served_console(tmp_path, stream_interval_s=0.1, stream_write_timeout_s=1.0) as (server, _):
        c = Client(server.url)
        assert c.get("/")[0] == 200
        cookie = "; ".join(f"{k.name}={k.value}" for k in c.jar)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # before connect: a small window
        s.connect(("127.0.0.1", server.port))
        rows = ",".join(str(r) for r in range(100))
        s.sendall(f"GET /api/stream?rows={rows} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n\r\n".encode())
        try:
            deadline = time.monotonic() + 120
            while server.counters.streams_dropped == 0:
                assert time.monotonic() < deadline, "a stream nobody reads was never dropped"
                time.sleep(0.2)
            assert server.counters.streams == 0
        finally:
            s.close()


def test_models_and_agents_show_on_the_overview_once_connected(tmp_path: Path) -> None:
    from edge.console import agents_hook, models_hook

    health = {"models": {"machine_pca/press": {"active": "20261203T1000-a1", "shadow": "20261203T1100-b2",
                                               "previous": None}}, "model_refusals_total": 0}
    summary = {"energy": {"enabled": True, "reason": None, "samples_in": 1200, "samples_out": 40},
               "leak_test": {"enabled": False, "reason": "raised ValueError at frame 12", "samples_in": 5,
                             "samples_out": 0}}
    with served_console(tmp_path) as (server, daemon):
        daemon.feed.hooks.models = models_hook(lambda: health)
        daemon.feed.hooks.agents = agents_hook(lambda: summary)
        status, html = Client(server.url).get("/")
        assert status == 200
        assert "<td>machine_pca/press</td><td>20261203T1000-a1</td><td>20261203T1100-b2</td>" in html
        assert "<td>energy</td><td>running</td><td>1,200 samples in, 40 out</td>" in html
        assert "<td>leak_test</td><td>disabled</td><td>raised ValueError at frame 12</td>" in html


def test_a_reload_with_a_missing_console_secret_is_rejected(tmp_path: Path) -> None:
    """SIGHUP checks the console's user table before the running gateway is stopped (as for the broker's key)."""
    from edge.app import _load_and_check
    from plantwire.configfile import ConfigError

    cfg = tmp_path / "edge.yaml"
    cfg.write_text(f"kind: edge\ngateway_id: gw\nplant: {DEV_PLANT}\n"
                   f"console: {{host: 127.0.0.1, port: 0, users_env: {USERS_ENV}_MISSING}}\n")
    with pytest.raises(ConfigError, match=r"console: secret not found; looked in \$"):
        _load_and_check(cfg)


def test_passwd_command_prints_a_user_line_the_console_accepts(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    import io

    from plantwire.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password\n"))
    assert main(["console", "passwd", "ann", "--role", "operator", "--stdin"]) == 0
    line = capsys.readouterr().out.strip()
    user = parse_users(line)["ann"]
    assert user.role is Role.OPERATOR and verify_password("a-long-password", user.password_hash)
    assert "a-long-password" not in line
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["console", "passwd", "ann", "--stdin"]) == 2
    assert main(["console", "nonsense"]) == 2
