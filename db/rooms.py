"""Rooms, who belongs to them and in what role, who is banned and who muted. Every change of
membership, role or room is an event on the room's log, in the transaction that makes it."""

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from functools import cache
from typing import Any

import sqlalchemy as sa
from databases import Database

from db import messages, read_state, room_events
from db.ids import new_id
from db.pool import fetch_rows, fetch_views
from db.records import Row, RowView, as_row, now
from db.tables import memberships, room_bans, rooms, users
from db.tables import messages as message_rows
from db.users import PUBLIC_COLUMNS as USER_COLUMNS
from db.users import is_unique_violation

# What Room serves of the row, and the head of its log (who created it, and when, it does not serve).
ROOM_COLUMNS = (
    rooms.c.id,
    rooms.c.name,
    rooms.c.last_event_seq,
    rooms.c.kind,
    rooms.c.topic,
    rooms.c.member_count,
    rooms.c.external_id,
)

PUBLIC, PRIVATE, DIRECT = "PUBLIC", "PRIVATE", "DIRECT"
OWNER, MODERATOR, MEMBER = "OWNER", "MODERATOR", "MEMBER"
# Who takes over when the last OWNER goes: the longest-standing of the first role present.
SUCCESSION = (MODERATOR, MEMBER)

# Decides, under the room's lock, whether an actor may act on a target: given the actor's role
# and the target's (None: not a member), it returns or raises. The rules are the resolvers'
# (resolvers/access.py); reading the roles under the lock makes them hold against concurrent
# changes of role.
Decide = Callable[[str | None, str | None], None]


class Banned(Exception):
    """The user is banned from the room: no route brings them back until they are unbanned."""


class LastOwner(Exception):
    """The change would leave the room without an OWNER."""


class Fixed(Exception):
    """The room is DIRECT: its membership was fixed when it was opened."""


class ExternalIdTaken(Exception):
    """A room with this external id exists (made by a concurrent call, or earlier)."""


async def create_room(
    db: Database,
    name: str,
    creator: Row,
    kind: str = PRIVATE,
    topic: str | None = None,
    *,
    external_id: str | None = None,
    members: Sequence[Row] = (),
    by: Row | None = None,
) -> tuple[Row, room_events.Event]:
    """The room, its creator's membership (as OWNER), the log's first event (the creator
    joined), and each of `members` joining after (as MEMBERs, `by` who added them) commit
    together. A taken `external_id` raises ExternalIdTaken (the unique index decides a race)."""
    others = [member for member in {m["id"]: m for m in members}.values() if member["id"] != creator["id"]]
    try:
        async with db.transaction():
            created = now()
            room = as_row(
                await db.fetch_one(
                    rooms.insert()
                    .values(
                        id=new_id(), name=name, created_by=creator["id"], last_seq=0, last_event_seq=1 + len(others)
                    )
                    .values(created_at=created, kind=kind, topic=topic, member_count=1 + len(others))
                    .values(external_id=external_id)
                    .returning(*ROOM_COLUMNS)
                )
            )
            assert room is not None
            await db.execute(
                memberships.insert().values(room_id=room["id"], user_id=creator["id"], joined_at=created, role=OWNER)
            )
            await room_events.append(db, room["id"], 1, room_events.MEMBER_JOINED, created, user_id=creator["id"])
            data = {"by": by["id"]} if by is not None else None
            for seq, member in enumerate(others, start=2):
                await db.execute(
                    memberships.insert().values(room_id=room["id"], user_id=member["id"], joined_at=created)
                )
                await room_events.append(
                    db, room["id"], seq, room_events.MEMBER_JOINED, created, user_id=member["id"], data=data
                )
    except Exception as error:
        if external_id is not None and is_unique_violation(error):
            raise ExternalIdTaken(external_id) from error
        raise
    return room, room_events.event(1, room_events.MEMBER_JOINED, created, room, user=creator)


async def room_by_external_id(db: Database, external_id: str) -> Row | None:
    return as_row(await db.fetch_one(sa.select(*ROOM_COLUMNS).where(rooms.c.external_id == external_id)))


