"""Migration 0007_opaque_ids on data made before it, on Postgres and on the embedded SQLite: every
user, room and message gets a new random id and keeps every relation (memberships, messages,
reactions, the event log and the ids in its data, bans, invites, tokens, a DIRECT room's key);
then, through the served API, the old ids answer NOT_FOUND, a cursor held from before answers
BAD_USER_INPUT (never a resume somewhere else), a token from before still signs its user in, and
`openDirect` with the same people finds the same DIRECT room."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import secrets
import sqlite3
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext

from tests.support.graphql import GraphQLClient
from tests.support.processes import ROOT, Server
from tests.support.wsclient import PROTOCOLS, GraphQLWebSocket
from tests.test_migration_rooms import seed, upgrade

MIGRATION = ROOT / "db" / "migrations" / "versions" / "0007_opaque_ids.py"
T = "'2026-01-01 00:00:00+00'"
LATER = "'2099-01-01 00:00:00+00'"
TOKENS = {"Ann": "ann-" + "a" * 40, "Bob": "bob-" + "b" * 40, "Cy": "cy-" + "c" * 40}
INVITE = secrets.token_urlsafe(24)  # what createInvite makes (resolvers/invite.py)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# At 0006_invites: Ann (1), Bob (2), Cy (3). Room 1 PUBLIC (Ann, Bob: added by Ann; two
# messages, a reaction), room 2 PRIVATE (Bob's; Cy removed and banned by Bob; an invite), room 3
# the DIRECT room of Ann and Bob.
BEFORE = [
    "INSERT INTO users (id, name, email, email_hash, password_hash, created_at) VALUES "
    f"(1, 'Ann', 'a@x.io', 'h1', 'p', {T}), (2, 'Bob', 'b@x.io', 'h2', 'p', {T}), (3, 'Cy', 'c@x.io', 'h3', 'p', {T})",
    "INSERT INTO tokens (id, user_id, token_hash, created_at, expires_at) VALUES "
    + ", ".join(
        f"({n}, {n}, '{_digest(TOKENS[name])}', {T}, {LATER})" for n, name in enumerate(("Ann", "Bob", "Cy"), start=1)
    ),
    "INSERT INTO rooms (id, name, created_by, last_seq, last_event_seq, created_at, kind, member_count, direct_key) "
    f"VALUES (1, 'lobby', 1, 2, 5, {T}, 'PUBLIC', 2, NULL), (2, 'secret', 2, 0, 3, {T}, 'PRIVATE', 1, NULL), "
    f"(3, 'dm', 1, 0, 2, {T}, 'DIRECT', 2, '1,2')",
    "INSERT INTO memberships (room_id, user_id, joined_at, role) VALUES "
    f"(1, 1, {T}, 'OWNER'), (1, 2, {T}, 'MEMBER'), (2, 2, {T}, 'OWNER'), (3, 1, {T}, 'MEMBER'), (3, 2, {T}, 'MEMBER')",
    "INSERT INTO messages (id, room_id, seq, sender_id, body, created_at, event_seq, sender_seq) VALUES "
    f"(1, 1, 1, 1, 'hello', {T}, 3, 1), (2, 1, 2, 2, 'hi', {T}, 4, 1)",
    f"INSERT INTO reactions (message_id, user_id, emoji, created_at) VALUES (2, 1, 'ok', {T})",
    "INSERT INTO room_events (room_id, seq, kind, at, user_id, message_id, data) VALUES "
    f"(1, 1, 'member_joined', {T}, 1, NULL, NULL), (1, 2, 'member_joined', {T}, 2, NULL, '{{\"by\":1}}'), "
    f"(1, 3, 'message_created', {T}, 1, 1, NULL), (1, 4, 'message_created', {T}, 2, 2, NULL), "
    f'(1, 5, \'reaction_changed\', {T}, 1, 2, \'{{"emoji":"ok","added":true}}\'), '
    f"(2, 1, 'member_joined', {T}, 2, NULL, NULL), (2, 2, 'member_joined', {T}, 3, NULL, NULL), "
    f"(2, 3, 'member_removed', {T}, 3, NULL, '{{\"by\":2,\"banned\":true}}'), "
    f"(3, 1, 'member_joined', {T}, 1, NULL, NULL), (3, 2, 'member_joined', {T}, 2, NULL, '{{\"by\":1}}')",
    f"INSERT INTO room_bans (room_id, user_id, banned_by, banned_at) VALUES (2, 3, 2, {T})",
    "INSERT INTO room_invites (id, code_hash, room_id, created_by, created_at, expires_at, uses_left) "
    f"VALUES (1, '{_digest(INVITE)}', 2, 2, {T}, NULL, NULL)",
]

# Every relation, read through names: the same before and after.
RELATIONS = {
    "SELECT r.name, u.name, m.role FROM memberships m JOIN rooms r ON r.id = m.room_id "
    "JOIN users u ON u.id = m.user_id ORDER BY r.name, u.name": [
        ("dm", "Ann", "MEMBER"),
        ("dm", "Bob", "MEMBER"),
        ("lobby", "Ann", "OWNER"),
        ("lobby", "Bob", "MEMBER"),
        ("secret", "Bob", "OWNER"),
    ],
    "SELECT r.name, u.name FROM rooms r JOIN users u ON u.id = r.created_by ORDER BY r.name": [
        ("dm", "Ann"),
        ("lobby", "Ann"),
        ("secret", "Bob"),
    ],
    "SELECT r.name, m.seq, u.name, m.body FROM messages m JOIN rooms r ON r.id = m.room_id "
    "JOIN users u ON u.id = m.sender_id ORDER BY m.seq": [("lobby", 1, "Ann", "hello"), ("lobby", 2, "Bob", "hi")],
    "SELECT m.body, u.name, x.emoji FROM reactions x JOIN messages m ON m.id = x.message_id "
    "JOIN users u ON u.id = x.user_id": [("hi", "Ann", "ok")],
    "SELECT r.name, e.seq, e.kind, u.name, m.body FROM room_events e JOIN rooms r ON r.id = e.room_id "
    "JOIN users u ON u.id = e.user_id LEFT JOIN messages m ON m.id = e.message_id ORDER BY r.name, e.seq": [
        ("dm", 1, "member_joined", "Ann", None),
        ("dm", 2, "member_joined", "Bob", None),
        ("lobby", 1, "member_joined", "Ann", None),
        ("lobby", 2, "member_joined", "Bob", None),
        ("lobby", 3, "message_created", "Ann", "hello"),
        ("lobby", 4, "message_created", "Bob", "hi"),
        ("lobby", 5, "reaction_changed", "Ann", "hi"),
        ("secret", 1, "member_joined", "Bob", None),
        ("secret", 2, "member_joined", "Cy", None),
        ("secret", 3, "member_removed", "Cy", None),
    ],
    "SELECT r.name, u.name, b.name FROM room_bans x JOIN rooms r ON r.id = x.room_id "
    "JOIN users u ON u.id = x.user_id JOIN users b ON b.id = x.banned_by": [("secret", "Cy", "Bob")],
    "SELECT r.name, u.name FROM room_invites i JOIN rooms r ON r.id = i.room_id JOIN users u ON u.id = i.created_by": [
        ("secret", "Bob")
    ],
    "SELECT u.name, t.token_hash FROM tokens t JOIN users u ON u.id = t.user_id ORDER BY u.name": [
        (name, _digest(token)) for name, token in sorted(TOKENS.items())
    ],
}
IDS = {
    "users": "SELECT name, id FROM users",
    "rooms": "SELECT name, id FROM rooms",
    "messages": "SELECT body, id FROM messages",
}
EVENT_DATA = "SELECT r.name, e.seq, e.data FROM room_events e JOIN rooms r ON r.id = e.room_id WHERE e.data IS NOT NULL"
# Every id column and every column with a foreign key to one.
REFERENCES = {
    *((table, "id") for table in ("users", "rooms", "messages")),
    *(("tokens", "user_id"), ("rooms", "created_by"), ("memberships", "room_id"), ("memberships", "user_id")),
    *(("room_bans", "room_id"), ("room_bans", "user_id"), ("room_bans", "banned_by")),
    *(("room_invites", "room_id"), ("room_invites", "created_by"), ("messages", "room_id")),
    *(("messages", "sender_id"), ("reactions", "message_id"), ("reactions", "user_id")),
    *(("room_events", "room_id"), ("room_events", "user_id"), ("room_events", "message_id")),
}
DIRECT_KEY = "SELECT direct_key FROM rooms WHERE kind = 'DIRECT'"


def check(read: Callable[[str], list[tuple]]) -> dict[str, dict[str, int]]:
    """The relations kept, every id new and random-sized; the new ids by name (body)."""
    for sql, expected in RELATIONS.items():
        assert read(sql) == expected, sql
    ids = {table: {str(name): int(id) for name, id in read(sql)} for table, sql in IDS.items()}
    assert [len(found) for found in ids.values()] == [3, 3, 2]
    for found in ids.values():
        assert all(2**32 <= id < 2**63 for id in found.values()), found
    users = ids["users"]
    data = {(room, seq): text for room, seq, text in read(EVENT_DATA)}
    assert data == {
        ("lobby", 2): f'{{"by":{users["Ann"]}}}',
        ("lobby", 5): '{"emoji":"ok","added":true}',
        ("secret", 3): f'{{"by":{users["Bob"]},"banned":true}}',
        ("dm", 2): f'{{"by":{users["Ann"]}}}',
    }
    assert read(DIRECT_KEY) == [(",".join(str(id) for id in sorted((users["Ann"], users["Bob"]))),)]
    return ids


async def test_more_rows_than_a_batch_on_sqlite(tmp_path: Path) -> None:
    """11,000 users, DIRECT rooms and events, past the migration's batches of 5,000: each gets
    its own new id, each key and each `by` follows its people."""
    path = tmp_path / "chat.db"
    url = f"sqlite:///{path}"
    n = 11_000
    numbers = f"WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < {n}) "
    other = f"(i % {n} + 1)"
    rows = [
        f"{numbers}INSERT INTO users (id, name, email, email_hash, password_hash, created_at) "
        f"SELECT i, 'u' || i, 'e' || i, 'h', 'p', {T} FROM g",
        f"{numbers}INSERT INTO rooms (id, name, created_by, last_seq, last_event_seq, created_at, kind, "
        f"member_count, direct_key) SELECT i, 'r' || i, i, 0, 1, {T}, 'DIRECT', 2, "
        f"min(i, {other}) || ',' || max(i, {other}) FROM g",
        f"{numbers}INSERT INTO room_events (room_id, seq, kind, at, user_id, data) "
        f"SELECT i, 1, 'member_joined', {T}, i, '{{\"by\":' || {other} || '}}' FROM g",
    ]
    await seed(url, "0006_invites", rows)
    upgrade(url, "0007_opaque_ids")
    with sqlite3.connect(path) as connection:
        users = dict(connection.execute("SELECT name, id FROM users").fetchall())
        rooms = connection.execute(
            "SELECT r.name, r.id, r.direct_key, u.name, e.data FROM rooms r JOIN users u ON u.id = r.created_by "
            "JOIN room_events e ON e.room_id = r.id AND e.user_id = r.created_by"
        ).fetchall()
    assert len(set(users.values())) == n and all(2**32 <= id < 2**63 for id in users.values())
    assert len(rooms) == n and len({room[1] for room in rooms}) == n
    for name, room_id, key, creator, data in rooms:
        i = int(name[1:])
        assert creator == f"u{i}" and 2**32 <= room_id < 2**63
        assert data == f'{{"by":{users[f"u{i % n + 1}"]}}}'
        assert key == ",".join(str(id) for id in sorted((users[f"u{i}"], users[f"u{i % n + 1}"])))


async def test_a_new_id_drawn_twice_is_drawn_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The migration's own draw, made to repeat itself: the row whose id was taken draws again."""
    path = tmp_path / "chat.db"
    await seed(f"sqlite:///{path}", "0006_invites", BEFORE[:1])  # users 1, 2, 3
    spec = importlib.util.spec_from_file_location("opaque_ids", MIGRATION)
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    low = 2**32
    draws = iter([low, low, low + 1, low + 1, low + 2])  # 2 meets 1's id, then 3's
    monkeypatch.setattr(migration, "_new_id", lambda: next(draws))
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as connection, Operations.context(MigrationContext.configure(connection)):
            migration._map(connection, "users")
            mapped = connection.execute(sa.text("SELECT old_id, new_id FROM _ids_users ORDER BY old_id")).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in mapped] == [(1, low), (2, low + 2), (3, low + 1)]
    assert next(draws, None) is None


