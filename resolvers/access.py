"""Who may see and do what in a room, decided here and nowhere else.

Every path to a room goes through this module: `room(id)`, the Room fields, every mutation
that takes a room or a message, and every subscription's source and re-check, on every
transport (they all execute the same resolvers). What it decides from is one batched read of
the database (db.access: the room, the token, the viewer's role, ban and mute), shared with
every check starting at the same moment.

- A room that does not exist, and a PRIVATE or DIRECT room the viewer is not in, are alike
  invisible: NOT_FOUND, with the same message, on every path.
- Outside a PUBLIC room a viewer sees `OUTSIDER_FIELDS`; anything else, posting and
  subscribing included, is FORBIDDEN.
- Roles: an OWNER does all a MODERATOR does, sets roles and removes MODERATORs; a MODERATOR
  adds, removes, bans and mutes MEMBERs and deletes anyone's message.
- A muted member posting, editing or reacting is FORBIDDEN with `extensions.until`.

- The service (the host's server, by SERVICE_KEY) sees every room and acts in it with an
  OWNER's powers (its `myRole` reads OWNER), without being a member: its rules (`decider`)
  allow every change, and it posts SYSTEM messages only. Its own fields are FORBIDDEN to users
  (`require_service`).

The statements that change a room re-check membership (and mutes) in SQL, atomically with the
change, and role changes read roles under the room's lock with the rules given here (`Decide`):
what a caller is told when they fail is decided here too.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from databases import Database
from graphql import GraphQLError, GraphQLResolveInfo

from core.errors import Forbidden, NotFound, Unauthenticated
from db import rooms as room_rows
from db.access import Access
from db.records import Row, RowView, now
from db.rooms import DIRECT, MEMBER, MODERATOR, OWNER, PUBLIC, Decide
from identity.auth import SERVICE, Viewer
from resolvers.context import NOT_A_MEMBER, SIGN_IN_FIRST, require_viewer, services_of, viewer_of
from resolvers.services import Services

ROOM_NOT_FOUND = "Room not found."
MESSAGE_NOT_FOUND = "Message not found."
MEMBERS_ONLY = "Only the room's members can see this."
MUTED = "You are muted in this room."
MODERATORS_ONLY = "Only the room's owners and moderators may do this."
OWNERS_ONLY = "Only the room's owners may do this."
DIRECT_FIXED = "A direct room's membership and roles are fixed."
INVITE_NOT_FOUND = "Invite not found."
SERVICE_ONLY = "Only the host's server (SERVICE_KEY) may do this."

# What a viewer outside a PUBLIC room may read of it (`myRole` answers null for them).
OUTSIDER_FIELDS = frozenset({"id", "name", "topic", "kind", "memberCount", "lastMessage", "myRole"})
MODERATING = frozenset({OWNER, MODERATOR})

# A room dict's key for the viewer's role in it, when the path that brought it knew it (None:
# outside a PUBLIC room); and for a room reached through something only members receive (an
# event of its log, a message posted or changed by them), whose membership was checked there.
MY_ROLE = "my_role"
VOUCHED = "member_vouched"


def visible(access: Access) -> bool:
    return access.room is not None and (access.member or access.room["kind"] == PUBLIC)


def refusal(access: Access) -> GraphQLError | None:
    """Why the viewer may not take part in the room (read its log, post, subscribe), if not."""
    if not access.signed_in:
        return Unauthenticated(SIGN_IN_FIRST)
    if not visible(access):
        return NotFound(ROOM_NOT_FOUND)
    if not access.member:
        return Forbidden(NOT_A_MEMBER)
    return None


def muted_until(access: Access) -> datetime | None:
    """Until when the member is muted, if they are now."""
    until = access.muted_until
    return until if until is not None and until > now() else None


def muted(until: datetime) -> Forbidden:
    return Forbidden(MUTED, until=until.isoformat())


def is_service(viewer: Viewer | None) -> bool:
    return viewer is not None and viewer.kind == SERVICE


def require_service(info: GraphQLResolveInfo) -> Viewer:
    """The service's viewer; UNAUTHENTICATED without any, FORBIDDEN for a user."""
    viewer = require_viewer(info)
    if not is_service(viewer):
        raise Forbidden(SERVICE_ONLY)
    return viewer


