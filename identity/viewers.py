"""Who the viewer is: the one place that turns a token (or its digest) into a `Viewer`, for every
transport.

Two ways to ask, because two kinds of caller need different freshness:
- `remembered`: an HTTP request. From this process's memory of tokens while that memory is
  trusted (identity.viewer_cache), else read from the database (and renewed when due).
- `of_token` / `of_digest`: a WebSocket's `connection_init`, an SSE or multipart stream. Read
  every time, batched with every other connection starting now (a connection lives long, and a
  reconnect storm's checks go in one query), and renewed when due: a client that only streams
  keeps its token alive.

And three checks on a viewer already known: `revalidated` (a WebSocket's query or mutation:
its token still valid, never renewed), `holds` (a token, or an SSE session, exists), and
`expiries` (what the database has now for tokens whose expiry has passed, live.token_expiry).

Renewal (sliding expiry, `TokenPolicy`) happens only on a read from the database, and only for
a bearer token: an SSE session is renewed with the token it was made from, never by its own use.

A host's JWT (identity.auth.HostTokens) takes the same ways, verified instead of read: its user
is the one whose `external_id` is its `sub`, created on first sight and updated when its `name`
or `picture` claims differ from what is stored (a write only then; an HTTP request's viewer is
remembered by the token's digest as any token's is, so a token reused for many requests costs
one read in each process). It is refused once its `iat` is not after the user's
`jwt_not_before` (revokeTokens, logOut everywhere). A user first seen without a usable `name`
claim is named UNNAMED, never after their `sub`. Once verified it is registered as a token row
under its digest (db.users.register_jwt), expiring at its `exp` and never renewed: every later
check (room access, revalidation, expiry, revocation, an SSE session made from it) reads it as
it reads one of ours.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from databases import Database

from db import users
from db.records import Row
from identity.auth import (
    DEFAULT_POLICY,
    HOST_JWT,
    SERVICE,
    HostClaims,
    HostTokens,
    TokenPolicy,
    Viewer,
    is_service_key,
    looks_like_jwt,
    token_digest,
)
from identity.viewer_cache import ViewerCache

# A host user's name while the host's JWTs carry no usable `name` claim. Never their `sub`: that
# is the host's id for them, shown only to the service and to themselves (resolvers.service), and
# a name is shown to everyone who shares a room with them.
UNNAMED = "Member"


class TokenReads(Protocol):
    """A token's row as `db.users` finds it (valid tokens only), batched (db.access.AccessReads)."""

    async def user_for_token(self, token_hash: str) -> Row | None: ...


