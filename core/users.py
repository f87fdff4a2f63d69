"""Named users with roles, passwords, Data Services tokens and electronic signatures.

Single-user mode is the default: while the ``users`` table has no enabled user, nobody logs in,
actions are recorded as the operating-system user and no signature is asked for. Adding the first
user (``labconsole users add NAME --role admin``) turns on named users.

Passwords are kept as scrypt hashes (``hashlib.scrypt``: standard library, OpenSSL) with a random
16-byte salt per password and the cost parameters stored with the hash
(``scrypt$N$r$p$salt$hash``, base64), so raising the cost later keeps old hashes readable. The
default N=2^17, r=8, p=1 (128 MiB, about 0.5 s on a 2-core PC) is the minimum OWASP's password
storage guidance gives for scrypt. Comparison is constant-time (:func:`hmac.compare_digest`).
Checking a password costs that half second of CPU and memory: call :func:`authenticate` and
:func:`sign` off the event loop (their ``a…`` variants do).

Data Services tokens are 32 random bytes; only their SHA-256 is stored (a token has 256 bits of
entropy, so a fast hash is enough and a request costs one hash and one indexed lookup).

Electronic signatures (21 CFR Part 11 style): :func:`sign` checks the user's password again and
returns a :class:`Signature` bound to one action and target for :data:`SIGNATURE_TTL` seconds. The
runtime refuses an action that ``[SIGNATURES] require`` lists without a valid signature, and the
signature is written in the same transaction as the action: an audit row whose
``details.signature`` is ``{user, role, meaning, at, action}``, part of the hash chain.
"""

from __future__ import annotations

import asyncio
import base64
import getpass
import hashlib
import hmac
import json
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.audit_chain import SIGNING
from core.errors import ConfigError, InputError, NotFoundError, StateError
from core.inifile import read_section

if TYPE_CHECKING:
    from core.store import Store

ROLES = ("viewer", "operator", "supervisor", "admin")
"""From least to most allowed: each role may do what the roles before it may (:data:`PERMISSIONS`)."""
MEANINGS = ("performed", "approved", "reviewed", "verified")
"""What a signature means (21 CFR 11.50: the meaning is shown and recorded with the signature)."""

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1

SCRYPT_MAXMEM = 256 * 1024 * 1024
MIN_PASSWORD = 8
SIGNATURE_TTL = 300.0
"""Seconds a signature stays usable for its action (the dialog, then the action)."""
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")

SIGNABLE = ("cancel", "skip", "retry", "recover", "pause", "resume", "reprioritise",
            "template publish", "out of service", "release", "enable", "disable", "reconnect")
"""Actions ``[SIGNATURES] require`` may name."""


def os_user() -> str:
    """The operating-system user, recorded as *who* for operator actions in single-user mode."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user database in some containers
        return "operator"


PERMISSIONS: dict[str, str] = {
    **dict.fromkeys(("start run", "cancel", "retry", "recover", "skip", "pause", "resume", "reprioritise",
                     "start now", "send to", "answer", "notify again"), "operator"),
    **dict.fromkeys(("template publish", "out of service", "release", "enable", "disable", "reconnect",
                     "playbook", "schedules"), "supervisor"),
    "users": "admin",
}
"""The least role each action needs while named users are on. Reading (orders, runs, history,
audit) needs no more than ``viewer``."""


class AuthenticationError(StateError):
    """A wrong user name or password, or a disabled user (which one is not said to the caller)."""


class PermissionDenied(StateError):
    """The signed-in user's role does not allow the action (the message names both)."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    enabled: bool
    created: float
    created_by: str