async def test_on_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    url = f"sqlite:///{path}"
    await seed(url, "0006_invites", BEFORE)
    with sqlite3.connect(path) as connection:
        before = {sql: [tuple(row) for row in connection.execute(sql).fetchall()] for sql in RELATIONS}
    assert before == RELATIONS
    upgrade(url, "0007_opaque_ids")
    with sqlite3.connect(path) as connection:
        ids = check(lambda sql: [tuple(row) for row in connection.execute(sql).fetchall()])
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert not {table for table in tables if table.startswith("_ids_")}
    upgrade(url, "head")  # the served app needs every later migration too
    server = Server(env={"DATABASE_URL": url, "REDIS_URL": ""}, workers=1).start()
    try:
        await through_the_api(server, ids)
    finally:
        server.stop()


async def test_on_postgres(postgres_url: str) -> None:
    await seed(postgres_url, "0006_invites", BEFORE)
    connection = await asyncpg.connect(postgres_url)
    try:
        assert {sql: [tuple(row) for row in await connection.fetch(sql)] for sql in RELATIONS} == RELATIONS
        keys_before = await _foreign_keys(connection)
    finally:
        await connection.close()
    upgrade(postgres_url, "0007_opaque_ids")
    connection = await asyncpg.connect(postgres_url)
    try:
        results = {sql: [tuple(row) for row in await connection.fetch(sql)] for sql in [*RELATIONS, *IDS.values()]}
        results[EVENT_DATA] = [tuple(row) for row in await connection.fetch(EVENT_DATA)]
        results[DIRECT_KEY] = [tuple(row) for row in await connection.fetch(DIRECT_KEY)]
        # The foreign keys are made again as they were; every id column and every column that
        # refers to one is BIGINT; no id has a default (nor a sequence) left.
        assert await _foreign_keys(connection) == keys_before
        typed = await connection.fetch(
            "SELECT c.conrelid::regclass::text, a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_constraint c "
            "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey) WHERE c.contype = 'f' "
            "AND c.confrelid::regclass::text IN ('users', 'rooms', 'messages') UNION ALL "
            "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'public' "
            "AND table_name IN ('users', 'rooms', 'messages') AND column_name = 'id'"
        )
        assert {(row[0], row[1]) for row in typed} == REFERENCES
        assert {row[2] for row in typed} == {"bigint"}
        defaults = await connection.fetch(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND table_name IN ('users', 'rooms', 'messages') AND column_name = 'id' AND column_default IS NOT NULL"
        )
        assert defaults == []
        sequences = await connection.fetch("SELECT sequence_name FROM information_schema.sequences")
        assert sorted(row[0] for row in sequences) == ["room_invites_id_seq", "tokens_id_seq"]
        with pytest.raises(asyncpg.NotNullViolationError):
            await connection.execute(
                "INSERT INTO users (name, email, email_hash, password_hash, created_at) "
                f"VALUES ('D', 'd@x.io', 'h', 'p', {T})"
            )
    finally:
        await connection.close()
    ids = check(results.__getitem__)
    upgrade(postgres_url, "head")  # the served app needs every later migration too
    server = Server(env={"DATABASE_URL": postgres_url, "REDIS_URL": ""}, workers=1).start()
    try:
        await through_the_api(server, ids)
    finally:
        server.stop()


