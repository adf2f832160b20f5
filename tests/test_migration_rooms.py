"""Migration 0005 on data that exists before it, on Postgres and on the embedded SQLite: every
room becomes PUBLIC (whoever could join it still can), its creator its OWNER (or, when the
creator has left, its longest-standing member), everyone else a MEMBER, and member counts are
filled in."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import asyncpg

from tests.support.processes import ROOT

BEFORE = [
    "INSERT INTO users (id, name, email, email_hash, password_hash, created_at) VALUES "
    "(1, 'Ann', 'a@x.io', 'h1', 'p', '2026-01-01 00:00:00+00'), "
    "(2, 'Bob', 'b@x.io', 'h2', 'p', '2026-01-01 00:00:00+00'), "
    "(3, 'Cy', 'c@x.io', 'h3', 'p', '2026-01-01 00:00:00+00')",
    "INSERT INTO rooms (id, name, created_by, last_seq, last_event_seq, created_at) VALUES "
    "(1, 'kept', 1, 0, 0, '2026-01-01 00:00:00+00'), (2, 'left', 1, 0, 0, '2026-01-01 00:00:00+00')",
    "INSERT INTO memberships (room_id, user_id, joined_at) VALUES "
    "(1, 1, '2026-01-01 00:00:00+00'), (1, 2, '2026-01-02 00:00:00+00'), (1, 3, '2026-01-03 00:00:00+00'), "
    "(2, 3, '2026-01-03 00:00:00+00'), (2, 2, '2026-01-02 00:00:00+00')",  # its creator left room 2
]
ROOMS = "SELECT id, kind, topic, member_count FROM rooms ORDER BY id"
ROLES = "SELECT room_id, user_id, role, muted_until FROM memberships ORDER BY room_id, user_id"


def upgrade(url: str, revision: str) -> None:
    code = f"from db.migrate import upgrade; upgrade({revision!r})"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "DATABASE_URL": url}, check=True)


async def seed(url: str, revision: str, statements: Sequence[str]) -> None:
    """An empty database migrated to `revision`, then `statements` run on it: the data that
    exists before a later migration. SQLite (`sqlite:///path`) through sqlite3, Postgres through
    asyncpg: not through the app, whose queries are those of the latest schema."""
    upgrade(url, revision)
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
            for statement in statements:
                connection.execute(statement)
        return
    connection = await asyncpg.connect(url)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


def check(read: Callable[[str], list[tuple]]) -> None:
    assert read(ROOMS) == [(1, "PUBLIC", None, 3), (2, "PUBLIC", None, 2)]
    assert read(ROLES) == [
        (1, 1, "OWNER", None),
        (1, 2, "MEMBER", None),
        (1, 3, "MEMBER", None),
        (2, 2, "OWNER", None),  # the longest-standing member of a room its creator left
        (2, 3, "MEMBER", None),
    ]
    assert read("SELECT COUNT(*) FROM room_bans") == [(0,)]


async def test_on_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    url = f"sqlite:///{path}"
    await seed(url, "0004", BEFORE)
    upgrade(url, "0006_invites")
    with sqlite3.connect(path) as connection:
        check(lambda sql: [tuple(row) for row in connection.execute(sql).fetchall()])


async def test_on_postgres(postgres_url: str) -> None:
    await seed(postgres_url, "0004", BEFORE)
    upgrade(postgres_url, "0006_invites")
    connection = await asyncpg.connect(postgres_url)
    try:
        results = {sql: [tuple(row) for row in await connection.fetch(sql)] for sql in (ROOMS, ROLES)}
        results["SELECT COUNT(*) FROM room_bans"] = [tuple(await connection.fetchrow("SELECT COUNT(*) FROM room_bans"))]
    finally:
        await connection.close()
    check(results.__getitem__)
