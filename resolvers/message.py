"""Message fields. A message from the log or a live event carries its sender and room already:
then the fields resolve without waiting on anything, and a live event executes synchronously."""

from typing import Any

from ariadne import ObjectType
from graphql import GraphQLResolveInfo

from resolvers.context import loaders_of

message_type = ObjectType("Message")


@message_type.field("sender")
def resolve_sender(message: dict, info: GraphQLResolveInfo) -> Any:
    if "sender" in message:
        return message["sender"]
    return loaders_of(info).users.load(message["sender_id"])


@message_type.field("room")
def resolve_room(message: dict, info: GraphQLResolveInfo) -> Any:
    if "room" in message:
        return message["room"]
    return loaders_of(info).rooms.load(message["room_id"])


@message_type.field("createdAt")
def resolve_created_at(message: dict, _info: GraphQLResolveInfo) -> object:
    return message["created_at"]
