"""Subscription root: live fields, each a source resolver returning a `LiveSource` for the live
engine, and a resolver turning one event into the field's value.

Authorization and argument errors are raised by the source, before anything is delivered, so
the client gets the protocol's refusal and never any data.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ariadne import SubscriptionType
from graphql import GraphQLResolveInfo

from core.errors import BadUserInput
from db import room_events
from live.source import PREPARED, Event, LiveSource
from resolvers import access, presence, typing
from resolvers.context import require_viewer, resume_point, services_of
from resolvers.ids import decode_event_cursor, parse_id
from resolvers.room_changes import REMOVED
from resolvers.room_event import cursor_of
from resolvers.services import Services
from resolvers.sources import my_rooms_source, room_access, room_source, state_source
from resolvers.topics import presence_topic, typing_topic

subscription_type = SubscriptionType()

MESSAGE_KINDS = frozenset({room_events.MESSAGE_CREATED})


def from_now(room: dict) -> int:
    """Without `after`, a subscription starts where the room's log stood when its subscribe was
    handled (the access check read the room): what happens after it arrived is delivered, even
    while it is still being set up."""
    return int(room["last_event_seq"])


@subscription_type.source("messageCreated")  # type: ignore[arg-type]  # a LiveSource, not a generator
async def message_created_source(
    _root: None, info: GraphQLResolveInfo, room: str, after: str | None = None
) -> LiveSource:
    viewer = require_viewer(info)
    services = services_of(info)
    found = await room_access(services, viewer, parse_id(room, "Room", argument="room"))
    start = from_now(found)
    after = resume_point(info, after)
    if after is not None:
        position = await services.access.message_position(parse_id(after, "Message", argument="after"))
        if position is None or position.room_id != found["id"]:
            raise BadUserInput("`after` is not a message of this room.", argument="after")
        start = position.event_seq
    return room_source(services, viewer, found, after=start, kinds=MESSAGE_KINDS, event_id=message_id_of)


def message_id_of(event: Event) -> str:
    """A messageCreated result's id for transports that give one (SSE): what `after` takes."""
    return str(event["message"]["id"])


@subscription_type.field("messageCreated")
def resolve_message_created(event: Event, _info: GraphQLResolveInfo, **_args: Any) -> dict:
    """Its room vouched for, as roomEvents' is: only the room's members receive it (checked at
    subscribe, their subscriptions ended when they go), so member-only fields answer in a
    shared execution, which has no viewer to check."""
    return {**event["message"], "room": access.vouched(event["room"])}


@subscription_type.source("roomEvents")  # type: ignore[arg-type]  # a LiveSource, not a generator
async def room_events_source(_root: None, info: GraphQLResolveInfo, room: str, after: str | None = None) -> LiveSource:
    viewer = require_viewer(info)
    services = services_of(info)
    room_id = parse_id(room, "Room", argument="room")
    found = await room_access(services, viewer, room_id)
    after = resume_point(info, after)
    start = from_now(found) if after is None else decode_event_cursor(after, room_id)
    return room_source(services, viewer, found, after=start, event_id=cursor_of)


@subscription_type.field("roomEvents")
def resolve_room_events(event: Event, _info: GraphQLResolveInfo, **_args: Any) -> Event:
    return event


@subscription_type.source("typing")  # type: ignore[arg-type]  # a LiveSource, not a generator
async def typing_source(_root: None, info: GraphQLResolveInfo, room: str) -> LiveSource:
    return await _room_state_source(info, room, typing_topic, typing.state_of)


@subscription_type.field("typing")
def resolve_typing(state: Event, _info: GraphQLResolveInfo, **_args: Any) -> Event:
    return state


@subscription_type.source("presence")  # type: ignore[arg-type]  # a LiveSource, not a generator
async def presence_source(_root: None, info: GraphQLResolveInfo, room: str) -> LiveSource:
    return await _room_state_source(info, room, presence_topic, presence.state_of)


async def _room_state_source(
    info: GraphQLResolveInfo,
    room: str,
    topic_of: Callable[[int], str],
    state_of: Callable[[Services, dict], Any],
) -> LiveSource:
    """An ephemeral room state (typing, presence) for a member: now, then on every change."""
    viewer = require_viewer(info)
    services = services_of(info)
    found = await room_access(services, viewer, parse_id(room, "Room", argument="room"))
    return state_source(services, viewer, found, topic_of(found["id"]), state_of(services, found))


@subscription_type.field("presence")
def resolve_presence(state: Event, _info: GraphQLResolveInfo, **_args: Any) -> Event:
    return state


@subscription_type.source("myRooms")  # type: ignore[arg-type]  # a LiveSource, not a generator
async def my_rooms_source_of(_root: None, info: GraphQLResolveInfo) -> LiveSource:
    """One subscription for all of the viewer's rooms, however many (resolvers.room_changes)."""
    return my_rooms_source(services_of(info), require_viewer(info))


@subscription_type.field("myRooms")
def resolve_my_rooms(note: Event, info: GraphQLResolveInfo, **_args: Any) -> dict | Awaitable[dict]:
    """A note executed for one viewer (per-viewer in VIEWER_FIELDS): the room as their list
    shows it, read now; a room they are no longer in reads as REMOVED, with no room, whatever
    the note said (a note that crossed their removal tells nothing of the room). A room's note
    comes with every local member's room read at once (resolvers.sources.NoteListings, live's
    PREPARED): then it answers at once; a note of their own topic reads it."""
    room_id = int(note["room_id"])
    change = str(note["change"])
    if change == REMOVED:
        return _change(change, room_id, None)
    prepared = info.context.get(PREPARED)
    if prepared is not None and room_id in prepared:
        return _change(change, room_id, prepared[room_id])
    return _listed_change(info, change, room_id)


async def _listed_change(info: GraphQLResolveInfo, change: str, room_id: int) -> dict:
    return _change(change, room_id, await access.listed_room(services_of(info), require_viewer(info), room_id))


def _change(change: str, room_id: int, room: dict | None) -> dict:
    return {"change": change if room is not None else REMOVED, "roomId": room_id, "room": room}
