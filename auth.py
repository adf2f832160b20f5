"""Passwords, tokens and the identity behind a request.

Passwords are hashed with argon2 (off the event loop: hashing is deliberately slow);
tokens are random and only their SHA-256 digest is stored, so a database leak yields none.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from databases import Database

from db import users

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


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    def verify() -> bool:
        try:
            return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(verify)


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
