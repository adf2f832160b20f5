"""Invitations: createInvite, revokeInvite, joinByInvite, and the Invite type.

Who may create or revoke one is decided in resolvers.access (`may_invite`, `may_revoke`), with
the roles db.invites reads under the room's lock.

A code is `secrets.token_urlsafe(24)`: 192 random bits, 32 characters. Only its SHA-256 is
stored (db.invites), so a read of the database yields no code that works, and a lookup compares
digests (an index equality), never the code itself: nothing about a guess's closeness leaks
through timing. Every code that has no live invite (unknown, expired, used up, revoked, or not
even shaped like a code) gets the same NOT_FOUND, so probing tells an attacker nothing; and
joinByInvite is limited per user and per address (RATE_LIMIT_INVITE_JOINS) before anything is
looked up: at the default 10 per 10 minutes, a guesser gets 1,440 guesses a day per address,
each with a chance of at most 100 / 2^192 per room of hitting a live code.
"""

import re
import secrets
from datetime import timedelta

from ariadne import MutationType, ObjectType
from graphql import GraphQLResolveInfo

from core.errors import BadUserInput, CodedError, Forbidden, NotFound
from db import invites, rooms
from db.records import now
from resolvers import access
from resolvers.context import client_address, services_of
from resolvers.ids import parse_id
from resolvers.mutation import BANNED, _act, member_joined

CODE_BYTES = 24  # 192 bits
MIN_USES, MAX_USES = 1, 10_000
MIN_EXPIRY, MAX_EXPIRY = 60, 30 * 24 * 3600
MAX_LIVE_INVITES = 100  # per room
# What token_urlsafe(CODE_BYTES) makes; anything else is no code of ours (NOT_FOUND unread).
CODE_SHAPE = re.compile(r"[A-Za-z0-9_-]{32}")

invite_mutations = MutationType()
invite_type = ObjectType("Invite")


class TooManyInvites(CodedError):
    code = "TOO_MANY_INVITES"


@invite_type.field("expiresAt")
def resolve_expires_at(invite: dict, _info: GraphQLResolveInfo) -> object:
    return invite["expires_at"]


@invite_type.field("usesLeft")
def resolve_uses_left(invite: dict, _info: GraphQLResolveInfo) -> object:
    return invite["uses_left"]


def _bounded(value: int | None, low: int, high: int, argument: str) -> int | None:
    if value is not None and not low <= value <= high:
        raise BadUserInput(f"`{argument}` must be between {low:,} and {high:,}.", argument=argument)
    return value


@invite_mutations.field("createInvite")
async def resolve_create_invite(
    _root: None,
    info: GraphQLResolveInfo,
    room: str,
    maxUses: int | None = None,
    expiresInSeconds: int | None = None,
) -> dict:
    """OWNER or MODERATOR, not of a DIRECT room; at most MAX_LIVE_INVITES live ones per room.
    The code is returned here once and never stored."""
    viewer = await _act(info)
    services = services_of(info)
    room_id = parse_id(room, "Room", argument="room")
    uses = _bounded(maxUses, MIN_USES, MAX_USES, "maxUses")
    seconds = _bounded(expiresInSeconds, MIN_EXPIRY, MAX_EXPIRY, "expiresInSeconds")
    found = await access.moderator(services, viewer, room_id)
    assert found.room is not None
    access.not_direct(found.room["kind"])
    code = secrets.token_urlsafe(CODE_BYTES)
    expires_at = now() + timedelta(seconds=seconds) if seconds is not None else None
    try:
        invite = await invites.create(
            services.db,
            room_id,
            viewer.user,
            code,
            expires_at=expires_at,
            uses=uses,
            limit=MAX_LIVE_INVITES,
            decide=access.may_invite,
        )
    except invites.TooManyInvites as too_many:
        raise TooManyInvites(
            f"A room has at most {too_many.limit} live invites: revoke some first.", limit=too_many.limit
        ) from None
    if invite is None:
        raise NotFound(access.ROOM_NOT_FOUND)
    return {**invite, "code": code, "room": access.with_role(invite["room"], found.role)}


@invite_mutations.field("revokeInvite")
async def resolve_revoke_invite(_root: None, info: GraphQLResolveInfo, code: str) -> bool:
    """Its creator, or an OWNER or MODERATOR of its room; anyone else, like an unknown code,
    NOT_FOUND. Uses already made stay made."""
    viewer = await _act(info)
    services = services_of(info)
    if not CODE_SHAPE.fullmatch(code):
        raise NotFound(access.INVITE_NOT_FOUND)
    try:
        return await invites.revoke(services.db, code, viewer.user, decide=access.may_revoke)
    except invites.InviteNotFound:
        raise NotFound(access.INVITE_NOT_FOUND) from None


@invite_mutations.field("joinByInvite")
async def resolve_join_by_invite(_root: None, info: GraphQLResolveInfo, code: str) -> dict:
    """Join the invite's room (MemberJoined, `by` null, on its log and live); a member already
    takes no use. Counted against RATE_LIMIT_ACTIONS, and RATE_LIMIT_INVITE_JOINS per user and
    per address before the code is looked at."""
    viewer = await _act(info)
    services = services_of(info)
    rate = services.settings.rate_invite_joins
    await services.limiter.check("invite-joins", f"user:{viewer.id}", rate)
    await services.limiter.check("invite-joins", f"address:{client_address(info)}", rate)
    if not CODE_SHAPE.fullmatch(code):
        raise NotFound(access.INVITE_NOT_FOUND)
    try:
        room, role, joined = await invites.join(services.db, code, viewer.user)
    except invites.InviteNotFound:
        raise NotFound(access.INVITE_NOT_FOUND) from None
    except rooms.Banned:
        raise Forbidden(BANNED) from None
    if joined is not None:
        await member_joined(services, room["id"], joined, viewer.id)
    return access.with_role(room, role)