async def remove_user_everywhere(db: Database, user: Row) -> list[tuple[int, list[room_events.Event]]]:
    """The user leaves every room they are in (as remove_member: a last OWNER hands the room
    on), one room at a time: each room's id and its events."""
    room_ids = [
        int(row["room_id"])
        for row in await db.fetch_all(sa.select(memberships.c.room_id).where(memberships.c.user_id == user["id"]))
    ]
    left = []
    for room_id in room_ids:
        room = await room_by_id(db, room_id)
        if room is not None:
            left.append((room_id, await remove_member(db, room, user)))
    return left


def direct_key(user_ids: Iterable[int]) -> str:
    """The canonical form of a set of people: the same whatever order they come in or who asks."""
    return ",".join(str(user_id) for user_id in sorted(set(user_ids)))


async def direct_room(db: Database, key: str) -> Row | None:
    """The DIRECT room of the people whose `direct_key` is `key`, if it was opened."""
    return as_row(await db.fetch_one(sa.select(*ROOM_COLUMNS).where(rooms.c.direct_key == key)))


async def open_direct(db: Database, name: str, opener: Row, others: list[Row]) -> tuple[Row, room_events.Event | None]:
    """The DIRECT room of `opener` and `others`, and its first event when this call created it
    (None when it was there already, as create_room's, to publish after commit). Created once:
    the room, everyone's membership (all MEMBERs: nobody in a direct room moderates another)
    and its first events (the opener joined, then each other person, `by` the opener) commit
    together; the unique `direct_key` makes a concurrent open of the same set fail its insert,
    which then reads the room the other committed (insert-or-fetch, race-free in the database)."""
    people = [opener, *others]
    key = direct_key(person["id"] for person in people)
    found = await direct_room(db, key)
    if found is not None:
        return found, None
    try:
        async with db.transaction():
            created = now()
            room = as_row(
                await db.fetch_one(
                    rooms.insert()
                    .values(id=new_id(), name=name, created_by=opener["id"], last_seq=0, last_event_seq=len(people))
                    .values(created_at=created, kind=DIRECT, member_count=len(people), direct_key=key)
                    .returning(*ROOM_COLUMNS)
                )
            )
            assert room is not None
            await db.execute(
                memberships.insert().values(
                    [{"room_id": room["id"], "user_id": p["id"], "joined_at": created, "role": MEMBER} for p in people]
                )
            )
            for seq, person in enumerate(people, start=1):
                data = {"by": opener["id"]} if person is not opener else None
                await room_events.append(
                    db, room["id"], seq, room_events.MEMBER_JOINED, created, user_id=person["id"], data=data
                )
    except Exception as error:
        if not is_unique_violation(error):
            raise
        found = await direct_room(db, key)  # the concurrent open that won has committed it
        if found is None:
            raise
        return found, None
    return room, room_events.event(1, room_events.MEMBER_JOINED, created, room, user=opener)


async def room_by_id(db: Database, room_id: int) -> Row | None:
    return as_row(await db.fetch_one(sa.select(*ROOM_COLUMNS).where(rooms.c.id == room_id)))


@cache
def _rooms_by_ids() -> sa.Select:
    return sa.select(*ROOM_COLUMNS).where(rooms.c.id.in_(sa.bindparam("ids", expanding=True)))


async def rooms_by_ids(db: Database, ids: list[int]) -> list[Row]:
    return await fetch_rows(db, _rooms_by_ids(), {"ids": ids})


