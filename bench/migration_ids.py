"""How long migration 0007_opaque_ids takes on a filled Postgres database: users, rooms, their
memberships, messages with their events, and reactions, made at 0006_invites in a few
statements; then the upgrade, timed as the release phase runs it (`python -m db.migrate`, a
process of its own; a no-op upgrade's time is printed too, the part that is only start-up).

    PATH=$PWD/.venv/bin:$PATH .venv/bin/python -m bench.migration_ids [--messages 200000]

Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import subprocess
import time

from tests.support.processes import create_database, drop_database, migrate, unique_name
from tests.test_migration_rooms import upgrade


def psql(url: str, sql: str) -> str:
    url = url.replace("postgres://", "postgresql://", 1)
    command = ["psql", url, "-v", "ON_ERROR_STOP=1", "-q", "-At", "-f", "-"]
    return subprocess.run(command, input=sql, check=True, capture_output=True, text=True).stdout


def seed(url: str, users: int, rooms: int, per_user: int, messages: int) -> None:
    """Each user in `per_user` rooms; `messages` spread over the rooms, each sent by a member,
    each with its event; one reaction on every tenth message."""
    psql(
        url,
        f"""
        INSERT INTO users (id, name, email, email_hash, password_hash, created_at)
        SELECT g, 'u' || g, 'u' || g || '@x.io', 'h', 'p', now() FROM generate_series(1, {users}) g;
        INSERT INTO rooms (id, name, created_by, created_at, kind)
        SELECT g, 'r' || g, 1 + g % {users}, now(), 'PUBLIC' FROM generate_series(1, {rooms}) g;
        INSERT INTO memberships (room_id, user_id, joined_at)
        SELECT DISTINCT 1 + (u * 7 + k * 13) % {rooms}, u, now()
        FROM generate_series(1, {users}) u, generate_series(1, {per_user}) k;
        INSERT INTO messages (id, room_id, seq, sender_id, body, created_at, event_seq, sender_seq)
        SELECT g, 1 + (g % {rooms}), 1 + g / {rooms}, 1 + (g % {users}), 'm' || g, now(), 1 + g / {rooms}, 1
        FROM generate_series(1, {messages}) g;
        INSERT INTO room_events (room_id, seq, kind, at, user_id, message_id)
        SELECT room_id, event_seq, 'message_created', created_at, sender_id, id FROM messages;
        INSERT INTO reactions (message_id, user_id, emoji, created_at)
        SELECT id, sender_id, 'ok', now() FROM messages WHERE id % 10 = 0;
        UPDATE rooms SET last_seq = (SELECT COALESCE(max(seq), 0) FROM messages WHERE room_id = rooms.id);
        UPDATE rooms SET last_event_seq = last_seq;
        ANALYZE;
        """,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rooms", type=int, default=1_000)
    parser.add_argument("--per-user", type=int, default=5)
    parser.add_argument("--messages", type=int, default=200_000)
    args = parser.parse_args()
    name = unique_name("bench_migration_ids")
    url = create_database(name)
    try:
        upgrade(url, "0006_invites")
        seed(url, args.users, args.rooms, args.per_user, args.messages)
        counts = psql(
            url,
            "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM rooms), (SELECT count(*) FROM memberships), "
            "(SELECT count(*) FROM messages), (SELECT count(*) FROM room_events), (SELECT count(*) FROM reactions)",
        ).strip()
        started = time.perf_counter()
        migrate({"DATABASE_URL": url})
        took = time.perf_counter() - started
        started = time.perf_counter()
        migrate({"DATABASE_URL": url})  # nothing left to do: start-up alone
        idle = time.perf_counter() - started
        low = psql(url, "SELECT count(*) FROM messages WHERE id < 4294967296").strip()
        print(f"rows (users|rooms|memberships|messages|events|reactions): {counts}")
        print(f"0007_opaque_ids: {took:.1f} s (a no-op upgrade: {idle:.1f} s); messages left below 2**32: {low}")
    finally:
        drop_database(name)


if __name__ == "__main__":
    main()
