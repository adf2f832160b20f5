"""Room fields. A PUBLIC room reaches people outside it too (`publicRooms`, `room(id)`, a
message's room): every field outside resolvers.access.OUTSIDER_FIELDS asks resolvers.access
first, which answers at once for a room whose path knew the viewer's role or membership."""

from collections.abc import Awaitable, Callable
from typing import TypeVar

from ariadne import ObjectType
from graphql import GraphQLResolveInfo

from core.errors import BadUserInput
from db import read_state
from db.records import RowView
from execution.lean_executor import reads
from resolvers import access
from resolvers.context import loaders_of, viewer_of
from resolvers.ids import decode_cursor, decode_event_cursor, encode_cursor, encode_event_cursor, parse_id
from resolvers.lists import DEFAULT_LIST, list_size
from resolvers.room_event import cursor_of

MAX_PAGE = 100

room_type = ObjectType("Room")
membership_type = ObjectType("Membership")


@membership_type.field("joinedAt")
def resolve_joined_at(membership: dict, _info: GraphQLResolveInfo) -> object:
    return membership["joined_at"]


T = TypeVar("T")


def _first(first: int | None) -> int:
    if first is None or first < 0 or first > MAX_PAGE:  # an explicit null too
        raise BadUserInput(f"`first` must be between 0 and {MAX_PAGE}.", argument="first")
    return first


# A room's key for its newest message (None before any), when the path that brought the room
# read it too (a room list's rows: resolvers.query, db.access.AccessReads.listing).
LAST_MESSAGE = "last_message"

# Room fields answer at once from what the room came with (a room list's five hundred rooms
# would otherwise each be an awaitable per field, which graphql-core completes many times more
# slowly), and read it only where it is absent.


def _column(room: dict, info: GraphQLResolveInfo, name: str) -> object:
    """A column of the room's row; read now when the room came without it (an event's room)."""
    if name in room:
        return room[name]
    return _read_column(room, info, name)


async def _read_column(room: dict, info: GraphQLResolveInfo, name: str) -> object:
    row = await loaders_of(info).rooms.load(int(room["id"]))
    return row[name] if row is not None else None


@room_type.field("kind")
@reads("kind")
def resolve_kind(room: dict, info: GraphQLResolveInfo) -> object:
    return _column(room, info, "kind")


@room_type.field("topic")
@reads("topic")
def resolve_topic(room: dict, info: GraphQLResolveInfo) -> object:
    return _column(room, info, "topic")


@room_type.field("memberCount")
@reads("member_count")
def resolve_member_count(room: dict, info: GraphQLResolveInfo) -> object:
    return _column(room, info, "member_count")


@room_type.field("myRole")
@reads(access.MY_ROLE)
def resolve_my_role(room: dict, info: GraphQLResolveInfo) -> str | Awaitable[str | None] | None:
    if access.MY_ROLE in room:
        return room[access.MY_ROLE]
    return access.role_in(room, info)


@room_type.field("lastMessage")
@reads(LAST_MESSAGE)
def resolve_last_message(room: dict, info: GraphQLResolveInfo) -> dict | Awaitable[dict | None] | None:
    """The newest message: read with the room, or batched with every room's of the request."""
    if LAST_MESSAGE in room:
        return room[LAST_MESSAGE]
    return loaders_of(info).last_messages.load(room["id"])


@room_type.field("members")
async def resolve_members(room: dict, info: GraphQLResolveInfo, first: int | None = DEFAULT_LIST) -> list[dict]:
    await access.members_only(room, info)
    return await loaders_of(info).members.load((room["id"], list_size(first)))


@room_type.field("memberships")
async def resolve_memberships(
    room: dict, info: GraphQLResolveInfo, first: int | None = DEFAULT_LIST, after: str | None = None
) -> list[dict]:
    """In order of joining; `after` is the user id of the previous page's last member (one who
    has left since ends the list: start again)."""
    await access.members_only(room, info)
    start = parse_id(after, "User", argument="after") if after is not None else None
    return await loaders_of(info).memberships.load((room["id"], list_size(first), start))