@cache
def _rooms_of_user(paged: bool, with_last_message: bool) -> sa.Select:
    """A statement kept for good (db.pool compiles it once, its parameters' values given per
    call; typed, so the embedded default reads the message's timestamps as such). `paged`: after
    the user's membership of the room `after` (none: no rows, so a page after a room left since
    ends the list). `with_last_message`: each room's newest message and its sender in the same
    row, found by the unique (room, seq) index at the room's `last_seq`: one statement and one
    snapshot for the page, the message shown the very one the unread count counts up to.

    The LIMIT is written into the SQL (a statement per page size, each prepared once per
    connection), not sent as a parameter: against `LIMIT $2` Postgres plans every call anew
    (a generic plan, costed for a tenth of the user's memberships, never wins against the custom
    ones), and for a user in 1,000 rooms that planning took twice as long as running it (pgbench,
    30 a page: 2.2 and 1.1 ms a call against 0.47 and 0.33 with the LIMIT written in)."""
    user_id = sa.bindparam("user_id", type_=sa.BigInteger)
    columns = [*ROOM_COLUMNS, *read_state.STATE_COLUMNS[1:], memberships.c.role.label("my_role")]
    joined = rooms.join(memberships, memberships.c.room_id == rooms.c.id)
    if with_last_message:
        columns += messages.last_message_columns()
        joined = joined.outerjoin(message_rows, messages.newest_of_room()).outerjoin(
            users, users.c.id == message_rows.c.sender_id
        )
    statement = (
        sa.select(*columns)
        .select_from(joined)
        .where(memberships.c.user_id == user_id)
        .order_by(memberships.c.joined_at, memberships.c.room_id)
        .limit(sa.bindparam("limit", type_=sa.Integer, literal_execute=True))
    )
    if paged:
        previous = memberships.alias("previous")
        start = (
            sa.select(previous.c.joined_at, previous.c.room_id)
            .where(previous.c.user_id == user_id, previous.c.room_id == sa.bindparam("after", type_=sa.BigInteger))
            .scalar_subquery()
        )
        statement = statement.where(sa.tuple_(memberships.c.joined_at, memberships.c.room_id) > start)
    return statement


async def rooms_of_user(
    db: Database, user_id: int, limit: int, after: int | None = None, *, with_last_message: bool = False
) -> list[RowView]:
    """The user's first `limit` rooms, oldest membership first (after their membership of the
    room `after`, when given: none when they are not its member), each with the user's read
    state and role in it (rows only read: a list of a hundred of them is a common query); and,
    `with_last_message`, the room's newest message in its columns (`messages.last_message_of`)."""
    values = {"user_id": user_id, "limit": limit}
    if after is not None:
        values["after"] = after
    return await fetch_views(db, _rooms_of_user(after is not None, with_last_message), values)


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def public_rooms(
    db: Database, viewer_id: int, search: str | None, limit: int, after: tuple[int, int] | None
) -> list[Row]:
    """PUBLIC rooms, most members first (then oldest first), whose name contains `search` (any
    case), after the (member count, id) of the previous page's last; each with the viewer's role
    in it (`my_role`, None outside)."""
    mine = sa.and_(memberships.c.room_id == rooms.c.id, memberships.c.user_id == viewer_id)
    query = (
        sa.select(*ROOM_COLUMNS, memberships.c.role.label("my_role"))
        .select_from(rooms.outerjoin(memberships, mine))
        .where(rooms.c.kind == PUBLIC)
        .order_by(rooms.c.member_count.desc(), rooms.c.id)
        .limit(limit)
    )
    if search:
        query = query.where(rooms.c.name.ilike(f"%{_escaped(search)}%", escape="\\"))
    if after is not None:
        count, room_id = after
        query = query.where(
            sa.or_(rooms.c.member_count < count, sa.and_(rooms.c.member_count == count, rooms.c.id > room_id))
        )
    return await fetch_rows(db, query)


async def is_member(db: Database, room_id: int, user_id: int) -> bool:
    query = sa.select(memberships.c.room_id).where(memberships.c.room_id == room_id, memberships.c.user_id == user_id)
    return await db.fetch_one(query) is not None


async def _role(db: Database, room_id: int, user_id: int) -> str | None:
    query = sa.select(memberships.c.role).where(memberships.c.room_id == room_id, memberships.c.user_id == user_id)
    role = await db.fetch_val(query)
    return str(role) if role is not None else None


async def _is_banned(db: Database, room_id: int, user_id: int) -> bool:
    query = sa.select(room_bans.c.user_id).where(room_bans.c.room_id == room_id, room_bans.c.user_id == user_id)
    return await db.fetch_one(query) is not None


