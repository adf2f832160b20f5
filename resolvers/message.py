"""Message fields. A message from the broadcast carries its sender and room already."""

from ariadne import ObjectType
from graphql import GraphQLResolveInfo

from resolvers.context import loaders_of

message_type = ObjectType("Message")


@message_type.field("sender")
async def resolve_sender(message: dict, info: GraphQLResolveInfo) -> dict | None:
    if "sender" in message:
        return message["sender"]
    return await loaders_of(info).users.load(message["sender_id"])


@message_type.field("room")
async def resolve_room(message: dict, info: GraphQLResolveInfo) -> dict | None:
    if "room" in message:
        return message["room"]
    return await loaders_of(info).rooms.load(message["room_id"])


@message_type.field("createdAt")
def resolve_created_at(message: dict, _info: GraphQLResolveInfo) -> object:
    return message["created_at"]
