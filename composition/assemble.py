"""Everything the app serves with, built once from the settings in dependency order, each object
given what it needs by its constructor, and opened and closed in that order: the one wiring.

The order, and the one edge that runs the other way:
1. the services the resolvers reach (composition.services): pool, Redis, broadcast, viewers,
   revocations, rate limits, presence, quotas; the database and the broadcast connect;
2. the live engine, whose per-event executions get those services in their context;
3. the revocations start listening, told to end subscriptions on that engine (they are built
   before it, since its resolvers reach them: the listener is what `start` is given);
   presence and quotas start; the webhooks' dispatcher starts (with WEBHOOK_URL, unless
   WEBHOOK_IN_WEB is off), rung by the publisher; the token expiry watch starts on the engine;
4. the transports: the live server both WebSocket protocols and the HTTP streams share, the
   WebSocket endpoint, GraphQL over HTTP (behind the body limit and CORS) with its stream
   endpoint and persisted queries, and the SSE session endpoint.
What the routes need is yielded as one frozen `Parts`; everything is stopped in reverse order.
Telemetry (telemetry.running) starts first and stops last, so it exports what the closes did.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from ariadne.explorer import ExplorerGraphiQL
from graphql import GraphQLSchema
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Scope

from composition.live_ends import SubscriptionEnds
from composition.process import settle_heap
from composition.services import build_services
from core.errors import Unauthenticated, format_error
from core.settings import Settings
from execution.operations import Operations
from execution.persisted_queries import MemoryQueryStore, PersistedQueries, RedisQueryStore
from identity.auth import token_from_header, token_policy
from limits.body_size import BodySizeLimitMiddleware
from limits.query_shape import cost_rule, shape_rule
from live.engine import Engine
from live.replay import ReplayBudget
from live.token_expiry import ExpiryWatch, interval_for
from resolvers import LIST_BOUNDS, VIEWER_FIELDS, VIEWER_SHELLS
from resolvers.context import make_context
from resolvers.services import Services
from resolvers.webhook_events import WebhookEvents
from telemetry.running import running
from transports.http import GraphQLOverHTTP
from transports.http_streams import SessionEndpoint, StreamEndpoint
from transports.keepalive import Keepalive
from transports.operations import LiveServer
from transports.webhooks import Dispatcher, Doorbell
from transports.websocket import WebSocketEndpoint

SESSION_EXPIRED = "Your session expired; sign in again."
# The key of the parts in the lifespan's state, which the server copies into every request's
# and WebSocket's scope (`scope["state"]`; Starlette's `request.state`).
PARTS = "parts"


@dataclass(frozen=True, slots=True)
class Parts:
    """What the routes reach, for as long as the lifespan runs."""

    services: Services
    graphql_http: ASGIApp  # GraphQL over HTTP at /graphql, behind the body limit and CORS
    websocket: WebSocketEndpoint  # both GraphQL-over-WebSocket protocols at /graphql
    sessions: SessionEndpoint  # POST and DELETE /graphql/sse-session


def parts_of(scope: Scope) -> Parts | None:
    """The parts the lifespan yielded; None before it has (or under a server without state)."""
    state = scope.get("state")
    return state.get(PARTS) if state else None


@asynccontextmanager
async def assemble(settings: Settings, schema: GraphQLSchema) -> AsyncIterator[Parts]:
    policy = token_policy(settings.token_ttl_seconds, settings.token_renew_seconds)
    delivering = bool(settings.webhook_urls) and settings.webhook_in_web
    doorbell = Doorbell()
    services = build_services(settings, policy, doorbell.published if delivering else None)
    async with running(settings), _connected(services):
        engine = Engine(
            schema,
            services.broadcast,
            channel_prefix=settings.channel_prefix,
            context=lambda viewer: make_context(services, viewer),
            viewer_fields=VIEWER_FIELDS,
            viewer_shells=VIEWER_SHELLS,
            error_formatter=format_error,
            debug=settings.debug,
            feed_queue=settings.live_feed_queue,
            max_payload_bytes=settings.max_response_bytes,
            replay=ReplayBudget(services.limiter, settings.replay_budget.count, settings.replay_budget.seconds),
        )
        await services.revocations.start(SubscriptionEnds(engine))
        await services.presence.start()
        await services.quota.start()
        dispatcher = None
        if delivering:
            dispatcher = Dispatcher(services.db, settings, WebhookEvents(services.db, services.quota), doorbell)
            await dispatcher.start()
        try:
            expiry = ExpiryWatch(
                engine,
                services.viewers.expiries,
                Unauthenticated(SESSION_EXPIRED),
                expiry_interval(settings),
            )
            await expiry.start()
            parts = _parts(settings, schema, services, engine)
            settle_heap()
            try:
                yield parts
            finally:
                await expiry.stop()
                await engine.close()
                await services.publisher.close()
        finally:
            if dispatcher is not None:
                await dispatcher.stop()
            await services.quota.stop()
            await services.presence.stop()
            await services.revocations.stop()


@asynccontextmanager
async def _connected(services: Services) -> AsyncIterator[None]:
    """The database and the broadcast connected; closed with Redis's pool."""
    await services.db.connect()
    try:
        await services.broadcast.connect()
        try:
            yield
        finally:
            await services.broadcast.disconnect()
    finally:
        await services.db.disconnect()
        if services.redis is not None:
            await services.redis.aclose()


