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

A host's JWT (`HostTokens`) is a bearer token too, told apart by its dots (an opaque token and a
service key have none). It is verified here, nothing stored: HS256 with AUTH_JWT_SECRET, RS256
and ES256 against the keys at AUTH_JWKS_URL (`JwksKeys`), `exp` and `sub` required, the issuer
and audience checked when set, AUTH_JWT_LEEWAY_SECONDS of clock skew allowed. Which key checks a
token follows from the setting that holds it, never from the token alone: an HS256 token is
checked only against the shared secret and an RS256 or ES256 one only against a JWKS key of that
very type, so a token signed "HS256" with a JWKS public key as its secret (algorithm confusion),
or with `alg: none`, verifies against nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property, partial
from typing import Any, TypeVar

import httpx
import jwt
import orjson
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from core.errors import ServiceUnavailable
from db.records import now

T = TypeVar("T")

logger = logging.getLogger("chat.auth")

_hasher = PasswordHasher()
# Verified against when the email is unknown, so both failures take the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


# What kind of credential a viewer holds: one of our tokens (renewed by use, revoked by deleting
# its row), or a host's JWT (never renewed; it ends at its `exp`, and its client can fetch a
# fresh one from the host and reconnect).
TOKEN = "token"
HOST_JWT = "jwt"
# The host's server, by SERVICE_KEY over plain HTTP only (identity.viewers.Viewers.of_request).
SERVICE = "service"


@dataclass(frozen=True)
class Viewer:
    """The signed-in user of a request or WebSocket connection, and the token it used."""

    user: dict
    token_hash: str
    # When the token expires (Unix time), as last read: a cache must not trust it past then.
    expires_at: float = math.inf
    kind: str = TOKEN
    # A host JWT's `iat` (None: it has none, or this is another kind of token).
    issued_at: float | None = None

    @cached_property
    def id(self) -> int:
        """Read once: the live engine asks for it several times per event per subscriber."""
        return int(self.user["id"])

    @property
    def reconnects(self) -> bool:
        """Whether its client is expected to get a fresh token and come back when this one
        expires (a host's JWT): a WebSocket then closes with a code its client retries on."""
        return self.kind == HOST_JWT


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


def is_service_key(token: str, keys: tuple[str, ...]) -> bool:
    """Whether `token` is one of the service keys, compared in constant time against each (no
    early exit: how long it takes tells nothing of which key, or how much of one, matched)."""
    given = hashlib.sha256(token.encode()).digest()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, hashlib.sha256(key.encode()).digest())
    return matched


def looks_like_jwt(token: str) -> bool:
    """A JWS in compact form has three dot-separated parts; our own tokens have no dot."""
    return token.count(".") == 2


# Bounds on what a JWT may carry into the users table.
MAX_EXTERNAL_ID = 255
MAX_NAME = 100
MAX_PICTURE = 2048
# Bounds on what a JWKS URL may hand us.
MAX_JWKS_BYTES = 256 * 1024
MAX_JWKS_KEYS = 50
JWKS_TIMEOUT_SECONDS = 5.0
# The algorithm each JWKS key type verifies (the only ones accepted from a JWKS).
_JWKS_ALGORITHMS = {"RSA": "RS256", "EC": "ES256"}


@dataclass(frozen=True)
class HostClaims:
    """What a verified host JWT says: who (`sub`), their profile as the host has it now, when
    the token was issued (None when it says not) and until when it is accepted (`exp` plus the
    leeway)."""

    external_id: str
    name: str | None
    picture: str | None
    issued_at: float | None
    expires_at: float


