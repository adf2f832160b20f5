"""The ASGI application, built by `create_app` from the settings: GraphQL over HTTP and both
WebSocket protocols at /graphql, health checks, and the web client at /.

Building the app connects to nothing: the database pool, Redis, the broadcast and the live
engine are opened by its lifespan and reached through the app (`app.state`).
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

from ariadne.explorer import ExplorerGraphiQL
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import auth
import avatars
import logs
from auth import Viewer, new_session_secret, token_digest, token_from_header, token_policy, viewer_from_row
from db import users
from errors import Unauthenticated, format_error
from execution.http import GraphQLOverHTTP
from execution.operations import Operations
from execution.persisted_queries import MemoryQueryStore, PersistedQueries, RedisQueryStore
from forwarded import TrustedPeers, apply_forwarded
from limits.body_size import BodySizeLimitMiddleware
from limits.query_shape import cost_rule, shape_rule
from realtime.broadcast import redis_reachable
from realtime.engine import Engine
from realtime.http_streams import StreamEndpoint, close_session, open_session
from realtime.keepalive import Keepalive
from realtime.operations import LiveServer
from realtime.replay import ReplayBudget
from realtime.token_expiry import ExpiryWatch, interval_for
from realtime.websocket import WebSocketEndpoint
from resolvers import LIST_BOUNDS, VIEWER_FIELDS, build_schema
from resolvers.context import make_context
from security_headers import add_security_headers
from services import Services, running
from settings import Settings, load
from uvicorn_protocols import NOT_COUNTED, SERVER_SEND, LeanWebSocketProtocol

# Health checks never count towards MAX_REQUESTS: anyone may send them, as fast as they like.
HEALTH_CHECKS = frozenset(("/healthz", "/readyz"))
WEB_DIST = Path(__file__).resolve().parent / "web" / "dist"
SIGNED_OUT = "Signed out."
SESSION_EXPIRED = "Your session expired; sign in again."
# Python's defaults are (700, 10, 10): a full collection every ~70,000 allocations. These make it
# every ~1,000,000; young garbage stays bounded (`make soak`: flat after warm-up).
GC_THRESHOLDS = (10_000, 10, 10)


class ChatApp:
    """GraphQL at /graphql goes straight to its handlers (WebSockets to the live endpoint, HTTP
    through the body limit and CORS to GraphQLOverHTTP): Starlette's routing and middleware
    stack cost more than a plain query, and a long-lived WebSocket would keep them on its stack.
    Everything else (health checks, the web client) goes to the Starlette app."""

    def __init__(self, settings: Settings) -> None:
        logs.configure(settings.log_level)
        self.settings = settings
        self.trusted_peers = TrustedPeers(settings.forwarded_allow_ips)
        auth.configure_hashing(settings.password_hash_threads, settings.password_hash_queue)
        self.policy = token_policy(settings.token_ttl_seconds, settings.token_renew_seconds)
        self.schema = build_schema()
        self.operations = Operations(
            self.schema,
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
        explorer = ExplorerGraphiQL().html(None) if settings.explorer else None
        self.graphql = GraphQLOverHTTP(self.operations, self._http_context, explorer)
        self.graphql_http: ASGIApp = BodySizeLimitMiddleware(
            _cors(settings, self.graphql), max_bytes=settings.max_body_bytes
        )
        self.http = Starlette(
            routes=[
                Route("/graphql/sse-session", self.sse_session, methods=["POST", "DELETE"]),
                Route("/avatars/{name}", avatars.endpoint, methods=["GET", "HEAD"]),
                Route("/healthz", self.healthz),
                Route("/readyz", self.readyz),
                # The reference web client (web/), built by `make run`, `make test` and Heroku's Node buildpack.
                Mount("/", StaticFiles(directory=WEB_DIST, html=True))
                if WEB_DIST.is_dir()
                else Route("/", no_web_client),
            ],
            lifespan=self.lifespan,
        )
        self.websocket: WebSocketEndpoint | None = None
        self.live: LiveServer | None = None

    @property
    def state(self) -> Any:
        return self.http.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "lifespan":
            apply_forwarded(scope, self.trusted_peers)  # the client and scheme everything below sees
        if kind == "http":
            scope[SERVER_SEND] = send  # a stream writes its chunks behind the middleware
            if scope["path"] in HEALTH_CHECKS:
                scope[NOT_COUNTED] = True
            send = _responding(scope, send)
        if scope.get("path") == "/graphql":
            if kind == "http":
                await self.graphql_http(scope, receive, send)
                return
            if kind == "websocket" and self.websocket is not None:
                await self.websocket(scope, receive, send)
                return
        await self.http(scope, receive, send)

    async def _http_context(self, request: Request) -> dict[str, Any]:
        """The viewer remembered while this process would hear of a revocation (see viewer_cache)."""
        services: Services = self.state.services
        token = token_from_header(request.headers.get("authorization"))
        return make_context(services, await services.viewers.viewer_for_token(services.db, token), request)

    async def _signed_in(self, request: Request) -> bool:
        """A persisted query is registered only for a valid token: storing documents then takes
        accounts (rate limited), not just requests."""
        services: Services = self.state.services
        token = token_from_header(request.headers.get("authorization"))
        return await services.viewers.viewer_for_token(services.db, token) is not None

    @asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        settings = self.settings
        async with running(settings) as services:
            services.viewers.policy = self.policy
            engine = Engine(
                self.schema,
                services.broadcast,
                channel_prefix=settings.channel_prefix,
                context=lambda viewer: make_context(services, viewer),
                viewer_fields=VIEWER_FIELDS,
                error_formatter=format_error,
                debug=settings.debug,
                feed_queue=settings.live_feed_queue,
                max_payload_bytes=settings.max_response_bytes,
                replay=ReplayBudget(services.limiter, settings.replay_budget.count, settings.replay_budget.seconds),
            )
            services.revocations.on_revoke.append(lambda digest: engine.end_token(digest, Unauthenticated(SIGNED_OUT)))
            services.revocations.on_revoke_user.append(partial(_end_user, engine))
            services.revocations.on_resync.append(engine.recheck_all)
            expiry = ExpiryWatch(
                engine,
                partial(_expiries, services),
                Unauthenticated(SESSION_EXPIRED),
                interval_for(settings.token_ttl_seconds),
            )
            await expiry.start()
            self.state.services = services
            self.state.engine = engine
            live = self.live = self._live_server(services, engine)
            self.websocket = WebSocketEndpoint(live)
            self.graphql.stream = StreamEndpoint(
                live, settings.sse_heartbeat_seconds, settings.multipart_heartbeat_seconds
            )
            self.graphql.persisted = PersistedQueries(
                RedisQueryStore(
                    services.redis,
                    settings.channel_prefix,
                    settings.persisted_queries_max,
                    settings.persisted_queries_ttl_seconds,
                    settings.persisted_queries_max_bytes,
                    breaker=services.breaker,
                )
                if services.redis is not None
                else MemoryQueryStore(settings.persisted_queries_max, settings.persisted_queries_max_bytes)
            )
            self.graphql.may_register = self._signed_in
            # What start-up built lives as long as the process: the collector need not scan it
            # again. And it runs less often: each collection pauses every live delivery (a full
            # one took tens of milliseconds); what it finds is the rare cycle, most garbage goes
            # by reference counting. See the README's figures.
            gc.collect()
            gc.freeze()
            gc.set_threshold(*GC_THRESHOLDS)
            try:
                yield
            finally:
                self.websocket = self.live = self.graphql.stream = None
                await expiry.stop()
                await engine.close()

    def _live_server(self, services: Services, engine: Engine) -> LiveServer:
        settings = self.settings

        async def authenticate(token: str | None) -> Viewer | None:
            """Read every time (a WebSocket lives long), batched with the other connections'."""
            return await revalidate_digest(token_digest(token)) if token else None

        async def revalidate_digest(digest: str) -> Viewer | None:
            """Renewed here too when due (a client that only streams keeps its token)."""
            return await viewer_from_row(services.db, self.policy, digest, await services.access.user_for_token(digest))

        async def revalidate(viewer: Viewer) -> Viewer | None:
            return viewer if await services.access.user_for_token(viewer.token_hash) else None

        return LiveServer(
            operations=self.operations,
            engine=engine,
            context=lambda viewer, connection, last_event_id: make_context(services, viewer, connection, last_event_id),
            authenticate=authenticate,
            revalidate=revalidate,
            keepalive=Keepalive(settings.ws_keepalive_seconds),
            init_timeout=settings.ws_init_timeout_seconds,
            max_subscriptions=settings.ws_max_subscriptions,
            send_queue=settings.ws_send_queue,
            presence=services.presence,
            quota=services.quota,
        )

    async def sse_session(self, request: Request) -> Response:
        """The cookie an EventSource sends: a session of its own (realtime.http_streams)."""
        if self.live is None:
            starting = {"message": "Starting.", "extensions": {"code": "SERVICE_UNAVAILABLE"}}
            return JSONResponse({"errors": [starting]}, 503)
        services: Services = self.state.services
        if request.method == "DELETE":
            return await close_session(request, partial(_revoke_session, services))
        return await open_session(request, partial(_create_session, services))

    async def healthz(self, request: Request) -> JSONResponse:
        """Liveness only: the process answers. Readiness of Postgres and Redis is /readyz.

        With HEALTHZ_DETAILS, also this worker's pid and viewer cache (`live` false for more than
        a moment means its heartbeat is not coming back from Redis, and every request reads its
        token from Postgres) and its WebSocket counters: not for anyone on the internet."""
        if not self.settings.healthz_details:
            return JSONResponse({"status": "ok"})
        services: Services = request.app.state.services
        viewers, stats = services.viewers, services.viewers.stats
        cache = {"live": viewers.live, "entries": len(viewers), "hits": stats.hits, "misses": stats.misses}
        live = {"frames_written_directly": LeanWebSocketProtocol.frames_written}
        return JSONResponse({"status": "ok", "worker": os.getpid(), "viewer_cache": cache, "websocket": live})

    async def readyz(self, request: Request) -> JSONResponse:
        """Readiness: Postgres answers a query and Redis (when configured) answers a PING."""
        services: Services = request.app.state.services
        checks: dict[str, str] = {}
        try:
            async with asyncio.timeout(3):
                await services.db.fetch_val("SELECT 1")
            checks["database"] = "ok"
        except Exception as error:
            checks["database"] = f"unavailable: {type(error).__name__}"
        try:
            async with asyncio.timeout(3):
                reachable = await redis_reachable(services.broadcast)
            checks["redis"] = "not configured" if reachable is None else "ok"
        except Exception as error:
            checks["redis"] = f"unavailable: {type(error).__name__}"
        ready = all(value in ("ok", "not configured") for value in checks.values())
        body = {"status": "ready" if ready else "unavailable", **checks}
        return JSONResponse(body, status_code=200 if ready else 503)


