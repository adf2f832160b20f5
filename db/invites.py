"""Invitations to a room: created by its OWNERs and MODERATORs, used to join it (PRIVATE rooms
too), revoked by their creator or the room's moderators.

Only a code's SHA-256 is stored and looked up (`code_hash`, an index equality): the table holds
no code that works, and a lookup compares digests, never the code, so its timing tells a guesser
nothing about how close a guess came. (A code carries 192 random bits: no slow hash is needed.)

Every change to a room's invites and every use of one takes the room's row lock first (as every
change of membership does, db.rooms), so the count of live invites, a use and a ban or join at
the same moment happen one at a time per room; the decrement of `uses_left` is besides
conditional on a use being left, so two people racing for the last use cannot both have it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from databases import Database

from db import room_events
from db.records import Row, as_row, now
from db.rooms import MEMBER, Banned, Decide, _is_banned, _lock, _role
from db.tables import memberships, room_invites

# Decides, under the room's lock, whether an actor may revoke an invite: given the actor's role
# in its room (None: not a member) and whether they created it; returns or raises.
DecideRevoke = Callable[[str | None, bool], None]


class InviteNotFound(Exception):
    """No live invite has this code: unknown, revoked, expired or used up (all alike)."""


class TooManyInvites(Exception):
    """The room has as many live invites as it may."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


def digest(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()


def _live(at: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        sa.or_(room_invites.c.expires_at.is_(None), room_invites.c.expires_at > at),
        sa.or_(room_invites.c.uses_left.is_(None), room_invites.c.uses_left > 0),
    )


async def create(
    db: Database,
    room_id: int,
    actor: Row,
    code: str,
    *,
    expires_at: datetime | None,
    uses: int | None,
    limit: int,
    decide: Decide,
) -> Row | None:
    """A new invite of `code` to the room, as `decide` allows `actor` (their role read under the
    room's lock): `{"room", "expires_at", "uses_left"}`, or None when the room is gone. The
    room's dead invites (expired, used up) are deleted first; raises TooManyInvites when `limit`
    live ones remain."""
    async with db.transaction():
        room = await _lock(db, room_id)
        if room is None:
            return None
        decide(await _role(db, room_id, actor["id"]), None)
        at = now()
        await db.execute(room_invites.delete().where(room_invites.c.room_id == room_id, sa.not_(_live(at))))
        count = await db.fetch_val(
            sa.select(sa.func.count()).select_from(room_invites).where(room_invites.c.room_id == room_id)
        )
        if int(count) >= limit:
            raise TooManyInvites(limit)
        await db.execute(
            room_invites.insert().values(
                code_hash=digest(code),
                room_id=room_id,
                created_by=actor["id"],
                created_at=at,
                expires_at=expires_at,
                uses_left=uses,
            )
        )
    return {"room": room, "expires_at": expires_at, "uses_left": uses}


async def _room_of(db: Database, code_hash: str) -> int | None:
    """The room an invite of this digest is to (live or not); the row's room never changes."""
    room_id = await db.fetch_val(sa.select(room_invites.c.room_id).where(room_invites.c.code_hash == code_hash))
    return int(room_id) if room_id is not None else None


async def join(db: Database, code: str, user: Row) -> tuple[Row, str, room_events.Event | None]:
    """The user joins the room of a live invite of `code`, taking one of its uses: the room, the
    user's role in it, and the `member_joined` event (no `by`), or None when they were a member
    already (no use taken).
    Raises InviteNotFound for a code with no live invite, Banned for a user banned from its
    room (no use taken). Under the room's lock: the invite's liveness, the ban, the membership
    and the use are read and changed together."""
    code_hash = digest(code)
    room_id = await _room_of(db, code_hash)
    if room_id is None:
        raise InviteNotFound()
    async with db.transaction():
        room = await _lock(db, room_id)
        if room is None:
            raise InviteNotFound()
        at = now()
        live = sa.and_(room_invites.c.code_hash == code_hash, _live(at))
        if await db.fetch_val(sa.select(room_invites.c.id).where(live)) is None:
            raise InviteNotFound()
        if await _is_banned(db, room_id, user["id"]):
            raise Banned()
        role = await _role(db, room_id, user["id"])
        if role is not None:
            return room, role, None
        used = await db.fetch_one(
            room_invites.update()
            .where(live)
            .values(uses_left=room_invites.c.uses_left - 1)  # null (no limit) stays null
            .returning(room_invites.c.id)
        )
        if used is None:  # cannot happen under the lock; the condition holds the rule regardless
            raise InviteNotFound()
        room = await _lock(db, room_id, member_change=1)
        assert room is not None
        await db.execute(memberships.insert().values(room_id=room_id, user_id=user["id"], joined_at=at))
        seq = await room_events.next_seq(db, room_id)
        await room_events.append(db, room_id, seq, room_events.MEMBER_JOINED, at, user_id=user["id"])
        room["last_event_seq"] = seq
    return room, MEMBER, room_events.event(seq, room_events.MEMBER_JOINED, at, room, user=user)


async def revoke(db: Database, code: str, actor: Row, *, decide: DecideRevoke) -> bool:
    """Delete the invite of `code`, as `decide` allows `actor` (their role in its room read under
    the room's lock, and whether they created it): whether it was live until now. Raises
    InviteNotFound for a code with no stored invite."""
    code_hash = digest(code)
    room_id = await _room_of(db, code_hash)
    if room_id is None:
        raise InviteNotFound()
    async with db.transaction():
        if await _lock(db, room_id) is None:
            raise InviteNotFound()
        invite = as_row(
            await db.fetch_one(
                sa.select(room_invites.c.created_by, _live(now()).label("live")).where(
                    room_invites.c.code_hash == code_hash
                )
            )
        )
        if invite is None:  # revoked at the same moment
            raise InviteNotFound()
        decide(await _role(db, room_id, actor["id"]), invite["created_by"] == actor["id"])
        await db.execute(room_invites.delete().where(room_invites.c.code_hash == code_hash))
    return bool(invite["live"])
