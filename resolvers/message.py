"""Message and Reaction fields. A message from the log or a live event carries its sender, room
and reactions already: then the fields resolve without waiting on anything, and a live event
executes synchronously."""

from typing import Any

from ariadne import ObjectType
from graphql import GraphQLResolveInfo

from execution.lean_executor import reads
from live.source import Event, Keyer
from resolvers.context import loaders_of, viewer_of

message_type = ObjectType("Message")
reaction_type = ObjectType("Reaction")


@message_type.field("sender")
@reads("sender")
def resolve_sender(message: dict, info: GraphQLResolveInfo) -> Any:
    if "sender" in message:
        return message["sender"]
    return loaders_of(info).users.load(message["sender_id"])


@message_type.field("room")
def resolve_room(message: dict, info: GraphQLResolveInfo) -> Any:
    """A message carrying its room came from its room's log or a member's change (the room is
    vouched for there); one read from history or `lastMessage` is checked by its fields."""
    if "room" in message:
        return message["room"]
    return loaders_of(info).rooms.load(message["room_id"])


@message_type.field("createdAt")
@reads("created_at")
def resolve_created_at(message: dict, _info: GraphQLResolveInfo) -> object:
    return message["created_at"]


@message_type.field("editedAt")
def resolve_edited_at(message: dict, _info: GraphQLResolveInfo) -> object:
    return message.get("edited_at")


@message_type.field("deleted")
def resolve_deleted(message: dict, _info: GraphQLResolveInfo) -> bool:
    return message.get("deleted_at") is not None


@message_type.field("reactions")
def resolve_reactions(message: dict, info: GraphQLResolveInfo) -> Any:
    if "reactions" in message:
        return message["reactions"]
    return loaders_of(info).reactions.load(message["id"])


@reaction_type.field("mine")
def resolve_mine(reaction: dict, info: GraphQLResolveInfo) -> bool:
    viewer = viewer_of(info)
    return viewer is not None and viewer.id in reaction["users"]


NONE_MINE: frozenset[str] = frozenset()


def reactions_audience(event: Event) -> Keyer | None:
    """What a viewer sees of an event's reactions: which emoji of its message are theirs (most
    viewers: none; the live engine executes once for each distinct answer), and no one anything
    different on an event whose message has no reactions."""
    message = event.get("message")
    mine: dict[int, set[str]] = {}
    for reaction in message.get("reactions", ()) if message else ():
        for user_id in reaction["users"]:
            mine.setdefault(user_id, set()).add(reaction["emoji"])
    if not mine:
        return None
    keys = {user_id: frozenset(emoji) for user_id, emoji in mine.items()}
    return lambda viewer: keys.get(viewer.id, NONE_MINE)
