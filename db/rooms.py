"""Rooms and who belongs to them."""

from collections import defaultdict

import sqlalchemy as sa

from db.connection import database
from db.records import Row, as_row, as_rows, now
from db.tables import memberships, rooms, users
from db.users import PUBLIC_COLUMNS as USER_COLUMNS

ROOM_COLUMNS = (rooms.c.id, rooms.c.name, rooms.c.created_by, rooms.c.created_at)


async def create_room(name: str, creator_id: int) -> Row:
    """The room and its creator's membership commit together."""
    async with database.transaction():
        created = now()
        room = as_row(
            await database.fetch_one(
                rooms.insert()
                .values(name=name, created_by=creator_id, last_seq=0, created_at=created)
                .returning(*ROOM_COLUMNS)
            )
        )
        assert room is not None
        await database.execute(memberships.insert().values(room_id=room["id"], user_id=creator_id, joined_at=created))
    return room


async def room_by_id(room_id: int) -> Row | None:
    return as_row(await database.fetch_one(sa.select(*ROOM_COLUMNS).where(rooms.c.id == room_id)))


async def rooms_by_ids(ids: list[int]) -> list[Row]:
    return as_rows(await database.fetch_all(sa.select(*ROOM_COLUMNS).where(rooms.c.id.in_(ids))))


async def rooms_of_user(user_id: int) -> list[Row]:
    """The user's rooms, oldest membership first."""
    query = (
        sa.select(*ROOM_COLUMNS)
        .select_from(rooms.join(memberships, memberships.c.room_id == rooms.c.id))
        .where(memberships.c.user_id == user_id)
        .order_by(memberships.c.joined_at, rooms.c.id)
    )
    return as_rows(await database.fetch_all(query))


async def is_member(room_id: int, user_id: int) -> bool:
    query = sa.select(memberships.c.room_id).where(memberships.c.room_id == room_id, memberships.c.user_id == user_id)
    return await database.fetch_one(query) is not None


async def add_member(room_id: int, user_id: int) -> None:
    """Idempotent: joining a room twice leaves one membership."""
    if await is_member(room_id, user_id):
        return
    try:
        await database.execute(memberships.insert().values(room_id=room_id, user_id=user_id, joined_at=now()))
    except Exception:
        if not await is_member(room_id, user_id):  # lost a race with a concurrent join: fine
            raise


async def remove_member(room_id: int, user_id: int) -> bool:
    """True when there was a membership to remove."""
    if not await is_member(room_id, user_id):
        return False
    await database.execute(
        memberships.delete().where(memberships.c.room_id == room_id, memberships.c.user_id == user_id)
    )
    return True


async def members_by_room_ids(room_ids: list[int]) -> dict[int, list[Row]]:
    """Members of each room, in order of joining."""
    query = (
        sa.select(memberships.c.room_id, *USER_COLUMNS)
        .select_from(memberships.join(users, memberships.c.user_id == users.c.id))
        .where(memberships.c.room_id.in_(room_ids))
        .order_by(memberships.c.joined_at, users.c.id)
    )
    grouped: dict[int, list[Row]] = defaultdict(list)
    for row in as_rows(await database.fetch_all(query)):
        grouped[row.pop("room_id")].append(row)
    return grouped
