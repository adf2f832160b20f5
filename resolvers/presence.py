"""Who is online in a room: an ephemeral topic, kept by live.presence, read here."""

from __future__ import annotations

import logging
from typing import Any

from ariadne import ObjectType
from graphql import GraphQLResolveInfo

from db import room_events
from db.records import Row
from live.source import Event
from resolvers.access import vouched
from resolvers.context import loaders_of
from resolvers.services import Services
from resolvers.sources import members_among
from resolvers.topics import presence_topic

logger = logging.getLogger("chat.presence")
presence_type = ObjectType("Presence")


def state_of(services: Services, room: Row) -> Any:
    async def state() -> Event:
        held = await services.expiring.live(presence_topic(room["id"]))
        online = await members_among(services, room["id"], sorted({int(key.split(":", 1)[0]) for key in held}))
        return {
            "room": vouched(room_events.public_room(room)),  # its members' alone
            "online": online,
            "refresh_at": min(held.values()) if held else None,
        }

    return state


@presence_type.field("online")
async def resolve_online(state: Event, info: GraphQLResolveInfo) -> list[dict]:
    found = await loaders_of(info).users.load_many(state["online"])
    return [user for user in found if user is not None]