async def _lock(db: Database, room_id: int, member_change: int = 0) -> Row | None:
    """The room's row, locked until the transaction ends (every change of membership, role or
    ban takes it first, so they happen one at a time per room); `member_change` moves its count."""
    return as_row(
        await db.fetch_one(
            rooms.update()
            .where(rooms.c.id == room_id)
            .values(member_count=rooms.c.member_count + member_change)
            .returning(*ROOM_COLUMNS)
        )
    )


async def add_member(
    db: Database, room: Row, user: Row, *, by: Row | None = None, decide: Decide | None = None
) -> room_events.Event | None:
    """Idempotent: joining a room twice leaves one membership. The `member_joined` event (with
    `by`, who added them, as `decide` allows), or None when the user was a member already.
    Raises Banned for a banned user (checked under the room's lock, so a ban at the same moment
    holds), and Fixed for a DIRECT room (whatever route asks)."""
    if await is_member(db, room["id"], user["id"]):
        return None
    try:
        async with db.transaction():
            locked = await _lock(db, room["id"], member_change=1)
            if locked is None:
                return None
            if locked["kind"] == DIRECT:  # whatever route asks (join, add, invite): nobody joins one
                raise Fixed()
            if by is not None and decide is not None:
                decide(await _role(db, room["id"], by["id"]), None)
            if await _is_banned(db, room["id"], user["id"]):
                raise Banned()
            joined = now()
            await db.execute(memberships.insert().values(room_id=room["id"], user_id=user["id"], joined_at=joined))
            seq = await room_events.next_seq(db, room["id"])
            data = {"by": by["id"]} if by is not None else None
            await room_events.append(
                db, room["id"], seq, room_events.MEMBER_JOINED, joined, user_id=user["id"], data=data
            )
    except (Banned, Fixed):
        raise
    except Exception:  # a refusal of `decide` too: re-raised, as the target is no member
        if await is_member(db, room["id"], user["id"]):  # lost a race with a concurrent join: fine
            return None
        raise
    return room_events.event(seq, room_events.MEMBER_JOINED, joined, room, user=user, data=data)


async def remove_member(db: Database, room: Row, user: Row) -> list[room_events.Event]:
    """The user leaves: the `member_left` event, and when they were the last OWNER the
    `role_changed` of who takes over (`by` null); no events when there was no membership."""
    async with db.transaction():
        if await _lock(db, room["id"]) is None:
            return []
        role = await _delete_membership(db, room["id"], user["id"])
        if role is None:
            return []
        left = now()
        seq = await room_events.next_seq(db, room["id"])
        await room_events.append(db, room["id"], seq, room_events.MEMBER_LEFT, left, user_id=user["id"])
        events = [room_events.event(seq, room_events.MEMBER_LEFT, left, room, user=user)]
        if role == OWNER:
            events += await _succession(db, room)
    return events


async def _delete_membership(db: Database, room_id: int, user_id: int) -> str | None:
    """The removed membership's role (None: there was none), the room's count moved with it."""
    removed = await db.fetch_one(
        memberships.delete()
        .where(memberships.c.room_id == room_id, memberships.c.user_id == user_id)
        .returning(memberships.c.role)
    )
    if removed is None:
        return None
    await db.execute(rooms.update().where(rooms.c.id == room_id).values(member_count=rooms.c.member_count - 1))
    return str(removed[0])


async def _succession(db: Database, room: Row) -> list[room_events.Event]:
    """With no OWNER left, the longest-standing MODERATOR, else MEMBER, becomes OWNER."""
    owners = sa.select(memberships.c.user_id).where(memberships.c.room_id == room["id"], memberships.c.role == OWNER)
    if await db.fetch_one(owners) is not None:
        return []
    for role in SUCCESSION:
        query = (
            sa.select(memberships.c.user_id)
            .where(memberships.c.room_id == room["id"], memberships.c.role == role)
            .order_by(memberships.c.joined_at, memberships.c.user_id)
            .limit(1)
        )
        heir = await db.fetch_val(query)
        if heir is not None:
            return [await _set_role(db, room, int(heir), OWNER, by=None)]
    return []


