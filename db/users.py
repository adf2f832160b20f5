"""Users and their login tokens (stored only as hashes).

Every lookup of a token finds it only while it is unexpired: an expired token is refused as a
revoked one is, wherever it is checked. An SSE session is a token row with `parent_id` set; it
is deleted with its parent.
"""

import hashlib
from datetime import datetime
from functools import cache

import sqlalchemy as sa
from databases import Database

from db.ids import new_id
from db.pool import fetch_rows
from db.records import Row, as_row, now
from db.tables import tokens, users

# `email_hash` is read only for a user who opted in to Gravatar (resolvers/user.py).
# `external_id` reaches only the service and the user themselves (resolvers/user.py).
PUBLIC_COLUMNS = (
    users.c.id,
    users.c.name,
    users.c.email_hash,
    users.c.avatar_url,
    users.c.gravatar,
    users.c.external_id,
)
# What a token lookup adds to the user's row (identity.viewers.viewer_from_row takes them off again).
TOKEN_COLUMNS = (tokens.c.expires_at.label("token_expires_at"), tokens.c.parent_id.label("token_parent_id"))
# Bounds the SSE sessions one bearer token holds (one a browser; the oldest goes first).
MAX_SESSIONS_PER_TOKEN = 4


# The user the host's server acts as (rooms it creates, system messages, who added a member):
# its external id holds a control character, which no host id may (a JWT's `sub` and an
# externalId are printable), so no host user can ever be it.
SERVICE_EXTERNAL_ID = "\x01service"
SERVICE_NAME = "System"


class EmailTaken(Exception):
    pass


async def create_user(
    db: Database,
    name: str,
    email: str | None,
    email_hash: str | None,
    password_hash: str | None,
    *,
    external_id: str | None = None,
    avatar_url: str | None = None,
) -> Row:
    """Insert a user; a taken email (compared lower-cased) raises EmailTaken, a taken
    external_id too (upsert_external catches it: a race with another first sight). A host's user
    has no email and no password (None)."""
    query = (
        users.insert()
        .values(
            id=new_id(),
            name=name,
            email=email,
            email_hash=email_hash,
            password_hash=password_hash,
            created_at=now(),
            external_id=external_id,
            avatar_url=avatar_url,
        )
        .returning(*PUBLIC_COLUMNS)
    )
    try:
        return as_row(await db.fetch_one(query))  # type: ignore[return-value]
    except Exception as error:
        if is_unique_violation(error):
            raise EmailTaken(email) from error
        raise


async def by_external_id(db: Database, external_id: str) -> Row | None:
    """The host's user with this id (a JWT's `sub`, an externalId), with PUBLIC_COLUMNS."""
    return as_row(await db.fetch_one(sa.select(*PUBLIC_COLUMNS).where(users.c.external_id == external_id)))


async def by_external_ids(db: Database, external_ids: list[str]) -> dict[str, Row]:
    """The host's users with these ids, by external id (unknown ones are absent)."""
    rows = await fetch_rows(db, sa.select(*PUBLIC_COLUMNS).where(users.c.external_id.in_(external_ids)))
    return {row["external_id"]: row for row in rows}


async def upsert_external(db: Database, external_id: str, name: str, avatar_url: str | None) -> Row:
    """The host's user with this id, created on first sight (through create_user, with no email
    or password) or updated when `name` or `avatar_url` differ; no write when both are the same.
    Race-safe: two first sights at once create one user (the loser of the unique index reads
    the winner's row and updates it if it must)."""
    for _ in range(2):
        row = await by_external_id(db, external_id)
        if row is None:
            try:
                return await create_user(db, name, None, None, None, external_id=external_id, avatar_url=avatar_url)
            except EmailTaken:
                continue  # created meanwhile by another first sight: read it
        if row["name"] == name and row["avatar_url"] == avatar_url:
            return row
        updated = await update_profile(db, row["id"], {"name": name, "avatar_url": avatar_url})
        if updated is not None:
            return updated
    raise RuntimeError(f"user {external_id!r} neither found nor created")  # deleted as fast as created