# --------------------------------------------------------------------------- passwords


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` with a fresh 16-byte salt."""
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                         maxmem=SCRYPT_MAXMEM, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(key).decode()}"


def check_password(password: str, stored: str) -> bool:
    """Constant-time check of ``password`` against a :func:`hash_password` value."""
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key)
        got = hashlib.scrypt(password.encode("utf-8", "surrogatepass"), salt=base64.b64decode(salt),
                             n=int(n), r=int(r), p=int(p), maxmem=SCRYPT_MAXMEM, dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


_DUMMY_HASH: str | None = None


def _burn(password: str) -> None:
    """Spend the time of one password check, so an unknown user answers as slowly as a known one."""
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password(secrets.token_hex(8))
    check_password(password, _DUMMY_HASH)


def check_new_password(name: str, password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InputError.at(f"must have at least {MIN_PASSWORD} characters", field="password")
    if password.strip().lower() == name.lower():
        raise InputError.at("must not be the user name", field="password")
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError.at("is not valid text", field="password") from None


def check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise InputError.at(f"{name!r} is not a user name (1-64 letters, digits, '.', '_', '@', '-'; "
                            "starting with a letter or digit)", field="name")


# --------------------------------------------------------------------------- users


_USER_SQL = "SELECT name, role, enabled, created, created_by FROM users"


def _user(row: tuple[Any, ...]) -> User:
    return User(row[0], row[1], bool(row[2]), row[3], row[4])


def has_users(store: Store) -> bool:
    """True when named users are on (at least one enabled user)."""
    return store.read_sync(lambda c: c.execute(
        "SELECT 1 FROM users WHERE enabled = 1 LIMIT 1").fetchone()) is not None


def list_users(store: Store) -> list[User]:
    return [_user(r) for r in store.read_sync(lambda c: c.execute(_USER_SQL + " ORDER BY name").fetchall())]


def get_user(store: Store, name: str) -> User | None:
    row = store.read_sync(lambda c: c.execute(_USER_SQL + " WHERE name = ?", (name,)).fetchone())
    return _user(row) if row else None


def _require(conn: sqlite3.Connection, name: str) -> str:
    row = conn.execute("SELECT name FROM users WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise NotFoundError(f"no user '{name}'")
    found: str = row[0]
    return found


def add_user(store: Store, name: str, role: str, password: str, *, who: str) -> User:
    """Add a user (audited as ``user add``); the password is hashed here, before the write."""
    authorize(store, who, "users")
    check_name(name)
    if role not in ROLES:
        raise InputError.at(f"{role!r} is not a role (one of: {', '.join(ROLES)})", field="role")
    check_new_password(name, password)
    hashed = hash_password(password)
    now = store.now().timestamp()
    audit = store.audit_op(who, "user add", name, None, {"role": role})

    def op(conn: sqlite3.Connection) -> None:
        if conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
            raise StateError(f"user '{name}' already exists (users passwd/enable change it)")
        conn.execute("INSERT INTO users (name, role, password_hash, enabled, created, created_by) "
                     "VALUES (?,?,?,1,?,?)", (name, role, hashed, now, who))
        audit(conn)

    store.write_sync(op)
    user = get_user(store, name)
    assert user is not None
    return user


def set_enabled(store: Store, name: str, enabled: bool, *, who: str) -> None:
    """Enable or disable a user (kept, so the audit trail keeps naming them); disabling also revokes
    the user's tokens. The last enabled admin cannot be disabled while other users remain."""
    authorize(store, who, "users")
    now = store.now().timestamp()

    def op(conn: sqlite3.Connection) -> None:
        real = _require(conn, name)
        if not enabled:
            admins = conn.execute("SELECT count(*) FROM users WHERE enabled = 1 AND role = 'admin' "
                                  "AND name != ?", (real,)).fetchone()[0]
            others = conn.execute("SELECT count(*) FROM users WHERE enabled = 1 AND name != ?",
                                  (real,)).fetchone()[0]
            role = conn.execute("SELECT role FROM users WHERE name = ?", (real,)).fetchone()[0]
            if role == "admin" and admins == 0 and others > 0:
                raise StateError(f"'{real}' is the last enabled admin; make another admin first")
            conn.execute("UPDATE user_tokens SET revoked = 1 WHERE user_name = ?", (real,))
        conn.execute("UPDATE users SET enabled = ?, updated = ? WHERE name = ?", (int(enabled), now, real))
        store.audit_op(who, "user enable" if enabled else "user disable", real)(conn)

    store.write_sync(op)


def set_password(store: Store, name: str, password: str, *, who: str) -> None:
    if who.lower() != name.lower():  # everyone may change their own password
        authorize(store, who, "users")
    check_new_password(name, password)
    hashed = hash_password(password)
    now = store.now().timestamp()

    def op(conn: sqlite3.Connection) -> None:
        real = _require(conn, name)
        conn.execute("UPDATE users SET password_hash = ?, updated = ? WHERE name = ?", (hashed, now, real))
        store.audit_op(who, "user passwd", real)(conn)

    store.write_sync(op)


def authenticate(store: Store, name: str, password: str, *, purpose: str = "login") -> User:
    """The enabled user whose password this is; else :class:`AuthenticationError` (and an audit
    row ``<purpose> refused`` naming the user name given). Blocks for one scrypt: not on the loop."""
    row = store.read_sync(lambda c: c.execute(
        "SELECT name, role, enabled, created, created_by, password_hash FROM users WHERE name = ?",
        (name,)).fetchone())
    if row is None:
        _burn(password)
        ok = False
    else:
        ok = check_password(password, row[5]) and bool(row[2])
    if not ok:
        store.write_sync(store.audit_op(name[:64] or "?", f"{purpose} refused", None,
                                        "wrong user name or password, or user disabled"))
        raise AuthenticationError(f"{purpose}: wrong user name or password (or the user is disabled)")
    return _user(row[:5])


async def aauthenticate(store: Store, name: str, password: str, *, purpose: str = "login") -> User:
    return await asyncio.to_thread(authenticate, store, name, password, purpose=purpose)


# --------------------------------------------------------------------------- roles


def required_role(action: str) -> str:
    """The least role allowed to do ``action`` (a key of :data:`PERMISSIONS`)."""
    try:
        return PERMISSIONS[action]
    except KeyError:
        raise ValueError(f"{action!r} is not an action with a role (one of: {', '.join(PERMISSIONS)})") from None


def may(role: str, action: str) -> bool:
    """Whether ``role`` is allowed ``action``."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(required_role(action))


def refusal(user: User, action: str) -> str | None:
    """Why ``user`` may not do ``action`` (None: allowed), in words the operator sees."""
    if not user.enabled:
        return f"{action}: user '{user.name}' is disabled"
    if may(user.role, action):
        return None
    need = required_role(action)
    return (f"{action}: '{user.name}' is signed in as {user.role}; {action} needs the {need} role"
            f"{'' if need == 'admin' else ' or above'}")


def authorize(store: Store, who: str | None, action: str) -> None:
    """Raise :class:`PermissionDenied` naming the role and the action unless ``who`` may do ``action``.

    Only people are checked: in single-user mode nothing is, and a ``who`` that is no user name
    (the console's own actors — schedules, playbook rules, Data Services pickup — and the command
    line without ``--user``) acts as before. The window always acts as the signed-in user."""
    required_role(action)  # an unknown action is a programming error, even in single-user mode
    if who is None or not has_users(store):
        return
    user = get_user(store, who)
    if user is None:
        return
    reason = refusal(user, action)
    if reason is not None:
        raise PermissionDenied(reason)


async def record_login(store: Store, user: User, action: str = "login") -> None:
    await store.audit(user.name, action, None, None, {"role": user.role})


# --------------------------------------------------------------------------- tokens


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def issue_token(store: Store, name: str, *, who: str) -> str:
    """A new bearer token for ``name`` (returned once; only its SHA-256 is stored)."""
    authorize(store, who, "users")
    token = "lcu_" + secrets.token_urlsafe(32)
    digest = token_hash(token)
    now = store.now().timestamp()

    def op(conn: sqlite3.Connection) -> None:
        real = _require(conn, name)
        if not conn.execute("SELECT enabled FROM users WHERE name = ?", (real,)).fetchone()[0]:
            raise StateError(f"user '{real}' is disabled")
        conn.execute("INSERT INTO user_tokens (token_hash, user_name, created) VALUES (?,?,?)",
                     (digest, real, now))
        store.audit_op(who, "user token issued", real, None, {"token_sha256": digest[:12]})(conn)

    store.write_sync(op)
    return token


def revoke_tokens(store: Store, name: str, *, who: str) -> int:
    authorize(store, who, "users")
    def op(conn: sqlite3.Connection) -> int:
        real = _require(conn, name)
        n = conn.execute("UPDATE user_tokens SET revoked = 1 WHERE user_name = ? AND revoked = 0",
                         (real,)).rowcount
        store.audit_op(who, "user tokens revoked", real, None, {"tokens": n})(conn)
        return n

    count: int = store.write_sync(op)
    return count


def has_user_tokens(conn: sqlite3.Connection) -> bool:
    """True when some enabled user holds a token that is not revoked."""
    return conn.execute("SELECT 1 FROM user_tokens t JOIN users u ON u.name = t.user_name "
                        "WHERE t.revoked = 0 AND u.enabled = 1 LIMIT 1").fetchone() is not None


def user_for_token(conn: sqlite3.Connection, token: str) -> str | None:
    """The enabled user a bearer token belongs to, or None (one hash, one indexed lookup)."""
    row = conn.execute("SELECT u.name FROM user_tokens t JOIN users u ON u.name = t.user_name "
                       "WHERE t.token_hash = ? AND t.revoked = 0 AND u.enabled = 1",
                       (token_hash(token),)).fetchone()
    return row[0] if row else None


# --------------------------------------------------------------------------- signatures

_SEAL_KEY = secrets.token_bytes(32)
"""Per-process key sealing the signatures :func:`sign` made, so a record built by hand is refused."""


@dataclass(frozen=True)
class Signature:
    """A checked electronic signature for one action on one target (make it with :func:`sign`)."""

    user: str
    role: str
    meaning: str
    action: str
    target: str | None
    at: float
    """When it was signed, on the store's clock (what the audit row records)."""
    issued: float
    """When it was signed, on this process's monotonic clock (what the time limit is measured on)."""
    seal: str

    def record(self) -> dict[str, Any]:
        """What the audit row keeps: ``details.signature``."""
        return {"user": self.user, "role": self.role, "meaning": self.meaning, "at": self.at,
                "action": self.action}

    def check(self, action: str, target: str | None) -> None:
        """Raise :class:`StateError` naming ``action`` unless this signature is genuine, for this
        action and target, and made less than :data:`SIGNATURE_TTL` seconds ago (real time)."""
        if not hmac.compare_digest(self.seal, _seal(self.user, self.role, self.meaning, self.action, self.target,
                                                    self.at, self.issued)):
            raise StateError(f"{action}: the electronic signature is not valid (not made by sign())")
        if self.action != action:
            raise StateError(f"{action}: the electronic signature was given for '{self.action}'")
        if self.target is not None and self.target != target:
            raise StateError(f"{action}: the electronic signature was given for {self.target}, not {target}")
        if not 0 <= time.monotonic() - self.issued <= SIGNATURE_TTL:
            raise StateError(f"{action}: the electronic signature has expired "
                             f"(older than {SIGNATURE_TTL:g} s); sign again")


def _seal(user: str, role: str, meaning: str, action: str, target: str | None, at: float, issued: float) -> str:
    msg = json.dumps([user, role, meaning, action, target, at, issued], ensure_ascii=True).encode()
    return hmac.new(_SEAL_KEY, msg, hashlib.sha256).hexdigest()


def sign(store: Store, user: str, password: str, meaning: str, action: str,
         target: str | None = None) -> Signature:
    """Check ``user``'s password again and return a :class:`Signature` for ``action`` on ``target``
    (None: any target, e.g. a bulk action). A refused signature is audited (``signature refused``).
    Blocks for one scrypt: call :func:`asign` from the event loop."""
    if meaning not in MEANINGS:
        raise InputError.at(f"{meaning!r} is not a signature meaning (one of: {', '.join(MEANINGS)})",
                            field="meaning")
    if action not in SIGNABLE:
        raise InputError.at(f"{action!r} is not an action that can be signed (one of: {', '.join(SIGNABLE)})",
                            field="action")
    who = authenticate(store, user, password, purpose="signature")
    at, issued = store.now().timestamp(), time.monotonic()
    return Signature(who.name, who.role, meaning, action, target, at, issued,
                     _seal(who.name, who.role, meaning, action, target, at, issued))


async def asign(store: Store, user: str, password: str, meaning: str, action: str,
                target: str | None = None) -> Signature:
    return await asyncio.to_thread(sign, store, user, password, meaning, action, target)


@contextmanager
def signing(signature: Signature | None, audit_actions: frozenset[str] | set[str],
            target: str | None) -> Iterator[None]:
    """Within this block, audit rows of ``audit_actions`` on ``target`` carry the signature."""
    if signature is None:
        yield
        return
    token = SIGNING.set((frozenset(audit_actions), target, signature.record()))
    try:
        yield
    finally:
        SIGNING.reset(token)


# --------------------------------------------------------------------------- policy

CONFIG_SECTION = "SIGNATURES"


@dataclass(frozen=True)
class SignaturePolicy:
    """Which actions need an electronic signature (``[SIGNATURES] require`` of config.ini). Applies
    only while named users are on: single-user mode has nobody to sign."""

    require: frozenset[str] = frozenset()
    source: str = "default"

    def needs(self, action: str) -> bool:
        return action in self.require

    @classmethod
    def from_ini(cls, path: Path | None) -> SignaturePolicy:
        found = read_section(path, CONFIG_SECTION)
        if found is None:
            return cls()
        section, text = found
        raw = section.get("require", fallback="")
        names = [" ".join(n.replace("_", " ").split()).lower() for n in raw.split(",")]
        names = [n for n in names if n]
        unknown = [n for n in names if n not in SIGNABLE]
        if unknown:
            line = next((i for i, t in enumerate(text.splitlines(), 1) if t.strip().lower().startswith("require")),
                        None)
            raise ConfigError.at(f"unknown action(s) {', '.join(map(repr, unknown))} (known: "
                                 f"{', '.join(SIGNABLE)})", file=path, field=f"{CONFIG_SECTION}.require",
                                 line=line)
        return cls(frozenset(names), str(path))


def idle_lock_minutes(path: Path | None, default: float = 15.0) -> float:
    """``[USERS] idle_lock_minutes`` of config.ini (0: never lock)."""
    found = read_section(path, "USERS")
    raw = found[0].get("idle_lock_minutes", fallback="").strip() if found else ""
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 24 * 60:
        raise ConfigError.at(f"idle_lock_minutes {raw!r} is not a number of minutes from 0 to 1440",
                             file=path, field="USERS.idle_lock_minutes")
    return value
