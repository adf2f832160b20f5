"""Room events: the RoomEvent interface and its types, resolved from the event dicts of the
room's log (db.room_events), whether read from history or delivered live."""

from __future__ import annotations

from typing import Any

from ariadne import InterfaceType, ObjectType
from graphql import GraphQLResolveInfo

from db import room_events
from realtime.live import Event
from resolvers.ids import encode_event_cursor

TYPE_OF_KIND = {
    room_events.MESSAGE_CREATED: "MessageCreated",
    room_events.MEMBER_JOINED: "MemberJoined",
    room_events.MEMBER_LEFT: "MemberLeft",
}

room_event_interface = InterfaceType("RoomEvent")


@room_event_interface.type_resolver
def resolve_room_event_type(event: Event, *_args: Any) -> str:
    return TYPE_OF_KIND[event["kind"]]


def cursor_of(event: Event) -> str:
    return encode_event_cursor(event["room"]["id"], event["seq"])


def _cursor(event: Event, _info: GraphQLResolveInfo) -> str:
    return cursor_of(event)


def _message(event: Event, _info: GraphQLResolveInfo) -> dict:
    return {**event["message"], "room": event["room"]}


message_created_type = ObjectType("MessageCreated")
message_created_type.set_field("message", _message)
room_event_types = [message_created_type, ObjectType("MemberJoined"), ObjectType("MemberLeft")]
for _event_type in room_event_types:
    _event_type.set_field("cursor", _cursor)
