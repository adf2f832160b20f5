"""Room fields. A Room object only ever reaches members, so fields don't re-check."""

from collections.abc import Awaitable, Callable
from typing import TypeVar

from ariadne import ObjectType
from graphql import GraphQLResolveInfo

from core.errors import BadUserInput
from db import read_state
from execution.lean_executor import reads
from resolvers.context import loaders_of, viewer_of
from resolvers.ids import decode_cursor, decode_event_cursor, encode_cursor, encode_event_cursor
from resolvers.lists import DEFAULT_LIST, list_size
from resolvers.room_event import cursor_of

MAX_PAGE = 100

room_type = ObjectType("Room")
T = TypeVar("T")


def _first(first: int | None) -> int:
    if first is None or first < 0 or first > MAX_PAGE:  # an explicit null too
        raise BadUserInput(f"`first` must be between 0 and {MAX_PAGE}.", argument="first")
    return first


@room_type.field("members")
async def resolve_members(room: dict, info: GraphQLResolveInfo, first: int | None = DEFAULT_LIST) -> list[dict]:
    return await loaders_of(info).members.load((room["id"], list_size(first)))


@room_type.field("messages")
async def resolve_messages(
    room: dict, info: GraphQLResolveInfo, first: int | None = 50, after: str | None = None
) -> dict:
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
    first = _first(first)
    start = decode_event_cursor(after, room["id"]) if after is not None else 0
    events = await loaders_of(info).events.load((room["id"], start, first + 1))
    edges = [{"cursor": cursor_of(event), "node": event} for event in events[:first]]
    return {
        "edges": edges,
        "pageInfo": {"hasNextPage": len(events) > first, "endCursor": edges[-1]["cursor"] if edges else after},
    }


@room_type.field("latestEventCursor")
async def resolve_latest_event_cursor(room: dict, info: GraphQLResolveInfo) -> str | None:
    """From the room's row, read before any of its fields: history read after it can only be newer.
    (An event's room carries no counters: then the row is read now.)"""
    if "last_event_seq" not in room:
        room = await loaders_of(info).rooms.load(room["id"]) or room
    seq = room.get("last_event_seq") or 0
    return encode_event_cursor(room["id"], seq) if seq else None


async def _loaded_state(room: dict, info: GraphQLResolveInfo) -> read_state.ReadState | None:
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
    if "unread" in room:
        return int(room["unread"])
    return _then(_loaded_state(room, info), _unread)


@room_type.field("lastReadCursor")
def resolve_last_read_cursor(room: dict, info: GraphQLResolveInfo) -> str | Awaitable[str | None] | None:
    if "unread" in room:
        return _cursor(room, read_state.state_of(room))
    return _then(_loaded_state(room, info), lambda state: _cursor(room, state))


async def _then(state: Awaitable[read_state.ReadState | None], use: Callable[[read_state.ReadState | None], T]) -> T:
    return use(await state)
