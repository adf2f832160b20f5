"""Opaque ids: every user, room and message gets a new random id, and the old ones name nothing.

Ids were sequential integers, so one told how many users, rooms or messages existed and named
its neighbours. Now an id is a random number in [2**32, 2**63) (db/ids.py), drawn here with
`secrets` for every existing row, and every reference follows it:
- each column with a foreign key to users.id, rooms.id or messages.id, found in the database
  itself (so a table another migration added before this one is carried along too);
- the `by` (a user id) in a room event's `data` (MemberJoined, MemberRemoved, RoleChanged);
- `rooms.direct_key`, the sorted ids of a DIRECT room's people, rebuilt from their new ids, so
  `openDirect` with the same people still finds the same room.
An old id is below 2**31, a new one at least 2**32: no old id can ever name a row again, and no
key or id being rewritten can meet one not yet rewritten (no transient unique violation).

On Postgres, the foreign keys to the three tables are dropped, the ids and every column that
refers to one become BIGINT, the rows are renumbered and the foreign keys made again as they
were; the id sequences are dropped with their defaults (an insert without an id fails rather
than taking a countable number). On SQLite, INTEGER already holds 64 bits and its column types
stay; foreign keys are deferred to the commit should they be enforced. The new ids go through
mapping tables (`_ids_users`, `_ids_rooms`, `_ids_messages`: old id, new id) filled in batches
and dropped at the end. Two rows drawing the same new id (likelier here than for one insert, a
birthday problem: about n**2 / 2**64 for n rows, one chance in 1,800 for a hundred million) is
kept out by the mapping table's unique index: the row whose id was taken draws again.

Everything a client kept across it stops resolving: an old id answers NOT_FOUND, an event
cursor (it names the room) BAD_USER_INPUT; a client reads its rooms again.

Irreversible: the old ids are not kept.

Revision ID: 0007_opaque_ids
Revises: 0006_invites
Create Date: 2026-12-07
"""

from __future__ import annotations

import json
import secrets
from collections import defaultdict
from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import Connection

revision = "0007_opaque_ids"
down_revision = "0006_invites"
branch_labels = None
depends_on = None

RENUMBERED = ("users", "rooms", "messages")
MIN_ID, MAX_ID = 2**32, 2**63 - 1
BATCH = 5_000


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    inspector = sa.inspect(bind)
    foreign_keys = [
        (table, key)
        for table in inspector.get_table_names()
        for key in inspector.get_foreign_keys(table)
        if key["referred_table"] in RENUMBERED
    ]
    # table -> [(column, the renumbered table whose id it holds)], the ids themselves first.
    columns: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for table in RENUMBERED:
        columns[table].append(("id", table))
    for table, key in foreign_keys:
        for column in key["constrained_columns"]:
            columns[table].append((column, key["referred_table"]))
    if postgres:
        for table, key in foreign_keys:
            op.drop_constraint(key["name"], table, type_="foreignkey")
        _widen(bind, columns)
    else:
        op.execute("PRAGMA defer_foreign_keys = ON")
    for table in RENUMBERED:
        _map(bind, table)
    for table, pairs in columns.items():
        _renumber(bind, table, pairs)
    _rekey_direct_rooms(bind)
    _follow_event_data(bind)
    for table in RENUMBERED:
        op.drop_table(f"_ids_{table}")
    if postgres:
        for table, key in foreign_keys:
            options = {name: value for name, value in key.get("options", {}).items() if value is not None}
            op.create_foreign_key(
                key["name"],
                table,
                key["referred_table"],
                key["constrained_columns"],
                key["referred_columns"],
                **options,
            )
        for table in RENUMBERED:
            sequence = bind.scalar(sa.text(f"SELECT pg_get_serial_sequence('{table}', 'id')"))
            op.execute(f"ALTER TABLE {table} ALTER COLUMN id DROP DEFAULT")
            if sequence is not None:
                op.execute(f"DROP SEQUENCE IF EXISTS {sequence}")


def downgrade() -> None:
    raise NotImplementedError("0007_opaque_ids is irreversible: the old sequential ids are not kept.")


def _quote(bind: Connection, name: str) -> str:
    return bind.dialect.identifier_preparer.quote(name)


def _widen(bind: Connection, columns: dict[str, list[tuple[str, str]]]) -> None:
    """Postgres: every id column and every column referring to one becomes BIGINT, one ALTER
    (one rewrite) per table."""
    inspector = sa.inspect(bind)
    for table, pairs in columns.items():
        types = {column["name"]: column["type"] for column in inspector.get_columns(table)}
        narrow = [column for column, _ in pairs if not isinstance(types[column], sa.BigInteger)]
        if narrow:
            changes = ", ".join(f"ALTER COLUMN {_quote(bind, column)} TYPE BIGINT" for column in narrow)
            op.execute(f"ALTER TABLE {_quote(bind, table)} {changes}")


