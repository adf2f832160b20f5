"""Messages, numbered per room without gaps.

The number comes from `rooms.last_seq`, incremented in the same transaction as the insert:
the row lock serializes concurrent writers in a room, so a committed message N implies that
every message before N in that room has committed too. The same transaction appends the
message's event to the room's log (db.room_events).
"""

import sqlalchemy as sa
from databases import Database

from db import room_events
from db.records import Row, as_row, as_rows, now
from db.tables import memberships, messages, rooms

ROOM_COLUMNS = (
    rooms.c.id,
    rooms.c.name,
    rooms.c.created_by,
    rooms.c.created_at,
    rooms.c.last_seq,
    rooms.c.last_event_seq,
)

MESSAGE_COLUMNS = (
    messages.c.id,
    messages.c.room_id,
    messages.c.seq,
    messages.c.sender_id,
    messages.c.body,
    messages.c.created_at,
)


async def create_message(db: Database, room_id: int, sender: Row, body: str) -> room_events.Event | None:
    """The new message's `message_created` event (the message, with its sender, in it); None
    when the sender is not a member of such a room. The membership is checked by the statement
    that takes the room's next numbers (one round trip: posting is the hot path of every room)."""
    member = sa.exists().where(memberships.c.room_id == room_id, memberships.c.user_id == sender["id"])
    async with db.transaction():
        numbers = as_row(
            await db.fetch_one(
                rooms.update()
                .where(rooms.c.id == room_id, member)
                .values(last_seq=rooms.c.last_seq + 1, last_event_seq=rooms.c.last_event_seq + 1)
                .returning(*ROOM_COLUMNS)
            )
        )
        if numbers is None:
            return None
        seq, event_seq = int(numbers["last_seq"]), int(numbers["last_event_seq"])
        room = {name: numbers[name] for name in room_events.ROOM_FIELDS}
        created = now()
        message = as_row(
            await db.fetch_one(
                messages.insert()
                .values(room_id=room["id"], seq=seq, sender_id=sender["id"], body=body, created_at=created)
                .values(event_seq=event_seq)
                .returning(*MESSAGE_COLUMNS)
            )
        )
        assert message is not None
        await room_events.append(
            db,
            room["id"],
            event_seq,
            room_events.MESSAGE_CREATED,
            created,
            user_id=sender["id"],
            message_id=message["id"],
        )
    message["sender"] = room_events.public_user(sender)
    return room_events.event(event_seq, room_events.MESSAGE_CREATED, created, room, user=sender, message=message)


async def newest_first(db: Database, room_ids: list[int], limit: int, before_seq: int | None) -> dict[int, list[Row]]:
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
    for row in as_rows(await db.fetch_all(query)):
        pages[row["room_id"]].append(row)
    return pages
