"""Room fields. A Room object only ever reaches members, so fields don't re-check."""

from ariadne import ObjectType
from graphql import GraphQLResolveInfo

from errors import BadUserInput
from resolvers.context import loaders_of
from resolvers.ids import decode_cursor, encode_cursor

MAX_PAGE = 100

room_type = ObjectType("Room")


@room_type.field("members")
async def resolve_members(room: dict, info: GraphQLResolveInfo) -> list[dict]:
    return await loaders_of(info).members.load(room["id"])


@room_type.field("messages")
async def resolve_messages(room: dict, info: GraphQLResolveInfo, first: int = 50, after: str | None = None) -> dict:
    if first < 0 or first > MAX_PAGE:
        raise BadUserInput(f"`first` must be between 0 and {MAX_PAGE}.", argument="first")
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