def _parts(settings: Settings, schema: GraphQLSchema, services: Services, engine: Engine) -> Parts:
    operations = Operations(
        schema,
        error_formatter=format_error,
        rules=[shape_rule(settings.query_max_depth, settings.query_max_fields, settings.query_max_aliases)],
        variable_rule=cost_rule(
            settings.query_max_cost,
            settings.query_max_subscription_cost,
            settings.query_max_introspection_cost,
            list_bounds=LIST_BOUNDS,
        ),
        introspection=settings.introspection,
        debug=settings.debug,
        max_query_bytes=settings.max_query_bytes,
        max_response_bytes=settings.max_response_bytes,
    )
    viewers = services.viewers
    live = LiveServer(
        operations=operations,
        engine=engine,
        context=lambda viewer, connection, last_event_id: make_context(services, viewer, connection, last_event_id),
        authenticate=viewers.of_token,
        revalidate=viewers.revalidated,
        keepalive=Keepalive(settings.ws_keepalive_seconds),
        init_timeout=settings.ws_init_timeout_seconds,
        max_subscriptions=settings.ws_max_subscriptions,
        send_queue=settings.ws_send_queue,
        presence=services.presence,
        quota=services.quota,
    )

    async def http_context(request: Request) -> dict[str, Any]:
        token = token_from_header(request.headers.get("authorization"))
        return make_context(services, await viewers.of_request(token), request)

    async def signed_in(request: Request) -> bool:
        """A persisted query is registered only for a valid token: storing documents then takes
        accounts (rate limited), not just requests."""
        return await viewers.remembered(token_from_header(request.headers.get("authorization"))) is not None

    graphql = GraphQLOverHTTP(
        operations,
        http_context,
        ExplorerGraphiQL().html(None) if settings.explorer else None,
        stream=StreamEndpoint(live, settings.sse_heartbeat_seconds, settings.multipart_heartbeat_seconds),
        persisted=PersistedQueries(_query_store(settings, services)),
        may_register=signed_in,
    )
    return Parts(
        services=services,
        graphql_http=BodySizeLimitMiddleware(_cors(settings, graphql), max_bytes=settings.max_body_bytes),
        websocket=WebSocketEndpoint(live),
        sessions=SessionEndpoint(services.db, viewers, services.revocations),
    )


# A host JWT's live connections outlive its `exp` by at most this (its lifetime is the host's).
JWT_EXPIRY_INTERVAL = 2.0


def expiry_interval(settings: Settings) -> float:
    interval = interval_for(settings.token_ttl_seconds)
    if settings.auth_jwt_secret or settings.auth_jwks_url:
        interval = min(interval, JWT_EXPIRY_INTERVAL)
    return interval


def _query_store(settings: Settings, services: Services) -> RedisQueryStore | MemoryQueryStore:
    if services.redis is None:
        return MemoryQueryStore(settings.persisted_queries_max, settings.persisted_queries_max_bytes)
    return RedisQueryStore(
        services.redis,
        settings.channel_prefix,
        settings.persisted_queries_max,
        settings.persisted_queries_ttl_seconds,
        settings.persisted_queries_max_bytes,
        breaker=services.breaker,
    )


def _cors(settings: Settings, app: ASGIApp) -> ASGIApp:
    if not settings.cors_origins:
        return app
    return CORSMiddleware(
        app,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST"],
        allow_headers=["authorization", "content-type"],
        max_age=600,
    )