def is_unique_violation(error: Exception) -> bool:
    # asyncpg raises UniqueViolationError, sqlite3 IntegrityError; neither is wrapped by `databases`.
    name = type(error).__name__
    return name in ("UniqueViolationError", "IntegrityError") or "UNIQUE constraint" in str(error)


async def user_with_password(db: Database, email: str) -> Row | None:
    """None too for an email no database can hold (a NUL, a lone surrogate): the driver would
    refuse it with an error, and no account can have it."""
    if "\x00" in email or (not email.isprintable() and _unencodable(email)):
        return None
    query = sa.select(*PUBLIC_COLUMNS, users.c.password_hash).where(users.c.email == email)
    return as_row(await db.fetch_one(query))


async def set_password_hash(db: Database, user_id: int, password_hash: str) -> None:
    await db.execute(users.update().where(users.c.id == user_id).values(password_hash=password_hash))


async def users_by_ids(db: Database, ids: list[int]) -> list[Row]:
    query = sa.select(*PUBLIC_COLUMNS).where(users.c.id.in_(ids))
    return await fetch_rows(db, query)


async def user_with_password_by_id(db: Database, user_id: int) -> Row | None:
    query = sa.select(*PUBLIC_COLUMNS, users.c.password_hash).where(users.c.id == user_id)
    return as_row(await db.fetch_one(query))


async def update_profile(db: Database, user_id: int, values: dict) -> Row | None:
    """Set the given columns (name, avatar_url, gravatar) and return the user's public row."""
    if values:
        await db.execute(users.update().where(users.c.id == user_id).values(**values))
    return as_row(await db.fetch_one(sa.select(*PUBLIC_COLUMNS).where(users.c.id == user_id)))


async def create_token(
    db: Database, user_id: int, token_hash: str, expires_at: datetime, parent_id: int | None = None
) -> None:
    await db.execute(
        tokens.insert().values(
            user_id=user_id, token_hash=token_hash, created_at=now(), expires_at=expires_at, parent_id=parent_id
        )
    )


def _bearer() -> sa.ColumnElement[bool]:
    """A bearer token's row: one of ours (no parent) or a registered host JWT (its own parent);
    not an SSE session (whose parent is another row)."""
    return sa.or_(tokens.c.parent_id.is_(None), tokens.c.parent_id == tokens.c.id)


def _valid(query: sa.Select, at: datetime | None = None) -> sa.Select:
    """Unexpired at `at`; without it, at the `now` given with a kept statement's values."""
    if at is not None:
        return query.where(tokens.c.expires_at > at)
    return query.where(tokens.c.expires_at > sa.bindparam("now", type_=tokens.c.expires_at.type))


async def user_for_token(db: Database, token_hash: str) -> Row | None:
    """The token's user, with TOKEN_COLUMNS; None once it is revoked or expired."""
    query = _valid(
        sa.select(*PUBLIC_COLUMNS, *TOKEN_COLUMNS)
        .select_from(tokens.join(users, tokens.c.user_id == users.c.id))
        .where(tokens.c.token_hash == token_hash),
        now(),
    )
    return as_row(await db.fetch_one(query))


@cache
def _users_for_tokens() -> sa.Select:
    return _valid(
        sa.select(tokens.c.token_hash, *PUBLIC_COLUMNS, *TOKEN_COLUMNS)
        .select_from(tokens.join(users, tokens.c.user_id == users.c.id))
        .where(tokens.c.token_hash.in_(sa.bindparam("digests", expanding=True)))
    )


async def users_for_tokens(db: Database, token_hashes: list[str]) -> dict[str, Row]:
    """Each valid token's user, with TOKEN_COLUMNS (batched: many connections check at once)."""
    rows = await fetch_rows(db, _users_for_tokens(), {"digests": token_hashes, "now": now()})
    return {row.pop("token_hash"): row for row in rows}


