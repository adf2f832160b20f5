"""Room events: the RoomEvent interface and its types, resolved from the event dicts of the
room's log (db.room_events), whether read from history or delivered live."""

from __future__ import annotations

from typing import Any

from ariadne import InterfaceType, ObjectType
from graphql import GraphQLResolveInfo

from db import room_events
from live.source import Event
from resolvers.access import vouched
from resolvers.context import loaders_of
from resolvers.ids import encode_event_cursor

TYPE_OF_KIND = {
    room_events.MESSAGE_CREATED: "MessageCreated",
    room_events.MESSAGE_EDITED: "MessageEdited",
    room_events.MESSAGE_DELETED: "MessageDeleted",
    room_events.REACTION_CHANGED: "ReactionChanged",
    room_events.READ_UP_TO: "ReadUpTo",
    room_events.MEMBER_JOINED: "MemberJoined",
    room_events.MEMBER_LEFT: "MemberLeft",
    room_events.MEMBER_REMOVED: "MemberRemoved",
    room_events.ROLE_CHANGED: "RoleChanged",
    room_events.ROOM_UPDATED: "RoomUpdated",
}

room_event_interface = InterfaceType("RoomEvent")


@room_event_interface.type_resolver
def resolve_room_event_type(event: Event, *_args: Any) -> str:
    return TYPE_OF_KIND[event["kind"]]


def cursor_of(event: Event) -> str:
    return encode_event_cursor(event["room"]["id"], event["seq"])


def _cursor(event: Event, _info: GraphQLResolveInfo) -> str:
    return cursor_of(event)


def _room(event: Event, _info: GraphQLResolveInfo) -> dict:
    """Events reach only the room's members (its log, read or live): its room is theirs."""
    return vouched(event["room"])


def _message(event: Event, _info: GraphQLResolveInfo) -> dict:
    return {**event["message"], "room": vouched(event["room"])}


def _user(event: Event, _info: GraphQLResolveInfo) -> Any:
    return event["user"]


def _by(event: Event, info: GraphQLResolveInfo) -> Any:
    """Who did it (a user id in the event's data; None for a join by oneself or a succession)."""
    by = event.get("by")
    return loaders_of(info).users.load(int(by)) if by is not None else None


def _field(name: str) -> Any:
    return lambda event, _info: event.get(name)


def _message_id(event: Event, _info: GraphQLResolveInfo) -> int:
    return int(event["message"]["id"])


def _up_to(event: Event, _info: GraphQLResolveInfo) -> str:
    return encode_event_cursor(event["room"]["id"], event["up_to"])


room_event_types = [ObjectType(name) for name in TYPE_OF_KIND.values()]
for _event_type in room_event_types:
    _event_type.set_field("cursor", _cursor)
    _event_type.set_field("room", _room)
    if _event_type.name in ("MessageCreated", "MessageEdited", "ReactionChanged"):
        _event_type.set_field("message", _message)
    elif _event_type.name == "MessageDeleted":
        _event_type.set_field("messageId", _message_id)
        _event_type.set_field("by", _user)  # who deleted it: the event's user
    elif _event_type.name == "ReadUpTo":
        _event_type.set_field("upTo", _up_to)
    elif _event_type.name in ("MemberJoined", "MemberRemoved", "RoleChanged"):
        _event_type.set_field("by", _by)
    elif _event_type.name == "RoomUpdated":
        _event_type.set_field("by", _user)  # who changed it: the event's user
        _event_type.set_field("topic", _field("topic"))
        _event_type.set_field("kind", _field("room_kind"))  # an event's own `kind` is its type