class JwksKeys:
    """The keys at a JWKS URL, fetched with httpx (async: never on the event loop's thread), kept
    for `cache_seconds`, and fetched again when a token names a `kid` we do not hold (a rotation)
    at most once per `refetch_seconds`: a stream of made-up kids costs the URL one fetch per
    period, not one per token. One fetch at a time (single flight): every token waiting on a
    fetch shares it. A failed fetch keeps the keys held."""

    def __init__(
        self, url: str, refetch_seconds: float, cache_seconds: float, timeout: float = JWKS_TIMEOUT_SECONDS
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.refetch_seconds = refetch_seconds
        self.cache_seconds = cache_seconds
        self._keys: dict[str | None, tuple[str, Any]] = {}
        self._fetched_at = -math.inf  # monotonic: the last fetch that answered
        self._tried_at = -math.inf  # monotonic: the last fetch started
        self._fetching: asyncio.Future[None] | None = None
        self.fetches = 0

    async def key(self, kid: str | None, algorithm: str) -> Any | None:
        """The public key for `kid` if it is one for `algorithm`; None otherwise."""
        now = time.monotonic()
        known = self._keys.get(kid)
        stale = now - self._fetched_at >= self.cache_seconds
        if (known is None or stale) and now - self._tried_at >= self.refetch_seconds:
            try:
                await self._fetch()
            except Exception:  # logged once by `_fetched`; the keys held still count
                pass
            known = self._keys.get(kid)
        if known is None or known[0] != algorithm:
            return None
        return known[1]

    async def _fetch(self) -> None:
        if self._fetching is None:
            self._tried_at = time.monotonic()
            self._fetching = asyncio.ensure_future(self._load())
            self._fetching.add_done_callback(self._fetched)
        await asyncio.shield(self._fetching)

    def _fetched(self, future: asyncio.Future[None]) -> None:
        self._fetching = None
        if not future.cancelled() and future.exception() is not None:
            logger.warning("Fetching AUTH_JWKS_URL failed (%s); keeping the keys held", future.exception())

    async def _load(self) -> None:
        """One fetch, `timeout` in all: httpx's timeout bounds each read, so a URL that trickles
        its body a byte at a time would otherwise hold every token waiting on it far longer."""
        async with asyncio.timeout(self.timeout):
            async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
                async with client.stream("GET", self.url, headers={"accept": "application/json"}) as response:
                    response.raise_for_status()
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_JWKS_BYTES:
                            raise ValueError(f"a JWKS over {MAX_JWKS_BYTES} bytes")
        self._keys = parse_jwks(bytes(body))
        self._fetched_at = time.monotonic()
        self.fetches += 1


def parse_jwks(body: bytes) -> dict[str | None, tuple[str, Any]]:
    """kid -> (algorithm, public key) for the RSA and P-256 EC signing keys of a JWKS document.
    Symmetric (`oct`) keys are never taken from it: a JWKS is public."""
    document = orjson.loads(body)
    entries = document.get("keys") if isinstance(document, dict) else None
    keys: dict[str | None, tuple[str, Any]] = {}
    for entry in entries[:MAX_JWKS_KEYS] if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        algorithm = _JWKS_ALGORITHMS.get(entry.get("kty", ""))
        if algorithm is None or entry.get("alg", algorithm) != algorithm:
            continue
        if algorithm == "ES256" and entry.get("crv") != "P-256":
            continue
        try:
            key = jwt.PyJWK(entry, algorithm).key
        except jwt.PyJWTError:
            continue
        kid = entry.get("kid")
        keys[kid if isinstance(kid, str) else None] = (algorithm, key)
    return keys


class HostTokens:
    """Verifies the host's JWTs (see the module's docstring)."""

    def __init__(
        self,
        secret: str | None,
        jwks: JwksKeys | None,
        issuer: str | None = None,
        audience: str | None = None,
        leeway: float = 30.0,
    ) -> None:
        self._secret = secret
        self.jwks = jwks
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway

    @property
    def enabled(self) -> bool:
        return self._secret is not None or self.jwks is not None

    async def verify(self, token: str) -> HostClaims | None:
        """The token's claims, or None for any token that does not verify."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        algorithm = header.get("alg")
        key: Any
        if algorithm == "HS256" and self._secret is not None:
            key = self._secret
        elif algorithm in ("RS256", "ES256") and self.jwks is not None:
            kid = header.get("kid")
            key = await self.jwks.key(kid if isinstance(kid, str) else None, algorithm)
            if key is None:
                return None
        else:
            return None
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": self._audience is not None,
                    "verify_iss": self._issuer is not None,
                },
            )
        except jwt.PyJWTError:
            return None
        return _host_claims(claims, self._leeway)


def _host_claims(claims: dict[str, Any], leeway: float) -> HostClaims | None:
    """The claims we use, checked for type and size; `expires_at` is `exp` plus the leeway (what
    jwt.decode accepted: the token is good until then everywhere)."""
    sub, exp, iat = claims.get("sub"), claims.get("exp"), claims.get("iat")
    if not isinstance(sub, str) or not 0 < len(sub) <= MAX_EXTERNAL_ID or not sub.isprintable():
        return None
    if not isinstance(exp, int | float):
        return None
    name = claims.get("name")
    name = " ".join(name.split())[:MAX_NAME] if isinstance(name, str) and name.isprintable() else None
    picture = claims.get("picture")
    if not (
        isinstance(picture, str)
        and len(picture) <= MAX_PICTURE
        and picture.startswith(("https://", "http://"))
        and picture.isprintable()
        and " " not in picture
    ):
        picture = None
    return HostClaims(
        sub, name or None, picture, float(iat) if isinstance(iat, int | float) else None, float(exp) + leeway
    )