def service_asks(info: GraphQLResolveInfo) -> bool:
    return is_service(viewer_of(info))


async def read(services: Services, viewer: Viewer, room_id: int) -> Access:
    if is_service(viewer):
        room = await room_rows.room_by_id(services.db, room_id)
        return Access(room, True, role=OWNER if room is not None else None)
    return await services.access.room_access(viewer.token_hash, room_id)


async def seen(services: Services, viewer: Viewer, room_id: int) -> Access:
    """The room as the viewer may see it (a member, or outside a PUBLIC room); NOT_FOUND else."""
    access = await read(services, viewer, room_id)
    if not access.signed_in:
        raise Unauthenticated(SIGN_IN_FIRST)
    if not visible(access):
        raise NotFound(ROOM_NOT_FOUND)
    return access


async def member(services: Services, viewer: Viewer, room_id: int) -> Access:
    """The viewer's access to a room they are a member of; raises otherwise."""
    access = await read(services, viewer, room_id)
    error = refusal(access)
    if error is not None:
        raise error
    return access


async def room_of_member(services: Services, viewer: Viewer, room_id: int) -> Row:
    """The room (marked with the viewer's role), when the viewer is its member."""
    access = await member(services, viewer, room_id)
    assert access.room is not None
    return with_role(access.room, access.role)


async def still_signed_in(services: Services, viewer: Viewer) -> GraphQLError | None:
    """Why the viewer may no longer receive what is theirs alone (`myRooms`): their token was
    revoked; None while it is good."""
    if await services.access.user_for_token(viewer.token_hash) is None:
        return Unauthenticated(SIGN_IN_FIRST)
    return None


async def listed_room(services: Services, viewer: Viewer, room_id: int) -> Row | None:
    """The room as the viewer's room list shows it (marked with their role, with their read
    state and its last message: db.access.AccessReads.listing), while they are its member; None
    otherwise (they left or were removed: the list drops it, showing nothing of it). Decided by
    membership alone: a member sees their own rooms whatever their kind, and the token is the
    subscription's (the live engine ends it when the token is revoked, and re-checks it after a
    reconnect)."""
    return await services.access.listing(viewer.id, room_id)


async def listed_rooms(services: Services, viewer_ids: list[int], room_id: int) -> dict[int, Row | None]:
    """`listed_room` for each of these viewers at once (every local member's `myRooms` note of
    the room, read before any of them executes), by viewer id."""
    return await services.access.listings(viewer_ids, room_id)


async def my_rooms(
    db: Database, viewer: Viewer, limit: int, after: int | None, *, with_last_message: bool
) -> list[RowView]:
    """The viewer's own rooms (`rooms`), decided by membership alone, in SQL: each row is one of
    their memberships, whatever the room's kind, marked with their role. Paging `after` a room
    they are not a member of gives nothing, the same for a room that does not exist: no oracle."""
    return await room_rows.rooms_of_user(db, viewer.id, limit, after, with_last_message=with_last_message)


def known_member(room: Any) -> bool:
    """Whether the path that brought the room vouched for the viewer's membership (a role known,
    or a room only members receive): then member-only fields answer at once."""
    return bool(room.get(VOUCHED) or room.get(MY_ROLE))


async def moderator(services: Services, viewer: Viewer, room_id: int) -> Access:
    """A member who is an OWNER or a MODERATOR of the room; raises otherwise."""
    access = await member(services, viewer, room_id)
    if access.role not in MODERATING:
        raise Forbidden(MODERATORS_ONLY)
    return access


def poster_refusal(access: Access) -> GraphQLError:
    """Why a post, an edit or a reaction that SQL refused was refused (membership or mute)."""
    error = refusal(access)
    if error is not None:
        return error
    until = muted_until(access)
    return muted(until) if until is not None else Forbidden(NOT_A_MEMBER)


