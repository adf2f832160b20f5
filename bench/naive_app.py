"""The baseline the benchmark compares with: the same schema, resolvers and database, served the
way Ariadne and broadcaster are used out of the box. Stock GraphQLTransportWSHandler (every
subscriber executes its own selection set for every event), stock broadcaster's Broadcast (a
queue per subscriber), a source per subscriber that orders and fills its own stream,
graphql-core parsing and validating every request, the standard JSON encoder, and no viewer
cache (no revocation listener, so every request reads its token from Postgres).

broadcaster's own Redis backend delivers nothing with redis-py 8 (measured): the Broadcast runs
over our Redis backend, which only carries the messages.

    gunicorn -c serving/gunicorn.conf.py bench.naive_app:app
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from ariadne import SubscriptionType
from ariadne.asgi import GraphQL
from ariadne.asgi.handlers import GraphQLTransportWSHandler
from ariadne.exceptions import WebSocketConnectionError
from broadcaster import Broadcast
from graphql import GraphQLResolveInfo
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from core.errors import BadUserInput, Forbidden
from core.redis_backend import RESYNC, ResilientRedisBackend
from core.redis_clients import create_redis
from core.settings import load
from db import room_events
from db.access import AccessReads
from db.connection import open_database
from identity.auth import DEFAULT_POLICY, Viewer, token_from_header
from identity.revocations import Revocations
from identity.viewer_cache import ViewerCache
from identity.viewers import Viewers, viewer_for_token
from limits.rate import RateLimiter
from live.expiring import MemoryExpiringSets, RedisExpiringSets
from live.presence import PresenceTracker
from live.publisher import Publisher
from live.quota import LiveQuota
from resolvers import build_schema
from resolvers.context import make_context
from resolvers.ids import decode_event_cursor, parse_id
from resolvers.services import Services
from resolvers.sources import room_access
from resolvers.topics import presence_topic, room_topic
from transports.operations import token_in

VIEWER = "naive.viewer"
CATCH_UP_BATCH = 500

settings = load()
subscription_type = SubscriptionType()
state: dict[str, Services] = {}


async def _stream(
    info: GraphQLResolveInfo, room_id: int, after: int | None, kinds: frozenset[str] | None
) -> AsyncIterator[dict]:
    """One subscriber's own stream: subscribe, read what it missed, then live events in order,
    filling gaps from the database, ending when its viewer leaves."""
    services: Services = info.context["services"]
    viewer: Viewer = info.context["viewer"]
    room = await room_access(services, viewer, room_id)
    async with services.broadcast.subscribe(settings.channel_prefix + room_topic(room_id)) as subscriber:
        if after is None:
            newest = await room_events.newest(services.db, room, 1)
            after = newest[-1]["seq"] if newest else 0
        last = after

        async def history(upto: int | None) -> AsyncIterator[dict]:
            nonlocal last
            while upto is None or last < upto:
                events = await room_events.after(services.db, room, last, CATCH_UP_BATCH)
                events = [event for event in events if upto is None or event["seq"] <= upto]
                if not events:
                    return
                for event in events:
                    last = event["seq"]
                    if kinds is None or event["kind"] in kinds:
                        yield event

        async for event in history(None):
            yield event
        async for message in subscriber:  # type: ignore[union-attr]
            if message.message == RESYNC:
                async for event in history(None):
                    yield event
                continue
            data = orjson.loads(message.message)
            if data.get("control") == "end":
                if data["user"] == viewer.id:
                    raise Forbidden(data["error"]["message"])
                continue
            if data["seq"] <= last:
                continue
            if data["seq"] > last + 1:
                async for event in history(data["seq"] - 1):
                    yield event
            last = data["seq"]
            if kinds is None or data["kind"] in kinds:
                yield {**data, "room": room}


@subscription_type.source("messageCreated")
async def message_created_source(
    _root: None, info: GraphQLResolveInfo, room: str, after: str | None = None
) -> AsyncIterator[dict]:
    room_id = parse_id(room, "Room")
    start = None
    if after is not None:
        position = await info.context["services"].access.message_position(parse_id(after, "Message"))
        if position is None or position.room_id != room_id:
            raise BadUserInput("`after` is not a message of this room.", argument="after")
        start = position.event_seq
    return _stream(info, room_id, start, frozenset({room_events.MESSAGE_CREATED}))


@subscription_type.field("messageCreated")
def resolve_message_created(event: dict, _info: GraphQLResolveInfo, **_args: Any) -> dict:
    return {**event["message"], "room": event["room"]}


@subscription_type.source("roomEvents")
async def room_events_source(
    _root: None, info: GraphQLResolveInfo, room: str, after: str | None = None
) -> AsyncIterator[dict]:
    room_id = parse_id(room, "Room")
    return _stream(info, room_id, None if after is None else decode_event_cursor(after, room_id), None)


@subscription_type.field("roomEvents")
def resolve_room_events(event: dict, _info: GraphQLResolveInfo, **_args: Any) -> dict:
    return event


schema = build_schema(subscription_type)  # every type's resolvers as the product's, but its own subscriptions


async def context(request: HTTPConnection, _data: Any = None) -> dict[str, Any]:
    services = state["services"]
    if request.scope["type"] == "websocket":
        viewer = request.scope.get(VIEWER)
    else:
        token = token_from_header(request.headers.get("authorization"))
        viewer = await services.viewers.remembered(token)
    return make_context(services, viewer, request)


async def authenticate(websocket: Any, payload: Any) -> None:
    viewer = await viewer_for_token(state["services"].db, token_in(payload))
    if viewer is None:
        raise WebSocketConnectionError({"message": "A valid token is required."})
    websocket.scope[VIEWER] = viewer


async def healthz(_request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


@asynccontextmanager
async def lifespan(_app: Starlette) -> AsyncIterator[None]:
    redis = create_redis(settings.redis_url) if settings.redis_url else None
    broadcast = Broadcast(backend=ResilientRedisBackend(redis)) if redis else Broadcast("memory://")
    db = open_database(settings)
    viewers = ViewerCache()
    access = AccessReads(db)
    publisher = Publisher(broadcast, settings.channel_prefix)  # type: ignore[arg-type]
    expiring = RedisExpiringSets(redis, settings.channel_prefix) if redis else MemoryExpiringSets()
    state["services"] = Services(
        settings=settings,
        db=db,
        redis=redis,
        breaker=None,
        broadcast=broadcast,  # type: ignore[arg-type]
        viewers=Viewers(db, access, viewers, DEFAULT_POLICY),
        revocations=Revocations(broadcast, viewers, "", shared=False),  # type: ignore[arg-type]
        limiter=RateLimiter(redis, settings.channel_prefix),
        access=access,
        publisher=publisher,
        expiring=expiring,
        presence=PresenceTracker(expiring, publisher, access.room_ids_of, presence_topic),
        # Not consulted: the naive stack serves subscriptions through Ariadne's handler.
        quota=LiveQuota(None, settings.channel_prefix, max_subscriptions=0, max_connections=0),
    )
    await db.connect()
    await broadcast.connect()
    try:
        yield
    finally:
        await broadcast.disconnect()
        await db.disconnect()
        if redis is not None:
            await redis.aclose()


graphql = GraphQL(schema, context_value=context, websocket_handler=GraphQLTransportWSHandler(on_connect=authenticate))
app = Starlette(
    routes=[Route("/healthz", healthz), Route("/graphql", graphql), WebSocketRoute("/graphql", graphql)],
    lifespan=lifespan,
)