async def _set_role(db: Database, room: Row, user_id: int, role: str, *, by: int | None) -> room_events.Event:
    await db.execute(
        memberships.update()
        .where(memberships.c.room_id == room["id"], memberships.c.user_id == user_id)
        .values(role=role)
    )
    at = now()
    seq = await room_events.next_seq(db, room["id"])
    data = {"role": role, "by": by}
    await room_events.append(db, room["id"], seq, room_events.ROLE_CHANGED, at, user_id=user_id, data=data)
    user = await _user(db, user_id)
    return room_events.event(seq, room_events.ROLE_CHANGED, at, room, user=user, data=data)


async def _user(db: Database, user_id: int) -> Row:
    user = as_row(await db.fetch_one(sa.select(*USER_COLUMNS).where(users.c.id == user_id)))
    assert user is not None
    return user


async def remove_by(
    db: Database, room_id: int, actor: Row, target: Row, *, ban: bool, decide: Decide
) -> tuple[bool, list[room_events.Event]]:
    """`actor` removes `target` (and with `ban`, bans them, member or not), as `decide` allows:
    whether anything changed, and the `member_removed` event (with who did it and whether they
    were banned) when a member was removed. The last OWNER cannot be removed by anyone but
    themselves (and an OWNER removing one is an OWNER), so no succession follows."""
    async with db.transaction():
        room = await _lock(db, room_id)
        if room is None:
            return False, []
        decide(await _role(db, room_id, actor["id"]), await _role(db, room_id, target["id"]))
        banned = False
        if ban and not await _is_banned(db, room_id, target["id"]):
            await db.execute(
                room_bans.insert().values(room_id=room_id, user_id=target["id"], banned_by=actor["id"], banned_at=now())
            )
            banned = True
        if await _delete_membership(db, room_id, target["id"]) is None:
            return banned, []
        at = now()
        seq = await room_events.next_seq(db, room_id)
        data = {"by": actor["id"], "banned": ban}
        await room_events.append(db, room_id, seq, room_events.MEMBER_REMOVED, at, user_id=target["id"], data=data)
    return True, [room_events.event(seq, room_events.MEMBER_REMOVED, at, room, user=target, data=data)]


async def unban(db: Database, room_id: int, actor: Row, target_id: int, *, decide: Decide) -> bool:
    """Whether the user was banned (and is no longer)."""
    async with db.transaction():
        if await _lock(db, room_id) is None:
            return False
        decide(await _role(db, room_id, actor["id"]), await _role(db, room_id, target_id))
        removed = await db.fetch_one(
            room_bans.delete()
            .where(room_bans.c.room_id == room_id, room_bans.c.user_id == target_id)
            .returning(room_bans.c.user_id)
        )
    return removed is not None


async def set_role(
    db: Database, room_id: int, actor: Row, target_id: int, role: str, *, decide: Decide
) -> tuple[Row | None, list[room_events.Event]]:
    """The target's membership with its new role, and the `role_changed` event (none when the
    role was that already). Raises LastOwner for a change that would leave no OWNER."""
    async with db.transaction():
        room = await _lock(db, room_id)
        if room is None:
            return None, []
        current = await _role(db, room_id, target_id)
        decide(await _role(db, room_id, actor["id"]), current)
        if current is None:
            return None, []
        events: list[room_events.Event] = []
        if current != role:
            if current == OWNER and await _owner_count(db, room_id) == 1:
                raise LastOwner()
            events.append(await _set_role(db, room, target_id, role, by=actor["id"]))
        membership = await membership_of(db, room_id, target_id)
    return membership, events


async def _owner_count(db: Database, room_id: int) -> int:
    query = sa.select(sa.func.count()).where(memberships.c.room_id == room_id, memberships.c.role == OWNER)
    return int(await db.fetch_val(query))


async def mute(
    db: Database, room_id: int, actor: Row, target_id: int, until: datetime | None, *, decide: Decide
) -> Row | None:
    """The target's membership, muted until `until` (None lifts it)."""
    async with db.transaction():
        if await _lock(db, room_id) is None:
            return None
        current = await _role(db, room_id, target_id)
        decide(await _role(db, room_id, actor["id"]), current)
        if current is None:
            return None
        await db.execute(
            memberships.update()
            .where(memberships.c.room_id == room_id, memberships.c.user_id == target_id)
            .values(muted_until=until)
        )
        return await membership_of(db, room_id, target_id)