async def renew_token(db: Database, token_hash: str, expires_at: datetime) -> bool:
    """Move a valid bearer token's expiry (and its sessions') to `expires_at`; False when it is
    revoked or expired meanwhile (it is never brought back)."""
    async with db.transaction():
        token_id = await db.fetch_val(
            _valid(sa.select(tokens.c.id).where(tokens.c.token_hash == token_hash, tokens.c.parent_id.is_(None)), now())
        )
        if token_id is None:
            return False
        await db.execute(
            tokens.update()
            .where(sa.or_(tokens.c.id == token_id, tokens.c.parent_id == token_id))
            .values(expires_at=expires_at)
        )
    return True


async def create_session(db: Database, token_hash: str, session_hash: str) -> list[str] | None:
    """An SSE session made from a valid bearer token, expiring with it; None if the token is not
    valid. Returns the digests of the sessions it displaced (beyond MAX_SESSIONS_PER_TOKEN),
    already deleted: the caller announces their revocation."""
    async with db.transaction():
        parent = await db.fetch_one(
            _valid(
                sa.select(tokens.c.id, tokens.c.user_id, tokens.c.expires_at).where(
                    tokens.c.token_hash == token_hash, _bearer()
                ),
                now(),
            )
        )
        if parent is None:
            return None
        await create_token(db, parent["user_id"], session_hash, parent["expires_at"], parent_id=parent["id"])
        older = await db.fetch_all(
            sa.select(tokens.c.id, tokens.c.token_hash)
            .where(tokens.c.parent_id == parent["id"], tokens.c.id != parent["id"])
            .order_by(tokens.c.id.desc())
            .offset(MAX_SESSIONS_PER_TOKEN)
        )
        if older:
            await db.execute(tokens.delete().where(tokens.c.id.in_([row["id"] for row in older])))
    return [row["token_hash"] for row in older]


async def is_session_of(db: Database, session_hash: str, token_hash: str) -> bool:
    """Whether the session is valid and was made from this (valid) token."""
    parent = tokens.alias("parent")
    query = _valid(
        sa.select(tokens.c.id)
        .select_from(tokens.join(parent, tokens.c.parent_id == parent.c.id))
        .where(tokens.c.token_hash == session_hash, parent.c.token_hash == token_hash),
        now(),
    )
    return await db.fetch_val(query) is not None


async def token_and_sessions(db: Database, token_hash: str) -> list[str]:
    """The token's digest and its sessions': what revoking it revokes."""
    parent = sa.select(tokens.c.id).where(tokens.c.token_hash == token_hash).scalar_subquery()
    mine = sa.or_(tokens.c.token_hash == token_hash, tokens.c.parent_id == parent)
    query = sa.select(tokens.c.token_hash).where(mine)
    return sorted({token_hash, *(row["token_hash"] for row in await db.fetch_all(query))})


async def delete_token(db: Database, token_hash: str) -> None:
    """The token and its sessions (explicitly: SQLite enforces no foreign keys here)."""
    parent = sa.select(tokens.c.id).where(tokens.c.token_hash == token_hash).scalar_subquery()
    async with db.transaction():
        await db.execute(tokens.delete().where(tokens.c.parent_id == parent))
        await db.execute(tokens.delete().where(tokens.c.token_hash == token_hash))


async def delete_tokens_of_user(db: Database, user_id: int) -> None:
    """Every token of the user, sessions included."""
    await db.execute(tokens.delete().where(tokens.c.user_id == user_id))


async def replace_password(db: Database, user_id: int, password_hash: str) -> None:
    """The new password, and every token of the user gone, in one transaction."""
    async with db.transaction():
        await set_password_hash(db, user_id, password_hash)
        await delete_tokens_of_user(db, user_id)


async def prune_expired_tokens(db: Database, user_id: int) -> None:
    """The user's expired tokens (refused already; this only keeps the table from growing)."""
    await db.execute(tokens.delete().where(tokens.c.user_id == user_id, tokens.c.expires_at <= now()))


def _unencodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


async def host_user(db: Database, external_id: str) -> Row | None:
    """The host's user with this id, with PUBLIC_COLUMNS and `jwt_not_before`."""
    query = sa.select(*PUBLIC_COLUMNS, users.c.jwt_not_before).where(users.c.external_id == external_id)
    return as_row(await db.fetch_one(query))


