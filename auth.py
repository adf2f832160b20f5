"""Passwords, tokens and the identity behind a request.

Passwords are hashed with argon2id (off the event loop: hashing is deliberately slow) in a pool
of its own with a few threads (`PASSWORD_HASH_THREADS`): each hash takes 64 MiB while it runs,
so a burst of sign-ins waits its turn instead of exhausting the dyno's memory, and past
`PASSWORD_HASH_QUEUE` waiting ones is refused (SERVICE_UNAVAILABLE, retry) instead of queueing
for longer than a client waits.

Tokens are random and only their SHA-256 digest is stored, so a database leak yields none.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from databases import Database

from db import users
from errors import ServiceUnavailable

T = TypeVar("T")

_hasher = PasswordHasher()
# Verified against when the email is unknown, so both failures take the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class Viewer:
    """The signed-in user of a request or WebSocket connection, and the token it used."""

    user: dict
    token_hash: str

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


def token_from_header(value: str | None) -> str | None:
    """`Bearer <token>` or a bare token; anything empty is no token."""
    if not value:
        return None
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    if rest and scheme.lower() == "bearer":
        value = rest.strip()
    return value or None


async def viewer_for_token(db: Database, token: str | None) -> Viewer | None:
    return await viewer_for_digest(db, token_digest(token)) if token else None


async def viewer_for_digest(db: Database, digest: str) -> Viewer | None:
    """None once the token is revoked."""
    user = await users.user_for_token(db, digest)
    return None if user is None else Viewer(user=user, token_hash=digest)