class Viewers:
    def __init__(
        self,
        db: Database,
        reads: TokenReads,
        cache: ViewerCache,
        policy: TokenPolicy,
        host: HostTokens | None = None,
        service_keys: tuple[str, ...] = (),
    ) -> None:
        self._db = db
        self._reads = reads
        self.cache = cache
        self.policy = policy
        self.host = host if host is not None and host.enabled else None
        self._service_keys = service_keys
        self._service: Viewer | None = None

    async def of_request(self, token: str | None) -> Viewer | None:
        """A GraphQL-over-HTTP query's or mutation's viewer (its `Authorization` header): the
        service for a SERVICE_KEY, else as `remembered`. Nothing else asks for the service: a
        WebSocket, an SSE or multipart stream, the SSE session endpoint and a cookie are read
        through `of_token`, to which a service key is an unknown token."""
        if token and self._service_keys and is_service_key(token, self._service_keys):
            return await self.service()
        return await self.remembered(token)

    async def service(self) -> Viewer:
        """The service's viewer: the service user (db.users.service_user), read once per process."""
        if self._service is None:
            user = await users.service_user(self._db)
            self._service = Viewer(user=user, token_hash="service", kind=SERVICE)
        return self._service

    async def remembered(self, token: str | None) -> Viewer | None:
        """An HTTP request's viewer: remembered while this process would hear of a revocation."""
        if not token:
            return None
        digest = token_digest(token)
        cache = self.cache
        viewer = cache.get(digest)
        if viewer is not None:
            cache.stats.hits += 1
            return viewer
        cache.stats.misses += 1
        epoch = cache.epoch
        if looks_like_jwt(token):
            viewer = await self.of_host_token(token, digest)
        else:
            viewer = await viewer_for_digest(self._db, digest, self.policy)
        if viewer is not None:
            cache.put(digest, viewer, epoch)
        return viewer

    async def of_token(self, token: str | None) -> Viewer | None:
        """A connection's or stream's viewer: read every time, batched, renewed when due."""
        if not token:
            return None
        if looks_like_jwt(token):
            return await self.of_host_token(token, token_digest(token))
        return await self.of_digest(token_digest(token))

    async def of_host_token(self, token: str, digest: str | None = None) -> Viewer | None:
        """A host JWT's viewer (its user synced from its claims), or None when it does not
        verify, is revoked, or no JWT is accepted here."""
        if self.host is None:
            return None
        claims = await self.host.verify(token)
        if claims is None:
            return None
        user = await self._host_user(claims)
        if user is None:
            return None
        digest = digest or token_digest(token)
        await users.register_jwt(self._db, int(user["id"]), digest, datetime.fromtimestamp(claims.expires_at, UTC))
        return Viewer(
            user=user,
            token_hash=digest,
            expires_at=claims.expires_at,
            kind=HOST_JWT,
            issued_at=claims.issued_at,
        )

    async def _host_user(self, claims: HostClaims) -> dict | None:
        row = await users.host_user(self._db, claims.external_id)
        not_before = row.pop("jwt_not_before", None) if row is not None else None
        if not_before is not None and (claims.issued_at is None or claims.issued_at <= not_before.timestamp()):
            return None
        if row is None:
            deleted_at = await users.deleted_at(self._db, claims.external_id)
            if deleted_at is not None and (claims.issued_at is None or claims.issued_at <= deleted_at.timestamp()):
                return None  # a token issued before its user was deleted
            return await users.upsert_external(self._db, claims.external_id, claims.name or UNNAMED, claims.picture)
        name = claims.name or row["name"]
        picture = claims.picture or row["avatar_url"]
        if name != row["name"] or picture != row["avatar_url"]:
            return await users.upsert_external(self._db, claims.external_id, name, picture)
        return row

    async def of_digest(self, digest: str) -> Viewer | None:
        return await viewer_from_row(self._db, self.policy, digest, await self._reads.user_for_token(digest))

    async def revalidated(self, viewer: Viewer) -> Viewer | None:
        """The viewer while its token is still valid (read, batched; not renewed). A host JWT's
        row (registered when it was verified) expires at its `exp` and is deleted by a
        revocation as any token's is."""
        return viewer if await self._reads.user_for_token(viewer.token_hash) else None

    async def holds(self, digest: str) -> bool:
        """Whether the token (or session) exists and is valid: one batched read."""
        return await self._reads.user_for_token(digest) is not None

    async def expiries(self, digests: Sequence[str]) -> dict[str, float | None]:
        """Each token's expiry as the database has it now (None: revoked or expired)."""
        rows = await asyncio.gather(*(self._reads.user_for_token(digest) for digest in digests))
        return {
            digest: None if row is None else row["token_expires_at"].timestamp()
            for digest, row in zip(digests, rows, strict=True)
        }


async def viewer_from_row(db: Database, policy: TokenPolicy, digest: str, row: Row | None) -> Viewer | None:
    """The viewer of a token row that `db.users` found (it finds only valid tokens), renewed first
    when its renewal is due (a bearer token only; its sessions are renewed with it)."""
    if row is None:
        return None
    user = {key: value for key, value in row.items() if not key.startswith("token_")}
    expires_at: datetime = row["token_expires_at"]
    if row["token_parent_id"] is None and policy.renewal_due(expires_at):
        renewed = policy.expiry()
        if await users.renew_token(db, digest, renewed):
            expires_at = renewed
    return Viewer(user=user, token_hash=digest, expires_at=expires_at.timestamp())


async def viewer_for_token(db: Database, token: str | None, policy: TokenPolicy = DEFAULT_POLICY) -> Viewer | None:
    """Unbatched and uncached (the naive benchmark baseline's path)."""
    return await viewer_for_digest(db, token_digest(token), policy) if token else None


async def viewer_for_digest(db: Database, digest: str, policy: TokenPolicy = DEFAULT_POLICY) -> Viewer | None:
    """None once the token is revoked or expired (one unbatched read: a cache miss)."""
    return await viewer_from_row(db, policy, digest, await users.user_for_token(db, digest))
