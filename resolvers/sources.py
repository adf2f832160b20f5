"""A room's live sources: its log, and who may receive it and its ephemeral topics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from graphql import GraphQLError

from core.errors import Forbidden, NotFound, Unauthenticated
from db import room_events, rooms
from db.access import Access
from db.records import Row
from identity.auth import Viewer
from live.source import Event, LiveSource
from resolvers.context import NOT_A_MEMBER, SIGN_IN_FIRST
from resolvers.services import Services
from resolvers.topics import room_topic


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


def refusal(access: Access) -> GraphQLError | None:
    """Why the viewer may not receive the room's events, if they may not."""
    if access.room is None:
        return NotFound("Room not found.")
    if not access.signed_in:
        return Unauthenticated(SIGN_IN_FIRST)
    if not access.member:
        return Forbidden(NOT_A_MEMBER)
    return None


async def room_access(services: Services, viewer: Viewer, room_id: int) -> Row:
    """The room, when the viewer (still signed in) is its member; raises otherwise. One batched
    read for every subscription starting at once."""
    access = await services.access.room_access(viewer.token_hash, room_id)
    error = refusal(access)
    if error is not None:
        raise error
    assert access.room is not None
    return access.room


def _check(services: Services, viewer: Viewer, room: Row) -> Callable[[], Awaitable[GraphQLError | None]]:
    async def check() -> GraphQLError | None:
        return refusal(await services.access.room_access(viewer.token_hash, room["id"]))

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
