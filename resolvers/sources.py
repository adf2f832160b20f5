"""A room's live sources: its log, and who may receive it and its ephemeral topics; and a
user's own source, which follows their rooms (`myRooms`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from graphql import GraphQLError

from db import room_events, rooms
from db.records import Row
from identity.auth import Viewer
from live.source import Event, LiveSource
from resolvers import access
from resolvers.room_changes import REMOVED
from resolvers.services import Services
from resolvers.topics import room_list_topic, room_topic, user_topic


class RoomLog:
    """The room's event log, as the live engine reads it."""

    def __init__(self, services: Services, room: Row) -> None:
        self._services = services
        self._room = room

    async def after(self, seq: int, limit: int) -> list[Event]:
        return await room_events.after(self._services.db, self._room, seq, limit)

    async def newest(self, limit: int) -> list[Event]:
        return await room_events.newest(self._services.db, self._room, limit)

    def revised(self, earlier: Event, later: Event) -> Event | None:
        return room_events.revised(earlier, later)


async def room_access(services: Services, viewer: Viewer, room_id: int) -> Row:
    """The room, when the viewer (still signed in) is its member; raises otherwise, as
    resolvers.access decides (a room they cannot see is NOT_FOUND, as one that does not exist).
    One batched read for every subscription starting at once."""
    return await access.room_of_member(services, viewer, room_id)


def _check(services: Services, viewer: Viewer, room: Row) -> Callable[[], Awaitable[GraphQLError | None]]:
    """The live engine's re-check (once the feed holds the subscription, and after a Redis
    reconnect): the same decision, so a removal or a ban in between ends it."""

    async def check() -> GraphQLError | None:
        return access.refusal(await access.read(services, viewer, room["id"]))

    return check


def room_source(
    services: Services,
    viewer: Viewer,
    room: Row,
    *,
    after: int | None,
    kinds: frozenset[str] | None = None,
    event_id: Callable[[Event], str | None] | None = None,
) -> LiveSource:
    return LiveSource(
        topic=room_topic(room["id"]),
        viewer=viewer,
        check=_check(services, viewer, room),
        log=RoomLog(services, room),
        after=after,
        kinds=kinds,
        event_id=event_id,
    )


def state_source(
    services: Services, viewer: Viewer, room: Row, topic: str, state: Callable[[], Awaitable[Event]]
) -> LiveSource:
    """An ephemeral topic of the room whose subscribers get its `state` on every change."""
    return LiveSource(topic=topic, viewer=viewer, check=_check(services, viewer, room), state=state)


async def members_among(services: Services, room_id: int, user_ids: list[int]) -> list[int]:
    """Those of `user_ids` who belong to the room now (who left is in no list of it)."""
    if not user_ids:
        return []
    return await rooms.members_among(services.db, room_id, user_ids)


def my_rooms_source(services: Services, viewer: Viewer) -> LiveSource:
    """The viewer's own topic, following the fan-out topic of every room they are in
    (resolvers.room_changes says what is published where). Nothing to resume: a client that
    reconnects reads `rooms` again. The re-check is their token's; membership is decided per
    note, when the note is executed for them (resolvers.access.listed_room)."""

    async def check() -> GraphQLError | None:
        return await access.still_signed_in(services, viewer)

    async def follows() -> list[str]:
        return [room_list_topic(room_id) for room_id in await services.access.room_ids_of(viewer.id)]

    return LiveSource(
        topic=user_topic(viewer.id), viewer=viewer, check=check, follows=follows, prepare=NoteListings(services).prepare
    )


class NoteListings:
    """What a note of a followed room needs for each local member's `myRooms`: the room as their
    list shows it (resolvers.access.listed_rooms), read for all of them before any executes."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def prepare(self, note: Event, viewers: list[Viewer]) -> Mapping[int, Any]:
        """By viewer id: {room id: the room as listed, or None when they are no longer in it}."""
        if note.get("change") == REMOVED or "room_id" not in note:
            return {}
        room_id = int(note["room_id"])
        listed = await access.listed_rooms(self.services, [viewer.id for viewer in viewers], room_id)
        return {user_id: {room_id: room} for user_id, room in listed.items()}