async def message_refusal(services: Services, viewer: Viewer, message_id: int, reason: str) -> GraphQLError | None:
    """What a change to a message refused by SQL (`reason`: db.messages.Refused's) is told: a
    message of a room the viewer cannot see is not found, like one that does not exist."""
    position = await services.access.message_position(message_id)
    if position is None:
        return NotFound(MESSAGE_NOT_FOUND)
    access = await read(services, viewer, position.room_id)
    if not access.signed_in:
        return Unauthenticated(SIGN_IN_FIRST)
    if not visible(access):
        return NotFound(MESSAGE_NOT_FOUND)
    if reason in ("not_member", "muted"):
        return poster_refusal(access)
    return None


def not_direct(kind: str) -> None:
    if kind == DIRECT:
        raise Forbidden(DIRECT_FIXED)


# The rules for acting on another member: db.rooms calls them (a `Decide`) with the roles it
# reads under the room's lock.


def _acting(actor: str | None, allowed: Collection[str], message: str) -> None:
    if actor is None:
        raise NotFound(ROOM_NOT_FOUND)  # left or was removed just now
    if actor not in allowed:
        raise Forbidden(message)


def _service_may(_actor: str | None, _target: str | None) -> None:
    """The service may do anything to anyone in any room."""


def decider(viewer: Viewer, rule: Decide) -> Decide:
    """The rule for a user; for the service, one that allows everything."""
    return _service_may if is_service(viewer) else rule


def may_remove(actor: str | None, target: str | None) -> None:
    """OWNER: anyone; MODERATOR: MEMBERs (and non-members, for a ban)."""
    _acting(actor, MODERATING, MODERATORS_ONLY)
    if actor == MODERATOR and target not in (None, MEMBER):
        raise Forbidden("A moderator may only remove or ban members.")


def may_mute(actor: str | None, target: str | None) -> None:
    """OWNER and MODERATOR, over MEMBERs."""
    _acting(actor, MODERATING, MODERATORS_ONLY)
    if target not in (None, MEMBER):
        raise Forbidden("Only members can be muted.")


def may_moderate(actor: str | None, _target: str | None) -> None:
    _acting(actor, MODERATING, MODERATORS_ONLY)


def may_set_role(actor: str | None, _target: str | None) -> None:
    _acting(actor, (OWNER,), OWNERS_ONLY)


def may_invite(actor: str | None, _target: str | None) -> None:
    """OWNER and MODERATOR create invites to their room."""
    _acting(actor, MODERATING, MODERATORS_ONLY)


def may_revoke(actor: str | None, created_it: bool) -> None:
    """An invite is revoked by who created it (whatever their role now), or by an OWNER or a
    MODERATOR of its room. Anyone else is told NOT_FOUND, as for a code that does not exist:
    revokeInvite is no oracle telling a live code from an unknown one."""
    if not created_it and actor not in MODERATING:
        raise NotFound(INVITE_NOT_FOUND)


# Room objects as fields see them.


def with_role(room: Row | RowView, role: str | None) -> Row:
    return {**room, MY_ROLE: role}


def vouched(room: dict[str, Any]) -> dict[str, Any]:
    """A room reached through something only its members receive."""
    return {**room, VOUCHED: True}


async def role_in(room: Any, info: GraphQLResolveInfo) -> str | None:
    """The viewer's role in a room they can see (None outside a PUBLIC room); NOT_FOUND for a
    room they cannot see."""
    if MY_ROLE in room:
        return room[MY_ROLE]
    viewer = require_viewer(info)
    access = await seen(services_of(info), viewer, int(room["id"]))
    return access.role


async def members_only(room: Any, info: GraphQLResolveInfo) -> None:
    """Before any field outside OUTSIDER_FIELDS: FORBIDDEN outside a PUBLIC room."""
    if known_member(room):
        return
    if await role_in(room, info) is None:
        raise Forbidden(MEMBERS_ONLY)