async def revoke_jwts(db: Database, user_id: int) -> None:
    """Every token of the user gone, and their JWTs issued until now refused, in one transaction."""
    async with db.transaction():
        await db.execute(users.update().where(users.c.id == user_id).values(jwt_not_before=now()))
        await delete_tokens_of_user(db, user_id)


async def register_jwt(db: Database, user_id: int, token_hash: str, expires_at: datetime) -> None:
    """A verified host JWT gets a token row under its digest, expiring at its `exp`, so every
    check that reads tokens (room access, revalidation, expiry, revocation, SSE sessions made
    from it) treats it as one of ours. Its own parent: never renewed by use (renewal takes
    parentless rows only) and never taken for a session. Registered once (a second
    registration, racing or not, changes nothing); the user's expired tokens go with it."""
    if await db.fetch_val(sa.select(tokens.c.id).where(tokens.c.token_hash == token_hash)) is not None:
        return
    try:
        async with db.transaction():
            await create_token(db, user_id, token_hash, expires_at)
            await db.execute(tokens.update().where(tokens.c.token_hash == token_hash).values(parent_id=tokens.c.id))
    except Exception as error:
        if not is_unique_violation(error):
            raise
        return
    await prune_expired_tokens(db, user_id)


async def service_user(db: Database) -> Row:
    """The user the service acts as, made on first use (race-safe: through upsert_external)."""
    return await upsert_external(db, SERVICE_EXTERNAL_ID, SERVICE_NAME, None)


DELETED_NAME = "Deleted user"


def tombstone(external_id: str) -> str:
    """What a deleted user's external id becomes: its digest, behind a control character no
    host id holds. It frees the id (the host may bring a new user under it) while still
    telling the host's tokens issued before the deletion from those issued after."""
    return "\x02" + hashlib.sha256(external_id.encode()).hexdigest()


async def deleted_at(db: Database, external_id: str) -> datetime | None:
    """When the user the host knew by this id was deleted (None: never)."""
    row = as_row(
        await db.fetch_one(
            sa.select(users.c.jwt_not_before).where(users.c.external_id == tombstone(external_id)).limit(1)
        )
    )
    return row["jwt_not_before"] if row is not None else None


async def deleted_user(db: Database, external_id: str) -> Row | None:
    """What is kept of the user the host knew by this id, deleted last (None: never deleted)."""
    return as_row(await db.fetch_one(sa.select(users).where(users.c.external_id == tombstone(external_id)).limit(1)))


async def delete_user(db: Database, user_id: int, external_id: str | None) -> None:
    """What is kept of a deleted user is a nameless row (their messages, and the rooms' logs,
    still point at it): name, email, password and picture go, the external id becomes its
    tombstone, and every token goes, in one transaction. Their memberships are removed before
    (db.rooms)."""
    gone = tombstone(external_id) if external_id is not None else None
    async with db.transaction():
        if gone is not None:  # deleted twice under one host id: the older tombstone makes way
            await db.execute(users.update().where(users.c.external_id == gone).values(external_id=None))
        await db.execute(
            users.update()
            .where(users.c.id == user_id)
            .values(
                name=DELETED_NAME,
                email=None,
                email_hash=None,
                password_hash=None,
                avatar_url=None,
                gravatar=False,
                external_id=gone,
                jwt_not_before=now(),
            )
        )
        await delete_tokens_of_user(db, user_id)


async def issue_token(db: Database, user_id: int, token_hash: str, expires_at: datetime) -> None:
    """A token the service issued for the user: its own parent (never renewed by use, as a host
    JWT's row), deleted by a revocation as any is."""
    async with db.transaction():
        await create_token(db, user_id, token_hash, expires_at)
        await db.execute(tokens.update().where(tokens.c.token_hash == token_hash).values(parent_id=tokens.c.id))


async def count_tokens_of_user(db: Database, user_id: int) -> int:
    return int(await db.fetch_val(sa.select(sa.func.count()).where(tokens.c.user_id == user_id)))
