"""Messages, numbered per room without gaps.

The number comes from `rooms.last_seq`, incremented in the same transaction as the insert:
the row lock serializes concurrent writers in a room, so a committed message N implies that
every message before N in that room has committed too.
"""

import sqlalchemy as sa

from db.connection import database
from db.records import Row, as_row, as_rows, now
from db.tables import messages, rooms, users

MESSAGE_COLUMNS = (
    messages.c.id,
    messages.c.room_id,
    messages.c.seq,
    messages.c.sender_id,
    messages.c.body,
    messages.c.created_at,
)


async def create_message(room_id: int, sender_id: int, body: str) -> Row:
    async with database.transaction():
        seq = await database.fetch_val(
            rooms.update()
            .where(rooms.c.id == room_id)
            .values(last_seq=rooms.c.last_seq + 1)
            .returning(rooms.c.last_seq)
        )
        row = await database.fetch_one(
            messages.insert()
            .values(room_id=room_id, seq=seq, sender_id=sender_id, body=body, created_at=now())
            .returning(*MESSAGE_COLUMNS)
        )
    return as_row(row)  # type: ignore[return-value]


async def message_by_id(message_id: int) -> Row | None:
    return as_row(await database.fetch_one(sa.select(*MESSAGE_COLUMNS).where(messages.c.id == message_id)))


async def newest_first(room_ids: list[int], limit: int, before_seq: int | None) -> dict[int, list[Row]]:
    """A page of history for each room, newest first, strictly before `before_seq` when given:
    one query for all the rooms (a window over each room's messages)."""
    position = sa.func.row_number().over(partition_by=messages.c.room_id, order_by=messages.c.seq.desc())
    inner = sa.select(*MESSAGE_COLUMNS, position.label("position")).where(messages.c.room_id.in_(room_ids))
    if before_seq is not None:
        inner = inner.where(messages.c.seq < before_seq)
    ranked = inner.subquery()
    query = (
        sa.select(*(ranked.c[column.name] for column in MESSAGE_COLUMNS))
        .where(ranked.c.position <= limit)
        .order_by(ranked.c.room_id, ranked.c.seq.desc())
    )
    pages: dict[int, list[Row]] = {room_id: [] for room_id in room_ids}
    for row in as_rows(await database.fetch_all(query)):
        pages[row["room_id"]].append(row)
    return pages


SENDER_COLUMNS = (users.c.name.label("sender_name"), users.c.email_hash.label("sender_email_hash"))


def _with_sender(row: Row) -> Row:
    """A message as live events carry it: its sender's public fields beside it, not a second read."""
    row["sender"] = {"id": row["sender_id"], "name": row.pop("sender_name"), "email_hash": row.pop("sender_email_hash")}
    return row


async def after_seq(room_id: int, seq: int, limit: int) -> list[Row]:
    """Messages of a room after `seq`, oldest first, each with its sender: what a resuming
    subscriber missed."""
    query = (
        sa.select(*MESSAGE_COLUMNS, *SENDER_COLUMNS)
        .select_from(messages.join(users, users.c.id == messages.c.sender_id))
        .where(messages.c.room_id == room_id, messages.c.seq > seq)
        .order_by(messages.c.seq)
        .limit(limit)
    )
    return [_with_sender(row) for row in as_rows(await database.fetch_all(query))]


async def newest(room_id: int, limit: int) -> list[Row]:
    """The room's last `limit` messages, oldest first, each with its sender. The last one's seq
    is the room's `last_seq`: both change in one transaction."""
    query = (
        sa.select(*MESSAGE_COLUMNS, *SENDER_COLUMNS)
        .select_from(messages.join(users, users.c.id == messages.c.sender_id))
        .where(messages.c.room_id == room_id)
        .order_by(messages.c.seq.desc())
        .limit(limit)
    )
    return [_with_sender(row) for row in reversed(as_rows(await database.fetch_all(query)))]


async def last_seq(room_id: int) -> int:
    value = await database.fetch_val(sa.select(rooms.c.last_seq).where(rooms.c.id == room_id))
    return int(value or 0)
