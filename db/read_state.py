"""A member's read position, and unread counts that never count history.

The position is kept as three numbers on the membership: the log position read up to, the
message seq it stands for, and how many of the member's own messages were at or before it.
With the room's message head and the member's own running count:

    unread = (head - read seq) - (own count - own at read)

so a room's count is one row, and a hundred rooms' one query. Marking read only moves forward,
and is an event on the room's log (the member's other devices see it live).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from databases import Database

from db import room_events
from db.messages import Refused
from db.pool import fetch_rows
from db.records import Row, as_row, now
from db.tables import memberships, messages, rooms


@dataclass(frozen=True)
class ReadState:
    read_event_seq: int
    unread: int


ZERO: sa.ColumnElement[int] = sa.literal_column("0")  # no parameter: the statement is also kept as text (db.rooms)
_UNREAD = (rooms.c.last_seq - memberships.c.read_seq) - (memberships.c.own_count - memberships.c.own_at_read)
STATE_COLUMNS = (
    memberships.c.room_id,
    memberships.c.read_event_seq,
    sa.case((_UNREAD < ZERO, ZERO), else_=_UNREAD).label("unread"),  # never below zero, as it is read
)


def state_of(row: Row) -> ReadState:
    return ReadState(int(row["read_event_seq"]), int(row["unread"]))


async def read_states(db: Database, user_id: int, room_ids: list[int]) -> dict[int, ReadState]:
    """The user's read state in each of these rooms they belong to: one query."""
    query = (
        sa.select(*STATE_COLUMNS)
        .select_from(memberships.join(rooms, rooms.c.id == memberships.c.room_id))
        .where(memberships.c.user_id == user_id, memberships.c.room_id.in_(room_ids))
    )
    return {row["room_id"]: state_of(row) for row in await fetch_rows(db, query)}


async def mark_read(db: Database, room_id: int, user: Row, up_to: int) -> room_events.Event | None:
    """Move the user's read position to the log's `up_to` (no further than its head): the
    `read_up_to` event, or None when that is not past where they were. Raises Refused for a
    non-member."""
    async with db.transaction():
        head = await db.fetch_val(sa.select(rooms.c.last_event_seq).where(rooms.c.id == room_id))
        if head is None:
            raise Refused("not_found")
        up_to = min(up_to, int(head))
        read_seq = await db.fetch_val(
            sa.select(sa.func.coalesce(sa.func.max(messages.c.seq), 0)).where(
                messages.c.room_id == room_id, messages.c.event_seq <= up_to
            )
        )
        own_at_read = await db.fetch_val(
            sa.select(sa.func.coalesce(sa.func.max(messages.c.sender_seq), 0)).where(
                messages.c.room_id == room_id, messages.c.sender_id == user["id"], messages.c.seq <= read_seq
            )
        )
        moved = as_row(
            await db.fetch_one(
                memberships.update()
                .where(
                    memberships.c.room_id == room_id,
                    memberships.c.user_id == user["id"],
                    memberships.c.read_event_seq < up_to,
                )
                .values(read_event_seq=up_to, read_seq=read_seq, own_at_read=own_at_read)
                .returning(memberships.c.room_id)
            )
        )
        if moved is None:
            query = sa.select(memberships.c.room_id).where(
                memberships.c.room_id == room_id, memberships.c.user_id == user["id"]
            )
            if await db.fetch_one(query) is None:
                raise Refused("not_member")
            return None
        room, seq = await room_events.next_event(db, room_id)
        at = now()
        data = {"up_to": up_to}
        await room_events.append(db, room_id, seq, room_events.READ_UP_TO, at, user_id=user["id"], data=data)
    return room_events.event(seq, room_events.READ_UP_TO, at, room, user=user, data=data)
