"""Users and their login tokens (stored only as hashes)."""

from functools import cache

import sqlalchemy as sa
from databases import Database

from db.pool import fetch_rows
from db.records import Row, as_row, now
from db.tables import tokens, users

PUBLIC_COLUMNS = (users.c.id, users.c.name, users.c.email_hash)


class EmailTaken(Exception):
    pass


async def create_user(db: Database, name: str, email: str, email_hash: str, password_hash: str) -> Row:
    """Insert a user; a taken email (compared lower-cased) raises EmailTaken."""
    query = (
        users.insert()
        .values(name=name, email=email, email_hash=email_hash, password_hash=password_hash, created_at=now())
        .returning(*PUBLIC_COLUMNS)
    )
    try:
        return as_row(await db.fetch_one(query))  # type: ignore[return-value]
    except Exception as error:
        if _is_unique_violation(error):
            raise EmailTaken(email) from error
        raise


def _is_unique_violation(error: Exception) -> bool:
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


async def create_token(db: Database, user_id: int, token_hash: str) -> None:
    await db.execute(tokens.insert().values(user_id=user_id, token_hash=token_hash, created_at=now()))


async def user_for_token(db: Database, token_hash: str) -> Row | None:
    query = (
        sa.select(*PUBLIC_COLUMNS)
        .select_from(tokens.join(users, tokens.c.user_id == users.c.id))
        .where(tokens.c.token_hash == token_hash)
    )
    return as_row(await db.fetch_one(query))


@cache
def _users_for_tokens() -> sa.Select:
    return (
        sa.select(tokens.c.token_hash, *PUBLIC_COLUMNS)
        .select_from(tokens.join(users, tokens.c.user_id == users.c.id))
        .where(tokens.c.token_hash.in_(sa.bindparam("digests", expanding=True)))
    )


async def users_for_tokens(db: Database, token_hashes: list[str]) -> dict[str, Row]:
    return {row.pop("token_hash"): row for row in await fetch_rows(db, _users_for_tokens(), {"digests": token_hashes})}


async def delete_token(db: Database, token_hash: str) -> None:
    await db.execute(tokens.delete().where(tokens.c.token_hash == token_hash))


def _unencodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False
