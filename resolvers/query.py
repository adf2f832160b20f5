"""Query root."""

from ariadne import QueryType
from graphql import FieldNode, FragmentSpreadNode, GraphQLResolveInfo, InlineFragmentNode, SelectionSetNode

from core.errors import BadUserInput
from db import messages, rooms
from db.records import Row, RowView
from resolvers import access
from resolvers.context import db_of, require_viewer, services_of, viewer_of
from resolvers.ids import parse_id
from resolvers.lists import DEFAULT_LIST, list_size
from resolvers.room import LAST_MESSAGE, LATEST_EVENT_CURSOR, known_latest_event_cursor
from resolvers.text_input import clean_search

DEFAULT_PUBLIC = 50
MAX_SEARCH = 100

query_type = QueryType()


@query_type.field("me")
def resolve_me(_root: None, info: GraphQLResolveInfo) -> dict | None:
    viewer = viewer_of(info)
    return viewer.user if viewer else None


@query_type.field("rooms")
async def resolve_rooms(
    _root: None, info: GraphQLResolveInfo, first: int | None = DEFAULT_LIST, after: str | None = None
) -> list[RowView]:
    """My rooms, each read with my role and read state; and with its last message when the
    selection asks for it (one statement for the page: each room's field then answers at once).
    `after` is the previous page's last room: one I am not in (left since, or never) ends the
    list, telling nothing of that room (resolvers.access.my_rooms)."""
    limit = list_size(first)
    start = parse_id(after, "Room", argument="after") if after is not None else None
    last = selects(info, "lastMessage")
    cursor = selects(info, "latestEventCursor")
    found = await access.my_rooms(db_of(info), require_viewer(info), limit, start, with_last_message=last)
    if not (last or cursor):
        return found
    # Every row is one of my memberships, with the room's row (resolvers.access.my_rooms):
    # each room's `latestEventCursor` is known here, as its resolver would make it for a member.
    listed: list[RowView] = []
    if last:
        for row, message in messages.rooms_and_last_messages(found):
            row[LAST_MESSAGE] = message
            if cursor:
                row[LATEST_EVENT_CURSOR] = known_latest_event_cursor(row)
            listed.append(row)
        return listed
    for room in found:
        row = dict(room.items())
        row[LATEST_EVENT_CURSOR] = known_latest_event_cursor(room)
        listed.append(row)
    return listed


def selects(info: GraphQLResolveInfo, name: str) -> bool:
    """Whether the field's selection asks for `name` right under it (through fragments too, under
    whatever condition: a read that may not be needed costs less than one per item)."""

    def among(selection_set: SelectionSetNode | None) -> bool:
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, FieldNode):
                if selection.name.value == name:
                    return True
            elif isinstance(selection, InlineFragmentNode):
                if among(selection.selection_set):
                    return True
            elif isinstance(selection, FragmentSpreadNode):
                fragment = info.fragments.get(selection.name.value)
                if fragment is not None and among(fragment.selection_set):
                    return True
        return False

    return any(among(node.selection_set) for node in info.field_nodes)


@query_type.field("room")
async def resolve_room(_root: None, info: GraphQLResolveInfo, id: str) -> Row:
    """A room I belong to, or a PUBLIC one (seen from outside, its fields are limited); NOT_FOUND
    alike, same message, for a room that does not exist and one I may not see."""
    found = await access.seen(services_of(info), require_viewer(info), parse_id(id, "Room"))
    assert found.room is not None
    return access.with_role(found.room, found.role)


@query_type.field("publicRooms")
async def resolve_public_rooms(
    _root: None,
    info: GraphQLResolveInfo,
    search: str | None = None,
    first: int | None = DEFAULT_PUBLIC,
    after: str | None = None,
) -> list[Row]:
    """PUBLIC rooms, most members first; `after` is the previous page's last room's id."""
    viewer = require_viewer(info)
    limit = list_size(first)
    needle = clean_search(search, "search", MAX_SEARCH) if search is not None else None
    start = None
    if after is not None:
        found = await access.seen(services_of(info), viewer, parse_id(after, "Room", argument="after"))
        assert found.room is not None
        if found.room["kind"] != rooms.PUBLIC:
            raise BadUserInput("`after` is not a public room.", argument="after")
        start = (int(found.room["member_count"]), int(found.room["id"]))
    return await rooms.public_rooms(db_of(info), viewer.id, needle, limit, start)


@query_type.field("unreadCounts")
async def resolve_unread_counts(
    _root: None, info: GraphQLResolveInfo, first: int | None = DEFAULT_LIST
) -> list[RowView]:
    """My rooms, each read with my read state: every count in one query."""
    return await rooms.rooms_of_user(db_of(info), require_viewer(info).id, list_size(first))