@room_type.field("messages")
async def resolve_messages(
    room: dict, info: GraphQLResolveInfo, first: int | None = 50, after: str | None = None
) -> dict:
    await access.members_only(room, info)
    first = _first(first)
    before = decode_cursor(after) if after is not None else None
    rows = await loaders_of(info).pages.load((room["id"], first + 1, before))
    page = rows[:first]
    edges = [{"cursor": encode_cursor(row["seq"]), "node": row} for row in page]
    return {
        "edges": edges,
        "pageInfo": {
            "hasNextPage": len(rows) > first,
            "endCursor": edges[-1]["cursor"] if edges else after,
        },
    }


@room_type.field("events")
async def resolve_events(
    room: dict, info: GraphQLResolveInfo, first: int | None = 100, after: str | None = None
) -> dict:
    """Oldest first: the same log `roomEvents` replays, so a client can page and then go live.
    Read through the request's loader: every room of `rooms { events }` in one statement."""
    await access.members_only(room, info)
    first = _first(first)
    start = decode_event_cursor(after, room["id"]) if after is not None else 0
    events = await loaders_of(info).events.load((room["id"], start, first + 1))
    edges = [{"cursor": cursor_of(event), "node": event} for event in events[:first]]
    return {
        "edges": edges,
        "pageInfo": {"hasNextPage": len(events) > first, "endCursor": edges[-1]["cursor"] if edges else after},
    }


# A room's key for its `latestEventCursor`, when the path that brought it made it (a room list's
# rows, all the viewer's own: resolvers.query): each room's field then reads it at once.
LATEST_EVENT_CURSOR = "latest_event_cursor"


def known_latest_event_cursor(room: RowView) -> str | None:
    """`latestEventCursor` from a room whose row and the viewer's membership are at hand
    (resolvers.access.known_member, and `last_event_seq` in it)."""
    seq = room["last_event_seq"] or 0
    return encode_event_cursor(room["id"], seq) if seq else None


@room_type.field("latestEventCursor")
@reads(LATEST_EVENT_CURSOR)
def resolve_latest_event_cursor(room: dict, info: GraphQLResolveInfo) -> str | Awaitable[str | None] | None:
    """From the room's row, read before any of its fields: history read after it can only be newer.
    (An event's room carries no counters: then the row is read now.)"""
    if LATEST_EVENT_CURSOR in room:
        return room[LATEST_EVENT_CURSOR]
    if access.known_member(room) and "last_event_seq" in room:
        return known_latest_event_cursor(room)
    return _latest_event_cursor(room, info)


async def _latest_event_cursor(room: dict, info: GraphQLResolveInfo) -> str | None:
    await access.members_only(room, info)
    if "last_event_seq" not in room:
        room = await loaders_of(info).rooms.load(room["id"]) or room
    seq = room.get("last_event_seq") or 0
    return encode_event_cursor(room["id"], seq) if seq else None


async def _loaded_state(room: dict, info: GraphQLResolveInfo) -> read_state.ReadState | None:
    await access.members_only(room, info)
    viewer = viewer_of(info)
    if viewer is None:
        return None
    return await loaders_of(info).read_state(viewer.id).load(room["id"])


def _unread(state: read_state.ReadState | None) -> int:
    return state.unread if state else 0


def _cursor(room: dict, state: read_state.ReadState | None) -> str | None:
    return encode_event_cursor(room["id"], state.read_event_seq) if state and state.read_event_seq else None


@room_type.field("unreadCount")
@reads("unread")
def resolve_unread_count(room: dict, info: GraphQLResolveInfo) -> int | Awaitable[int]:
    """Messages after my read position that others sent, from counters (never a count of history).
    Read with the room (`rooms`, `unreadCounts`), it is at hand: no awaitable for each room."""
    if "unread" in room:  # a row of my rooms: a member's
        return int(room["unread"])
    return _then(_loaded_state(room, info), _unread)


@room_type.field("lastReadCursor")
def resolve_last_read_cursor(room: dict, info: GraphQLResolveInfo) -> str | Awaitable[str | None] | None:
    if "unread" in room:
        return _cursor(room, read_state.state_of(room))
    return _then(_loaded_state(room, info), lambda state: _cursor(room, state))


async def _then(state: Awaitable[read_state.ReadState | None], use: Callable[[read_state.ReadState | None], T]) -> T:
    return use(await state)
