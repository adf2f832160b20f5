"""Who may receive a room's events: one batched read for every subscription starting at once.

A subscription is checked twice (when it starts, and again once its topic's feed holds it, so a
logOut or leaveRoom in between cannot slip past). After a deploy every client resubscribes within
seconds; each check alone would be a query, and a storm of them would queue behind the pool.

And what a member's room list shows of a room (`listing`): a note on a room's `myRooms` fan-out
topic is executed for each local member at once, and each asks whether they are still a member
and their own unread count; one statement answers all of them, and one more the room's last
message, where a read per member would be a thousand for a room of a thousand.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

import sqlalchemy as sa
from databases import Database
from sqlalchemy.dialects import postgresql

from db import read_state
from db.batching import GroupedLoader
from db.messages import last_messages
from db.pool import fetch_rows, fetch_views
from db.records import Row, RowView, now
from db.rooms import rooms_by_ids
from db.tables import memberships, messages, room_bans, rooms, tokens
from db.users import users_for_tokens


@dataclass(frozen=True)
class Access:
    """What the database says of a viewer (by token) and a room, read together: the room (None:
    no such room), whether the token is good, the viewer's role (None: not a member), whether
    they are banned from it, and until when they are muted. What it means is decided in one
    place: resolvers/access.py."""

    room: Row | None
    signed_in: bool
    role: str | None = None
    banned: bool = False
    muted_until: datetime | None = None

    @property
    def member(self) -> bool:
        return self.role is not None


@dataclass(frozen=True)
class Position:
    """Where a message sits: its room, its seq among messages and its seq in the room's log."""

    room_id: int
    seq: int
    event_seq: int


class AccessReads:
    """The batched reads of one database; built with the database in the app's lifespan."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._access: GroupedLoader[tuple[str, int], Access] = GroupedLoader(self._load_access, name="access")
        self._positions: GroupedLoader[int, Position | None] = GroupedLoader(
            self._load_positions, name="message position"
        )
        self._users: GroupedLoader[str, Row | None] = GroupedLoader(self._load_users, name="token")
        self._rooms: GroupedLoader[int, tuple[int, ...]] = GroupedLoader(self._load_rooms, name="rooms of a user")
        self._listings: GroupedLoader[tuple[int, int], Row | None] = GroupedLoader(
            self._load_listings, name="room listing"
        )

    async def room_access(self, token_hash: str, room_id: int) -> Access:
        return await self._access.load((token_hash, room_id))

    async def message_position(self, message_id: int) -> Position | None:
        return await self._positions.load(message_id)

    async def user_for_token(self, token_hash: str) -> Row | None:
        """The token's user (None once it is revoked): a reconnect storm's connection_init checks
        go in batches too."""
        return await self._users.load(token_hash)

    async def room_ids_of(self, user_id: int) -> tuple[int, ...]:
        """The rooms a user belongs to (batched with every other connection starting now)."""
        return await self._rooms.load(user_id)

    async def listing(self, user_id: int, room_id: int) -> Row | None:
        """The room as the user's room list shows it, while they are its member (None else): its
        row, their role (`my_role`), their read state (`unread`, `read_event_seq`: what
        db.read_state reads), and its newest message (`last_message`, with its sender; None
        before any). Batched with every listing asked meanwhile (every local member's `myRooms`
        executing a note of the room): a statement per room of the batch, and one for their
        last messages, each message shared by all the batch's rows of its room."""
        return await self._listings.load((user_id, room_id))

    async def listings(self, user_ids: list[int], room_id: int) -> dict[int, Row | None]:
        """`listing` for each of these users at once (a note's local members, before any of
        their executions): one statement, and one for the room's last message."""
        found = await self._load_listings([(user_id, room_id) for user_id in dict.fromkeys(user_ids)])
        return {user_id: row for (user_id, _), row in found.items()}

    async def _load_listings(self, keys: list[tuple[int, int]]) -> dict[tuple[int, int], Row | None]:
        by_room: dict[int, list[int]] = {}
        for user_id, room_id in keys:
            by_room.setdefault(room_id, []).append(user_id)
        statement = _listings(self._db.url.dialect == "postgresql")
        states: dict[int, list[RowView]] = {}
        for room_id, user_ids in by_room.items():
            states[room_id] = await fetch_views(self._db, statement, {"room_id": room_id, "user_ids": user_ids})
        # Read after the counts: the room and the message shown are at least as new as any they count.
        listed = sorted(room_id for room_id, rows in states.items() if rows)
        room_rows = {row["id"]: row for row in await rooms_by_ids(self._db, listed)}
        newest = await last_messages(self._db, listed)
        found: dict[tuple[int, int], Row] = {}
        for room_id, rows in states.items():
            room = room_rows.get(room_id)
            if room is None:
                continue
            room["last_message"] = newest.get(room_id)
            for state in rows:  # the room's row, the same for each, with the member's own columns
                found[(state["user_id"], room_id)] = {
                    **room,
                    "my_role": state["my_role"],
                    "read_event_seq": state["read_event_seq"],
                    "unread": state["unread"],
                }
        return {key: found.get(key) for key in keys}

    async def _load_rooms(self, user_ids: list[int]) -> dict[int, tuple[int, ...]]:
        found: dict[int, list[int]] = {user_id: [] for user_id in user_ids}
        for row in await fetch_rows(self._db, _rooms_of_users(), {"user_ids": user_ids}):
            found[row["user_id"]].append(row["room_id"])
        return {user_id: tuple(sorted(room_ids)) for user_id, room_ids in found.items()}

    async def _load_users(self, digests: list[str]) -> dict[str, Row | None]:
        found = await users_for_tokens(self._db, digests)
        return {digest: found.get(digest) for digest in digests}

    async def _load_access(self, keys: list[tuple[str, int]]) -> dict[tuple[str, int], Access]:
        room_ids = sorted({room_id for _, room_id in keys})
        digests = sorted({digest for digest, _ in keys})
        found = {row["id"]: row for row in await rooms_by_ids(self._db, room_ids)}
        signed_in: set[str] = set()
        member: dict[tuple[str, int], tuple[str, datetime | None]] = {}
        banned: set[tuple[str, int]] = set()
        values = {"room_ids": room_ids, "digests": digests, "now": now()}
        for row in await fetch_rows(self._db, _memberships_of_tokens(), values):
            signed_in.add(row["token_hash"])
            if row["room_id"] is not None:
                member[(row["token_hash"], row["room_id"])] = (row["role"], _utc(row["muted_until"]))
            if row["banned_room_id"] is not None:
                banned.add((row["token_hash"], row["banned_room_id"]))
        answers: dict[tuple[str, int], Access] = {}
        for key in keys:
            role, muted_until = member.get(key, (None, None))
            answers[key] = Access(found.get(key[1]), key[0] in signed_in, role, key in banned, muted_until)
        return answers

    async def _load_positions(self, ids: list[int]) -> dict[int, Position | None]:
        found = {
            row["id"]: Position(row["room_id"], row["seq"], row["event_seq"])
            for row in await fetch_rows(self._db, _positions(), {"ids": ids})
        }
        return {key: found.get(key) for key in ids}


