"""Passwords, tokens and the identity behind a request.

Passwords are hashed with argon2id (off the event loop: hashing is deliberately slow) in a pool
of its own with a few threads (`PASSWORD_HASH_THREADS`): each hash takes 64 MiB while it runs,
so a burst of sign-ins waits its turn instead of exhausting the dyno's memory, and past
`PASSWORD_HASH_QUEUE` waiting ones is refused (SERVICE_UNAVAILABLE, retry) instead of queueing
for longer than a client waits.

Tokens are random and only their SHA-256 digest is stored, so a database leak yields none.

A token expires (`TOKEN_TTL_SECONDS` after it was issued or last renewed) and is refused from
then on exactly as a revoked one is: every lookup filters on `expires_at`. Use renews it
(sliding expiry: a chat someone opens every week never signs them out), but at most once per
`TOKEN_RENEW_SECONDS`, and only when the token is read from the database (a viewer cache miss,
a WebSocket's or stream's check): no request costs a write. An SSE cookie session (prefixed
`sse.`, transports/http_streams.py) is a token of its own, made from a bearer token, expiring with
it and never renewed by its own use; it is never accepted as a bearer token.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from core.errors import ServiceUnavailable
from db.records import now

T = TypeVar("T")

_hasher = PasswordHasher()
# Verified against when the email is unknown, so both failures take the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class Viewer:
    """The signed-in user of a request or WebSocket connection, and the token it used."""

    user: dict
    token_hash: str
    # When the token expires (Unix time), as last read: a cache must not trust it past then.
    expires_at: float = math.inf

    @property
    def id(self) -> int:
        return int(self.user["id"])


def normalize_email(email: str) -> str:
    return email.strip().lower()


def email_hash(email: str) -> str:
    return hashlib.sha256(normalize_email(email).encode()).hexdigest()


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


BUSY = "Too many sign-ins at once; retry in a moment."


class HashingPool:
    """At most `threads` hashes at once in this process and `queue` more waiting. Its threads
    start with the first hash (never at import)."""

    def __init__(self, threads: int, queue: int) -> None:
        self.threads, self.queue = threads, queue
        self._executor: ThreadPoolExecutor | None = None
        self._waiting = 0  # submitted and not done: running or queued

    async def run(self, function: Callable[[], T]) -> T:
        if self._waiting >= self.threads + self.queue:
            raise ServiceUnavailable(BUSY, retryAfter=1)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="argon2")
        self._waiting += 1
        try:
            # Cancelled while it waits (the client went away): concurrent.futures drops it unrun.
            return await asyncio.get_running_loop().run_in_executor(self._executor, function)
        finally:
            self._waiting -= 1


_pool = HashingPool(threads=2, queue=64)


def configure_hashing(threads: int, queue: int) -> None:
    """The pool's size, from the settings (by the composition root, before anything is hashed)."""
    global _pool
    _pool = HashingPool(threads, queue)


async def hash_password(password: str) -> str:
    return await _pool.run(partial(_hasher.hash, password))


async def verify_password(password_hash: str | None, password: str) -> bool:
    def verify() -> bool:
        try:
            return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
        except (VerificationError, InvalidHashError):
            return False

    return await _pool.run(verify)


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


# An SSE cookie session's secret starts with this; `token_urlsafe` never writes a ".", so no
# bearer token does.
SESSION_PREFIX = "sse."


def new_session_secret() -> str:
    return SESSION_PREFIX + secrets.token_urlsafe(32)


def token_from_header(value: str | None) -> str | None:
    """`Bearer <token>` or a bare token; anything empty is no token. An SSE session's secret is
    no bearer token (it is honoured from its cookie, for SSE subscriptions only)."""
    if not value:
        return None
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    if rest and scheme.lower() == "bearer":
        value = rest.strip()
    if value.startswith(SESSION_PREFIX):
        return None
    return value or None


@dataclass(frozen=True)
class TokenPolicy:
    """How long a token lives, and how often use renews it (0: never)."""

    ttl_seconds: float
    renew_seconds: float = 0.0

    def expiry(self) -> datetime:
        return now() + timedelta(seconds=self.ttl_seconds)

    def renewal_due(self, expires_at: datetime) -> bool:
        """Renewed at most once per `renew_seconds`: when more than that has passed since it was."""
        if self.renew_seconds <= 0:
            return False
        return expires_at < now() + timedelta(seconds=self.ttl_seconds - self.renew_seconds)


def token_policy(ttl_seconds: float, renew_seconds: float) -> TokenPolicy:
    """Renewed at most once per `renew_seconds`, and at least twice a lifetime when renewed at all
    (a lifetime shorter than the renewal period would otherwise never be renewed)."""
    return TokenPolicy(ttl_seconds, min(renew_seconds, ttl_seconds / 2) if renew_seconds > 0 else 0.0)


# Without settings (a bench, a unit test): the default lifetime, never renewed.
DEFAULT_POLICY = TokenPolicy(30 * 24 * 3600)