def _responding(scope: Scope, send: Send) -> Send:
    """`send` adding the security headers to the response's start, and marking a refusal (any
    4xx: a 413, a 429, a request refused before execution) not to count towards MAX_REQUESTS."""

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            add_security_headers(scope, headers)
            message = {**message, "headers": headers}
            if 400 <= message["status"] < 500:
                scope[NOT_COUNTED] = True
        await send(message)

    return send_with_headers


async def _create_session(services: Services, token: str, current: str | None) -> str | None:
    """The cookie's session if it is one of this token's; else a new SSE session made from a
    valid bearer token (the sessions it displaces are revoked)."""
    if current is not None and await users.is_session_of(services.db, token_digest(current), token_digest(token)):
        return current
    secret = new_session_secret()
    displaced = await users.create_session(services.db, token_digest(token), token_digest(secret))
    if displaced is None:
        return None
    if displaced:
        await services.revocations.revoke(displaced, _nothing)  # deleted already
    return secret


async def _nothing() -> None:
    return None


async def _revoke_session(services: Services, secret: str) -> None:
    """A session that exists is revoked everywhere; a made-up cookie costs one batched read,
    never an announcement to every process (anyone may send DELETE with any cookie)."""
    digest = token_digest(secret)
    if await services.access.user_for_token(digest) is None:
        return
    await services.revocations.revoke(digest, partial(users.delete_token, services.db, digest))


def _end_user(engine: Engine, user_id: int) -> None:
    """Every live subscription of the user ends (all their tokens are revoked)."""
    subscriptions = [s for held in engine.by_token.values() for s in held]
    error = engine.error_formatter(Unauthenticated(SIGNED_OUT), engine.debug)
    engine.end_where(subscriptions, lambda s: s.viewer.id == user_id, error)


async def _expiries(services: Services, digests: Sequence[str]) -> dict[str, float | None]:
    """Each token's expiry as the database has it now (None: revoked or expired)."""
    rows = await asyncio.gather(*(services.access.user_for_token(digest) for digest in digests))
    return {
        digest: None if row is None else row["token_expires_at"].timestamp()
        for digest, row in zip(digests, rows, strict=True)
    }


async def no_web_client(_request: Request) -> JSONResponse:
    return JSONResponse({"graphql": "/graphql", "web client": "not built: run `make run` with Node.js installed"})


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


def create_app(settings: Settings | None = None) -> ChatApp:
    """The app for `settings` (the environment's by default)."""
    return ChatApp(settings or load())


app = create_app()