# The batched reads' statements, built once: each batch gives its lists (db.pool expands them).
# Built and keyed for every batch, an access check's two statements cost more than their queries.
@cache
def _rooms_of_users() -> sa.Select:
    return sa.select(memberships.c.user_id, memberships.c.room_id).where(
        memberships.c.user_id.in_(sa.bindparam("user_ids", expanding=True))
    )


def _utc(value: datetime | None) -> datetime | None:
    """SQLite gives timestamps back naive (every one we store is UTC)."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@cache
def _memberships_of_tokens() -> sa.Select:
    """Each token's memberships and bans among the batch's rooms (a user is a member of a room
    or banned from it, not both: the rows are few)."""
    in_rooms = memberships.c.room_id.in_(sa.bindparam("room_ids", expanding=True))
    banned_in = room_bans.c.room_id.in_(sa.bindparam("room_ids", expanding=True))
    return (
        sa.select(
            tokens.c.token_hash,
            memberships.c.room_id,
            memberships.c.role,
            memberships.c.muted_until,
            room_bans.c.room_id.label("banned_room_id"),
        )
        .select_from(
            tokens.outerjoin(memberships, sa.and_(memberships.c.user_id == tokens.c.user_id, in_rooms)).outerjoin(
                room_bans, sa.and_(room_bans.c.user_id == tokens.c.user_id, banned_in)
            )
        )
        .where(tokens.c.token_hash.in_(sa.bindparam("digests", expanding=True)))
        # An expired token is refused as a revoked one is (db/users.py).
        .where(tokens.c.expires_at > sa.bindparam("now", type_=tokens.c.expires_at.type))
    )


@cache
def _listings(postgres: bool) -> sa.Select:
    """Each of these members' role and read state in a room (db.read_state's columns), without
    the room's own columns (read once, not once per member). On Postgres the members are one
    array parameter (`= ANY`): a statement compiled once, where an IN list of a room's thousand
    members would be expanded into SQL on every call."""
    members = (
        memberships.c.user_id == sa.any_(sa.bindparam("user_ids", type_=postgresql.ARRAY(sa.BigInteger)))
        if postgres
        else memberships.c.user_id.in_(sa.bindparam("user_ids", expanding=True))
    )
    return (
        sa.select(
            memberships.c.user_id,
            memberships.c.role.label("my_role"),
            *read_state.STATE_COLUMNS[1:],
        )
        .select_from(rooms.join(memberships, memberships.c.room_id == rooms.c.id))
        .where(rooms.c.id == sa.bindparam("room_id"))
        .where(members)
    )


@cache
def _positions() -> sa.Select:
    return sa.select(messages.c.id, messages.c.room_id, messages.c.seq, messages.c.event_seq).where(
        messages.c.id.in_(sa.bindparam("ids", expanding=True))
    )
