"""Query root."""

from ariadne import QueryType
from graphql import GraphQLResolveInfo

from db import rooms
from db.records import RowView
from resolvers.context import db_of, require_member, require_viewer, viewer_of
from resolvers.ids import parse_id
from resolvers.lists import DEFAULT_LIST, list_size

query_type = QueryType()


@query_type.field("me")
def resolve_me(_root: None, info: GraphQLResolveInfo) -> dict | None:
    viewer = viewer_of(info)
    return viewer.user if viewer else None


@query_type.field("rooms")
async def resolve_rooms(_root: None, info: GraphQLResolveInfo, first: int | None = DEFAULT_LIST) -> list[RowView]:
    return await rooms.rooms_of_user(db_of(info), require_viewer(info).id, list_size(first))


@query_type.field("room")
async def resolve_room(_root: None, info: GraphQLResolveInfo, id: str) -> dict:
    return await require_member(info, parse_id(id, "Room"))


@query_type.field("unreadCounts")
async def resolve_unread_counts(
    _root: None, info: GraphQLResolveInfo, first: int | None = DEFAULT_LIST
) -> list[RowView]:
    """My rooms, each read with my read state: every count in one query."""
    return await rooms.rooms_of_user(db_of(info), require_viewer(info).id, list_size(first))