async def membership_of(db: Database, room_id: int, user_id: int) -> Row | None:
    """`{"user", "role", "joined_at", "muted_until"}`, or None for a non-member."""
    query = (
        sa.select(*MEMBERSHIP_COLUMNS, *USER_COLUMNS)
        .select_from(memberships.join(users, users.c.id == memberships.c.user_id))
        .where(memberships.c.room_id == room_id, memberships.c.user_id == user_id)
    )
    row = as_row(await db.fetch_one(query))
    return _membership(row) if row is not None else None


MEMBERSHIP_COLUMNS = (memberships.c.role, memberships.c.joined_at, memberships.c.muted_until)


def _membership(row: Row) -> Row:
    return {
        "role": row.pop("role"),
        "joined_at": row.pop("joined_at"),
        "muted_until": row.pop("muted_until"),
        "user": row,
    }


async def update_room(
    db: Database,
    room_id: int,
    actor: Row,
    changes: dict[str, Any],
    *,
    decide: Decide,
    check_kind: Callable[[str], None],
) -> tuple[Row | None, Row | None, list[room_events.Event]]:
    """The room as it was and as it is after `changes` (name, topic, kind), and the
    `room_updated` event (none when nothing changed). `check_kind` sees the room's kind under
    the lock and raises for a change it may not have."""
    async with db.transaction():
        before = await _lock(db, room_id)
        if before is None:
            return None, None, []
        decide(await _role(db, room_id, actor["id"]), None)
        check_kind(str(before["kind"]))
        changed = {key: value for key, value in changes.items() if before[key] != value}
        if not changed:
            return before, before, []
        after = as_row(
            await db.fetch_one(rooms.update().where(rooms.c.id == room_id).values(**changed).returning(*ROOM_COLUMNS))
        )
        assert after is not None
        at = now()
        seq = await room_events.next_seq(db, room_id)
        data = {"name": after["name"], "topic": after["topic"], "room_kind": after["kind"]}
        await room_events.append(db, room_id, seq, room_events.ROOM_UPDATED, at, user_id=actor["id"], data=data)
        after["last_event_seq"] = seq
    return before, after, [room_events.event(seq, room_events.ROOM_UPDATED, at, after, user=actor, data=data)]


async def memberships_by_room_ids(
    db: Database, room_ids: list[int], limit: int, after: int | None
) -> dict[int, list[Row]]:
    """Each room's first `limit` memberships in order of joining, after that of the member
    `after` (a user id; nothing when they are no member): one statement for all the rooms."""
    condition: sa.ColumnElement[bool] = memberships.c.room_id.in_(room_ids)
    if after is not None:
        last = memberships.alias("last")
        joined = (
            sa.select(last.c.joined_at)
            .where(last.c.room_id == memberships.c.room_id, last.c.user_id == after)
            .scalar_subquery()
        )
        condition = sa.and_(
            condition,
            sa.or_(
                memberships.c.joined_at > joined,
                sa.and_(memberships.c.joined_at == joined, memberships.c.user_id > after),
            ),
        )
    position = sa.func.row_number().over(
        partition_by=memberships.c.room_id, order_by=(memberships.c.joined_at, memberships.c.user_id)
    )
    ranked = (
        sa.select(memberships.c.room_id, memberships.c.user_id, *MEMBERSHIP_COLUMNS, position.label("position"))
        .where(condition)
        .subquery()
    )
    query = (
        sa.select(ranked.c.room_id, ranked.c.role, ranked.c.joined_at, ranked.c.muted_until, *USER_COLUMNS)
        .select_from(ranked.join(users, users.c.id == ranked.c.user_id))
        .where(ranked.c.position <= limit)
        .order_by(ranked.c.room_id, ranked.c.position)
    )
    grouped: dict[int, list[Row]] = {room_id: [] for room_id in room_ids}
    for row in await fetch_rows(db, query):
        grouped[row.pop("room_id")].append(_membership(row))
    return grouped


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
