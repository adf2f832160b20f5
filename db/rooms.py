"""Rooms and who belongs to them. Joining and leaving are events on the room's log."""

from collections import defaultdict
from functools import cache

import sqlalchemy as sa
from databases import Database

from db import read_state, room_events
from db.pool import fetch_rows, fetch_views
from db.records import Row, RowView, as_row, now
from db.tables import memberships, rooms, users
from db.users import PUBLIC_COLUMNS as USER_COLUMNS

# What Room serves of the row, and the head of its log (who created it, and when, it does not serve).
ROOM_COLUMNS = (rooms.c.id, rooms.c.name, rooms.c.last_event_seq)


async def create_room(db: Database, name: str, creator: Row) -> tuple[Row, room_events.Event]:
    """The room, its creator's membership and the log's first event (the creator joined) commit
    together."""
    async with db.transaction():
        created = now()
        room = as_row(
            await db.fetch_one(
                rooms.insert()
                .values(name=name, created_by=creator["id"], last_seq=0, last_event_seq=1, created_at=created)
                .returning(*ROOM_COLUMNS)
            )
        )
        assert room is not None
        await db.execute(memberships.insert().values(room_id=room["id"], user_id=creator["id"], joined_at=created))
        await room_events.append(db, room["id"], 1, room_events.MEMBER_JOINED, created, user_id=creator["id"])
    return room, room_events.event(1, room_events.MEMBER_JOINED, created, room, user=creator)


async def room_by_id(db: Database, room_id: int) -> Row | None:
    return as_row(await db.fetch_one(sa.select(*ROOM_COLUMNS).where(rooms.c.id == room_id)))


@cache
def _rooms_by_ids() -> sa.Select:
    return sa.select(*ROOM_COLUMNS).where(rooms.c.id.in_(sa.bindparam("ids", expanding=True)))


async def rooms_by_ids(db: Database, ids: list[int]) -> list[Row]:
    return await fetch_rows(db, _rooms_by_ids(), {"ids": ids})


@cache
def _rooms_of_user() -> sa.TextClause:
    """The statement kept as SQL text, compiled once: building, binding and keying the statement
    on every call cost more than running it. (Not `.params()` on a bound statement: its copy
    keeps the original's cache key, and so its values.)"""
    statement = (
        sa.select(*ROOM_COLUMNS, *read_state.STATE_COLUMNS[1:])
        .select_from(rooms.join(memberships, memberships.c.room_id == rooms.c.id))
        .where(memberships.c.user_id == sa.bindparam("user_id"))
        .order_by(memberships.c.joined_at, rooms.c.id)
        .limit(sa.bindparam("limit"))
    )
    return sa.text(str(statement)).bindparams(
        sa.bindparam("user_id", type_=sa.Integer), sa.bindparam("limit", type_=sa.Integer)
    )


async def rooms_of_user(db: Database, user_id: int, limit: int) -> list[RowView]:
    """The user's first `limit` rooms, oldest membership first, each with the user's read state
    in it (rows only read: a list of a hundred of them is a common query)."""
    return await fetch_views(db, _rooms_of_user(), {"user_id": user_id, "limit": limit})


async def is_member(db: Database, room_id: int, user_id: int) -> bool:
    query = sa.select(memberships.c.room_id).where(memberships.c.room_id == room_id, memberships.c.user_id == user_id)
    return await db.fetch_one(query) is not None


async def add_member(db: Database, room: Row, user: Row) -> room_events.Event | None:
    """Idempotent: joining a room twice leaves one membership. The `member_joined` event, or
    None when the user was a member already."""
    if await is_member(db, room["id"], user["id"]):
        return None
    try:
        async with db.transaction():
            joined = now()
            await db.execute(memberships.insert().values(room_id=room["id"], user_id=user["id"], joined_at=joined))
            seq = await room_events.next_seq(db, room["id"])
            await room_events.append(db, room["id"], seq, room_events.MEMBER_JOINED, joined, user_id=user["id"])
    except Exception:
        if await is_member(db, room["id"], user["id"]):  # lost a race with a concurrent join: fine
            return None
        raise
    return room_events.event(seq, room_events.MEMBER_JOINED, joined, room, user=user)


async def remove_member(db: Database, room: Row, user: Row) -> room_events.Event | None:
    """The `member_left` event, or None when there was no membership to remove."""
    async with db.transaction():
        removed = await db.fetch_one(
            memberships.delete()
            .where(memberships.c.room_id == room["id"], memberships.c.user_id == user["id"])
            .returning(memberships.c.user_id)
        )
        if removed is None:
            return None
        left = now()
        seq = await room_events.next_seq(db, room["id"])
        await room_events.append(db, room["id"], seq, room_events.MEMBER_LEFT, left, user_id=user["id"])
    return room_events.event(seq, room_events.MEMBER_LEFT, left, room, user=user)


async def members_by_room_ids(db: Database, room_ids: list[int], limit: int) -> dict[int, list[Row]]:
    """The first `limit` members of each room, in order of joining: one statement for all the
    rooms (a window over each room's memberships), however many there are."""
    return await _grouped_by_room(db, _members_by_room_ids(), {"room_ids": room_ids, "limit": limit})


@cache
def _members_by_room_ids() -> sa.Select:
    position = sa.func.row_number().over(
        partition_by=memberships.c.room_id, order_by=(memberships.c.joined_at, memberships.c.user_id)
    )
    ranked = (
        sa.select(memberships.c.room_id, memberships.c.user_id, memberships.c.joined_at, position.label("position"))
        .where(memberships.c.room_id.in_(sa.bindparam("room_ids", expanding=True)))
        .subquery()
    )
    return (
        sa.select(ranked.c.room_id, *USER_COLUMNS)
        .select_from(ranked.join(users, users.c.id == ranked.c.user_id))
        .where(ranked.c.position <= sa.bindparam("limit", type_=sa.Integer))
        .order_by(ranked.c.room_id, ranked.c.position)
    )


async def _grouped_by_room(db: Database, statement: sa.Select, values: dict) -> dict[int, list[Row]]:
    grouped: dict[int, list[Row]] = defaultdict(list)
    for row in await fetch_rows(db, statement, values):
        grouped[row.pop("room_id")].append(row)
    return grouped


async def members_among(db: Database, room_id: int, user_ids: list[int]) -> list[int]:
    """Those of `user_ids` who belong to the room now, in their order (a read as long as the
    list asked about, not as the room)."""
    query = sa.select(memberships.c.user_id).where(
        memberships.c.room_id == room_id, memberships.c.user_id.in_(user_ids)
    )
    belong = {row["user_id"] for row in await fetch_rows(db, query)}
    return [user_id for user_id in user_ids if user_id in belong]
