"""Migration 0006_direct on data that exists before it, on Postgres and on the embedded SQLite:
every existing room has no `direct_key` (none is DIRECT: 0005 made them all PUBLIC), and the
key is unique wherever it is set, which is what makes opening a direct room race-free."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg
import pytest

from tests.test_migration_rooms import seed, upgrade

BEFORE = [
    "INSERT INTO users (id, name, email, email_hash, password_hash, created_at) VALUES "
    "(1, 'Ann', 'a@x.io', 'h1', 'p', '2026-01-01 00:00:00+00')",
    "INSERT INTO rooms (id, name, created_by, last_seq, last_event_seq, created_at) VALUES "
    "(1, 'one', 1, 0, 0, '2026-01-01 00:00:00+00'), (2, 'two', 1, 0, 0, '2026-01-01 00:00:00+00')",
]
KEYS = "SELECT id, kind, direct_key FROM rooms ORDER BY id"
KEYED = (
    "INSERT INTO rooms (id, name, created_by, last_seq, last_event_seq, created_at, kind, direct_key) "
    "VALUES ({id}, 'dm', 1, 0, 0, '2026-01-01 00:00:00+00', 'DIRECT', '1,2')"
)
EXPECTED = [(1, "PUBLIC", None), (2, "PUBLIC", None), (3, "DIRECT", "1,2")]


async def test_on_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    url = f"sqlite:///{path}"
    await seed(url, "0005", BEFORE)
    upgrade(url, "0006_direct")
    with sqlite3.connect(path) as connection:
        connection.execute(KEYED.format(id=3))
        with pytest.raises(sqlite3.IntegrityError):
            connection.execute(KEYED.format(id=4))
        assert [tuple(row) for row in connection.execute(KEYS).fetchall()] == EXPECTED


async def test_on_postgres(postgres_url: str) -> None:
    await seed(postgres_url, "0005", BEFORE)
    upgrade(postgres_url, "0006_direct")
    connection = await asyncpg.connect(postgres_url)
    try:
        await connection.execute(KEYED.format(id=3))
        with pytest.raises(asyncpg.UniqueViolationError):
            await connection.execute(KEYED.format(id=4))
        assert [tuple(row) for row in await connection.fetch(KEYS)] == EXPECTED
    finally:
        await connection.close()
