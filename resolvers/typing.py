"""Who is typing in a room: an ephemeral topic. A `typing` heartbeat (the client sends one every
few seconds while its user types) keeps the user in the room's typing set for `TYPING_SECONDS`;
only a user who starts typing, or stops by posting or leaving, is announced. Subscribers' feeds
re-read the set on each announcement and again when someone's time runs out."""

from __future__ import annotations

import logging
import time
from typing import Any

from ariadne import ObjectType
from graphql import GraphQLResolveInfo

from core.redis_clients import RedisUnavailable
from db import room_events
from db.records import Row
from live.source import Event
from resolvers.access import vouched
from resolvers.context import loaders_of
from resolvers.services import Services
from resolvers.sources import members_among
from resolvers.topics import typing_topic

typing_type = ObjectType("Typing")
logger = logging.getLogger("chat.typing")


async def started(services: Services, room_id: int, user_id: int) -> None:
    """Best effort too: while Redis does not answer, the heartbeat is answered and not recorded
    (the breaker in redis_client logs it once per back-off, not once per heartbeat)."""
    until = time.time() + services.settings.typing_seconds
    try:
        added = await services.expiring.add(typing_topic(room_id), {str(user_id): until})
    except RedisUnavailable:
        return
    if added:
        await services.publisher.event(typing_topic(room_id), {"changed": True})


async def stopped(services: Services, room_id: int, user_id: int) -> None:
    """Best effort: posting or leaving never fails for it (with Redis away, the typer's time
    runs out instead)."""
    try:
        removed = await services.expiring.remove(typing_topic(room_id), [str(user_id)])
    except RedisUnavailable:  # logged by the breaker, once per back-off
        return
    except Exception as error:
        logger.warning("Typing not cleared (%s)", type(error).__name__)
        return
    if removed:
        await services.publisher.event(typing_topic(room_id), {"changed": True})


def state_of(services: Services, room: Row) -> Any:
    async def state() -> Event:
        typing = await services.expiring.live(typing_topic(room["id"]))
        users = await members_among(services, room["id"], sorted(int(user_id) for user_id in typing))
        return {
            "room": vouched(room_events.public_room(room)),  # its members' alone
            "users": users,
            "refresh_at": min(typing.values()) if typing else None,
        }

    return state


@typing_type.field("users")
async def resolve_users(state: Event, info: GraphQLResolveInfo) -> list[dict]:
    found = await loaders_of(info).users.load_many(state["users"])
    return [user for user in found if user is not None]