async def _foreign_keys(connection: asyncpg.Connection) -> list[tuple]:
    rows = await connection.fetch(
        "SELECT conname, conrelid::regclass::text, confrelid::regclass::text, pg_get_constraintdef(oid) "
        "FROM pg_constraint WHERE contype = 'f' ORDER BY conname"
    )
    return [tuple(row) for row in rows]


ME = "{ me { id name } }"
ROOM = "query($id: ID!) { room(id: $id) { id name messages { edges { node { id body sender { id name } } } } } }"
EVENTS = """query($id: ID!, $after: String) { room(id: $id) { events(after: $after) { edges { cursor node {
  __typename ... on MemberJoined { user { name } by { name } }
  ... on MemberRemoved { user { name } remover: by { name } banned }
} } } } }"""
RESUME = "subscription($r: ID!, $a: String) { roomEvents(room: $r, after: $a) { cursor } }"
MARK_READ = "mutation($r: ID!, $c: String!) { markRead(room: $r, upTo: $c) { id } }"
OPEN_DIRECT = "mutation($u: [ID!]!) { openDirect(users: $u) { id kind } }"
JOIN_BY_INVITE = "mutation($c: String!) { joinByInvite(code: $c) { id name } }"
EDIT = 'mutation($id: ID!) { editMessage(id: $id, body: "x") { id } }'


