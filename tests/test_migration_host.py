"""Migration 0008_host on data that exists before it (at 0007_opaque_ids), on Postgres and on the embedded SQLite:
existing users keep their email and password and get no external id, existing messages are USER
ones, a user without email or password can now be stored, and an external id is unique where
set (users and rooms alike) while any number of rows have none."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg
import pytest

from tests.test_migration_rooms import seed, upgrade

BEFORE = [
    "INSERT INTO users (id, name, email, email_hash, password_hash, created_at) VALUES "
    "(1, 'Ann', 'a@x.io', 'h1', 'p', '2026-01-01 00:00:00+00'), "
    "(2, 'Bob', 'b@x.io', 'h2', 'p', '2026-01-01 00:00:00+00')",
    "INSERT INTO rooms (id, name, created_by, last_seq, last_event_seq, created_at) VALUES "
    "(1, 'one', 1, 1, 1, '2026-01-01 00:00:00+00'), (2, 'two', 1, 0, 0, '2026-01-01 00:00:00+00')",
    "INSERT INTO messages (id, room_id, seq, sender_id, body, created_at) VALUES "
    "(1, 1, 1, 1, 'hi', '2026-01-01 00:00:00+00')",
]
HOST_USER = (
    "INSERT INTO users (id, name, created_at, external_id) VALUES ({id}, 'Host', '2026-01-01 00:00:00+00', '{ext}')"
)
ROOM_EXT = "UPDATE rooms SET external_id = 'order-1' WHERE id = {id}"
USERS = "SELECT id, email, password_hash, external_id FROM users ORDER BY id"
KINDS = "SELECT id, kind FROM messages ORDER BY id"
EXPECTED_USERS = [(1, "a@x.io", "p", None), (2, "b@x.io", "p", None), (3, None, None, "h-1")]


async def test_on_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    url = f"sqlite:///{path}"
    await seed(url, "0007_opaque_ids", BEFORE)
    upgrade(url, "0008_host")
    with sqlite3.connect(path) as connection:
        connection.execute(HOST_USER.format(id=3, ext="h-1"))
        with pytest.raises(sqlite3.IntegrityError):
            connection.execute(HOST_USER.format(id=4, ext="h-1"))
        connection.execute(ROOM_EXT.format(id=1))
        with pytest.raises(sqlite3.IntegrityError):
            connection.execute(ROOM_EXT.format(id=2))
        assert [tuple(row) for row in connection.execute(USERS).fetchall()] == EXPECTED_USERS
        assert connection.execute(KINDS).fetchall() == [(1, "USER")]


async def test_on_postgres(postgres_url: str) -> None:
    await seed(postgres_url, "0007_opaque_ids", BEFORE)
    upgrade(postgres_url, "0008_host")
    connection = await asyncpg.connect(postgres_url)
    try:
        await connection.execute(HOST_USER.format(id=3, ext="h-1"))
        with pytest.raises(asyncpg.UniqueViolationError):
            await connection.execute(HOST_USER.format(id=4, ext="h-1"))
        await connection.execute(ROOM_EXT.format(id=1))
        with pytest.raises(asyncpg.UniqueViolationError):
            await connection.execute(ROOM_EXT.format(id=2))
        assert [tuple(row) for row in await connection.fetch(USERS)] == EXPECTED_USERS
        assert [tuple(row) for row in await connection.fetch(KINDS)] == [(1, "USER")]
    finally:
        await connection.close()