def _map(bind: Connection, table: str) -> None:
    """`_ids_<table>`: a new random id for each row's old one, written in batches."""
    op.create_table(
        f"_ids_{table}",
        sa.Column("old_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("new_id", sa.BigInteger, nullable=False, unique=True),
    )
    insert = sa.text(f"INSERT INTO _ids_{table} (old_id, new_id) VALUES (:old_id, :new_id) ON CONFLICT DO NOTHING")
    mapped = sa.text(f"SELECT old_id FROM _ids_{table} WHERE old_id IN :ids").bindparams(
        sa.bindparam("ids", expanding=True)
    )
    after: int | None = None
    while True:
        where = "" if after is None else f"WHERE id > {int(after)} "
        ids = list(bind.scalars(sa.text(f"SELECT id FROM {table} {where}ORDER BY id LIMIT {BATCH}")))
        if not ids:
            return
        pending = ids
        while pending:  # a new id already taken: that row draws again
            bind.execute(insert, [{"old_id": old, "new_id": _new_id()} for old in pending])
            done = set(bind.scalars(mapped, {"ids": pending}))
            pending = [old for old in pending if old not in done]
        after = ids[-1]


def _new_id() -> int:
    """db.ids.new_id as it is today (a migration keeps its own copy of what it runs)."""
    return MIN_ID + secrets.randbelow(MAX_ID - MIN_ID + 1)


def _renumber(bind: Connection, table: str, pairs: Sequence[tuple[str, str]]) -> None:
    """Every id in these columns becomes its row's new id, in one UPDATE of the table; a value
    with no row behind it (SQLite enforces no foreign key) is left as it is: it names nothing."""
    quoted = _quote(bind, table)
    changes = ", ".join(
        f"{_quote(bind, column)} = COALESCE((SELECT new_id FROM _ids_{referred} "
        f"WHERE old_id = {quoted}.{_quote(bind, column)}), {quoted}.{_quote(bind, column)})"
        for column, referred in pairs
    )
    op.execute(f"UPDATE {quoted} SET {changes}")


def _new_user_ids(bind: Connection, old: Iterable[int]) -> dict[int, int]:
    wanted = sorted(set(old))
    if not wanted:
        return {}
    query = sa.text("SELECT old_id, new_id FROM _ids_users WHERE old_id IN :ids").bindparams(
        sa.bindparam("ids", expanding=True)
    )
    return {int(row.old_id): int(row.new_id) for row in bind.execute(query, {"ids": wanted})}


def _rekey_direct_rooms(bind: Connection) -> None:
    """Each DIRECT room's key again from its people's new ids (db.rooms.direct_key: sorted,
    joined by commas). A person with no row (none is ever deleted) gets an id nobody has, so
    the key stays unique and no one opens the room by it."""
    update = sa.text("UPDATE rooms SET direct_key = :key WHERE id = :id")
    after: int | None = None
    while True:
        where = "" if after is None else f"AND id > {int(after)} "
        rows = bind.execute(
            sa.text(f"SELECT id, direct_key FROM rooms WHERE direct_key IS NOT NULL {where}ORDER BY id LIMIT {BATCH}")
        ).all()
        if not rows:
            return
        people = {row.id: [int(part) for part in row.direct_key.split(",") if part] for row in rows}
        new = _new_user_ids(bind, (person for group in people.values() for person in group))
        keys = []
        for room_id, group in people.items():
            ids = sorted({new[person] if person in new else _new_id() for person in group})
            keys.append({"id": room_id, "key": ",".join(str(person) for person in ids)})
        bind.execute(update, keys)
        after = rows[-1].id


def _follow_event_data(bind: Connection) -> None:
    """The `by` in a room event's data (a user id) becomes that user's new id (None for one with
    no row: nobody is ever deleted)."""
    update = sa.text("UPDATE room_events SET data = :data WHERE room_id = :room_id AND seq = :seq")
    after: tuple[int, int] | None = None
    while True:
        where = "" if after is None else f"AND (room_id > {after[0]} OR (room_id = {after[0]} AND seq > {after[1]})) "
        rows = bind.execute(
            sa.text(
                "SELECT room_id, seq, data FROM room_events WHERE data LIKE '%\"by\":%' "
                f"{where}ORDER BY room_id, seq LIMIT {BATCH}"
            )
        ).all()
        if not rows:
            return
        datas = [(row.room_id, row.seq, json.loads(row.data)) for row in rows]
        bys = [data["by"] for _, _, data in datas if isinstance(data, dict) and isinstance(data.get("by"), int)]
        new = _new_user_ids(bind, bys)
        changed = []
        for room_id, seq, data in datas:
            if isinstance(data, dict) and isinstance(data.get("by"), int):
                data["by"] = new.get(data["by"])
                changed.append({"room_id": room_id, "seq": seq, "data": json.dumps(data, separators=(",", ":"))})
        if changed:
            bind.execute(update, changed)
        after = (int(rows[-1].room_id), int(rows[-1].seq))
