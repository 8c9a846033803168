"""Console users, password hashes and sessions.

- Passwords are hashed with scrypt (``hashlib``, memory-hard, in the standard library; no new
  dependency): ``scrypt$N$r$p$salt$hash`` with base64 salt and hash. ``plantwire console passwd`` makes
  one. Checking costs ~50 ms of CPU, done off the console's event loop.
- The user table is a secret like the MQTT password (read with :func:`plantwire.tls.read_secret`):
  one user per line ``name role hash``; ``#`` starts a comment.
- A session is a random token in an HttpOnly, SameSite=Strict cookie (Secure under TLS), kept in memory
  (a restart or a reload logs everyone out: acceptable for a local console), with an absolute lifetime
  and an idle timeout, at most ``max_sessions`` (the oldest goes first). Each session carries its own
  CSRF token, which every form and action must echo (synchroniser-token pattern).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from edge.console.settings import Role

__all__ = ["Session", "SessionStore", "UserError", "hash_password", "parse_users", "verify_password"]

_N, _R, _P = 1 << 14, 8, 1
_DKLEN = 32


class UserError(ValueError):
    """A user table line that cannot be used (its line number and why)."""


def hash_password(password: str, *, n: int = _N, r: int = _R, p: int = _P) -> str:
    salt = secrets.token_bytes(16)
    dk = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=_DKLEN)
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(dk).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """True when ``password`` matches ``encoded``; a malformed hash never matches."""
    try:
        algo, n, r, p, salt, dk = encoded.split("$")
        if algo != "scrypt":
            return False
        want = base64.b64decode(dk, validate=True)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt, validate=True), n=int(n), r=int(r),
                             p=int(p), dklen=len(want), maxmem=64 << 20)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    password_hash: str


def parse_users(text: str) -> dict[str, User]:
    """The user table from its secret's text; raises UserError naming the line."""
    users: dict[str, User] = {}
    for i, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 3:
            raise UserError(f"users line {i}: expected 'name role hash', got {len(parts)} fields")
        name, role, pw_hash = parts
        try:
            role_v = Role(role)
        except ValueError:
            raise UserError(f"users line {i}: role {role!r} is not one of {', '.join(Role)}") from None
        if not pw_hash.startswith("scrypt$") or pw_hash.count("$") != 5:
            raise UserError(f"users line {i}: the hash is not one 'plantwire console passwd' makes")
        if name in users:
            raise UserError(f"users line {i}: user {name!r} appears twice")
        users[name] = User(name, role_v, pw_hash)
    return users


@dataclass
class Session:
    token: str
    user: str
    role: Role
    csrf: str
    created_s: float
    seen_s: float
    anonymous: bool = False
    extra: dict[str, str] = field(default_factory=dict)


class SessionStore:
    """In-memory sessions with an absolute lifetime and an idle timeout (monotonic clock)."""

    def __init__(self, ttl_s: float, idle_s: float, max_sessions: int) -> None:
        self.ttl_s = ttl_s
        self.idle_s = idle_s
        self.max_sessions = max_sessions
        self._by_token: OrderedDict[str, Session] = OrderedDict()
        self.expired = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._by_token)

    def create(self, user: str, role: Role, *, anonymous: bool = False) -> Session:
        now = time.monotonic()
        s = Session(secrets.token_urlsafe(32), user, role, secrets.token_urlsafe(32), now, now, anonymous)
        self._by_token[s.token] = s
        while len(self._by_token) > self.max_sessions:
            self._by_token.popitem(last=False)
            self.evicted += 1
        return s

    def get(self, token: str | None) -> Session | None:
        """The live session of ``token`` (its idle clock restarts), or None."""
        if not token:
            return None
        s = self._by_token.get(token)
        if s is None:
            return None
        now = time.monotonic()
        if now - s.created_s > self.ttl_s or now - s.seen_s > self.idle_s:
            del self._by_token[token]
            self.expired += 1
            return None
        s.seen_s = now
        return s

    def alive(self, token: str) -> bool:
        """Whether ``token``'s session is still live, without counting this as activity (a live-value
        stream must not keep an idle session alive for ever)."""
        s = self._by_token.get(token)
        now = time.monotonic()
        return s is not None and now - s.created_s <= self.ttl_s and now - s.seen_s <= self.idle_s

    def end(self, token: str | None) -> None:
        if token:
            self._by_token.pop(token, None)