def _old_cursor(room: int, seq: int) -> str:
    return base64.urlsafe_b64encode(f"event:{room}:{seq}".encode()).decode()


async def through_the_api(server: Server, ids: dict[str, dict[str, int]]) -> None:
    users, rooms, messages = ids["users"], ids["rooms"], ids["messages"]
    ann, bob, cy = TOKENS["Ann"], TOKENS["Bob"], TOKENS["Cy"]
    api = GraphQLClient(server.url)
    try:
        # A token from before signs in the same person, under their new id.
        assert api.data(ME, token=ann)["me"] == {"id": str(users["Ann"]), "name": "Ann"}
        # The old ids name nothing: NOT_FOUND, as any id that names nothing.
        for old in ("1", "2", "3"):
            assert api.error_codes(ROOM, {"id": old}, ann) == ["NOT_FOUND"]
        assert api.error_codes(EDIT, {"id": "1"}, ann) == ["NOT_FOUND"]
        assert api.error_codes(OPEN_DIRECT, {"u": ["2"]}, ann) == ["NOT_FOUND"]
        # The new ones name what the old ones did.
        lobby = api.data(ROOM, {"id": str(rooms["lobby"])}, ann)["room"]
        assert [edge["node"] for edge in lobby["messages"]["edges"]] == [
            {"id": str(messages["hi"]), "body": "hi", "sender": {"id": str(users["Bob"]), "name": "Bob"}},
            {"id": str(messages["hello"]), "body": "hello", "sender": {"id": str(users["Ann"]), "name": "Ann"}},
        ]
        events = api.data(EVENTS, {"id": str(rooms["secret"])}, bob)["room"]["events"]["edges"]
        assert [edge["node"] for edge in events] == [
            {"__typename": "MemberJoined", "user": {"name": "Bob"}, "by": None},
            {"__typename": "MemberJoined", "user": {"name": "Cy"}, "by": None},
            {"__typename": "MemberRemoved", "user": {"name": "Cy"}, "remover": {"name": "Bob"}, "banned": True},
        ]
        joined = api.data(EVENTS, {"id": str(rooms["lobby"])}, ann)["room"]["events"]["edges"][1]["node"]
        assert joined == {"__typename": "MemberJoined", "user": {"name": "Bob"}, "by": {"name": "Ann"}}
        # A cursor held from before names the old room: refused, never a resume somewhere else.
        held = _old_cursor(1, 3)
        assert api.error_codes(EVENTS, {"id": str(rooms["lobby"]), "after": held}, ann) == ["BAD_USER_INPUT"]
        assert api.error_codes(MARK_READ, {"r": str(rooms["lobby"]), "c": held}, ann) == ["BAD_USER_INPUT"]
        # So does a client reconnecting with what it held: the old room, or the old cursor.
        ws = await GraphQLWebSocket.open(server.ws_url, PROTOCOLS[0], ann)
        try:
            for number, (room, codes) in enumerate(((1, "NOT_FOUND"), (rooms["lobby"], "BAD_USER_INPUT"))):
                await ws.subscribe(str(number), RESUME, {"r": str(room), "a": held})
                assert [error["extensions"]["code"] for error in await ws.error(str(number))] == [codes]
        finally:
            await ws.close()
        # A DIRECT room is still found by its people, whoever opens it, in any order.
        dm = {"id": str(rooms["dm"]), "kind": "DIRECT"}
        assert api.data(OPEN_DIRECT, {"u": [str(users["Bob"])]}, ann)["openDirect"] == dm
        assert api.data(OPEN_DIRECT, {"u": [str(users["Ann"])]}, bob)["openDirect"] == dm
        # The invite leads to its room; the ban holds.
        assert api.data(JOIN_BY_INVITE, {"c": INVITE}, ann)["joinByInvite"] == {
            "id": str(rooms["secret"]),
            "name": "secret",
        }
        assert api.error_codes(JOIN_BY_INVITE, {"c": INVITE}, cy) == ["FORBIDDEN"]
    finally:
        api.close()
