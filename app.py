"""The ASGI application, built by `create_app` from the settings: its routes and its lifespan.
GraphQL over HTTP, SSE, multipart and both WebSocket protocols at /graphql, the SSE session
cookie, health checks, and the web client at /.

Building the app connects to nothing. The lifespan builds and opens everything it serves with
(composition.assemble) and yields it as the lifespan's state, which the server copies into each
request's and WebSocket's scope: the routes reach it there, never through the app object.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from composition import process
from composition.assemble import PARTS, Parts, assemble, parts_of
from core import logs
from core.broadcast import redis_reachable
from core.settings import Settings, load
from identity import avatars
from resolvers import build_schema
from serving.forwarded import TrustedPeers, apply_forwarded
from serving.security_headers import add_security_headers
from serving.uvicorn_protocols import NOT_COUNTED, SERVER_SEND, LeanWebSocketProtocol

# Health checks never count towards MAX_REQUESTS: anyone may send them, as fast as they like.
HEALTH_CHECKS = frozenset(("/healthz", "/readyz"))
WEB_DIST = Path(__file__).resolve().parent / "web" / "dist"


class ChatApp:
    """GraphQL at /graphql goes straight to its handlers (WebSockets to the live endpoint, HTTP
    through the body limit and CORS to GraphQL over HTTP): Starlette's routing and middleware
    stack cost more than a plain query, and a long-lived WebSocket would keep them on its stack.
    Everything else (health checks, the web client) goes to the Starlette app."""

    def __init__(self, settings: Settings) -> None:
        process.configure(settings)
        self.settings = settings
        self.trusted_peers = TrustedPeers(settings.forwarded_allow_ips)
        self.schema = build_schema()
        self.http = Starlette(
            routes=[
                Route("/graphql/sse-session", sse_session, methods=["POST", "DELETE"]),
                Route("/avatars/{name}", avatars.endpoint, methods=["GET", "HEAD"]),
                Route("/healthz", healthz if settings.healthz_details else alive),
                Route("/readyz", readyz),
                # The reference web client (web/), built by `make run`, `make test` and Heroku's Node buildpack.
                Mount("/", StaticFiles(directory=WEB_DIST, html=True))
                if WEB_DIST.is_dir()
                else Route("/", no_web_client),
            ],
            lifespan=self.lifespan,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "lifespan":
            apply_forwarded(scope, self.trusted_peers)  # the client and scheme everything below sees
            logs.REQUEST_ID.set(_request_id(scope))  # on this request's log lines
        if kind == "http":
            scope[SERVER_SEND] = send  # a stream writes its chunks behind the middleware
            if scope["path"] in HEALTH_CHECKS:
                scope[NOT_COUNTED] = True
            send = _responding(scope, send)
        if scope.get("path") == "/graphql" and (parts := parts_of(scope)) is not None:
            if kind == "http":
                await parts.graphql_http(scope, receive, send)
                return
            if kind == "websocket":
                await parts.websocket(scope, receive, send)
                return
        await self.http(scope, receive, send)

    @asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[dict[str, Parts]]:
        async with assemble(self.settings, self.schema) as parts:
            yield {PARTS: parts}


async def sse_session(request: Request) -> Response:
    """The cookie an EventSource sends: a session of its own (transports.http_streams)."""
    parts = parts_of(request.scope)
    if parts is None:
        starting = {"message": "Starting.", "extensions": {"code": "SERVICE_UNAVAILABLE"}}
        return JSONResponse({"errors": [starting]}, 503)
    return await parts.sessions(request)


async def alive(_request: Request) -> JSONResponse:
    """Liveness only: the process answers. Readiness of Postgres and Redis is /readyz."""
    return JSONResponse({"status": "ok"})


async def healthz(request: Request) -> JSONResponse:
    """Liveness, with HEALTHZ_DETAILS: also this worker's pid and viewer cache (`live` false for
    more than a moment means its heartbeat is not coming back from Redis, and every request
    reads its token from Postgres) and its WebSocket counters: not for anyone on the internet."""
    parts: Parts = request.state.parts
    cache = parts.services.viewers.cache
    stats = cache.stats
    viewer_cache = {"live": cache.live, "entries": len(cache), "hits": stats.hits, "misses": stats.misses}
    live = {"frames_written_directly": LeanWebSocketProtocol.frames_written}
    return JSONResponse({"status": "ok", "worker": os.getpid(), "viewer_cache": viewer_cache, "websocket": live})


async def readyz(request: Request) -> JSONResponse:
    """Readiness: Postgres answers a query and Redis (when configured) answers a PING."""
    parts: Parts = request.state.parts
    services = parts.services
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


async def no_web_client(_request: Request) -> JSONResponse:
    return JSONResponse({"graphql": "/graphql", "web client": "not built: run `make run` with Node.js installed"})


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


def _request_id(scope: Scope) -> str | None:
    """Heroku's X-Request-ID (its router's log line has it too), at most 200 characters."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            return value[:200].decode("latin-1")
    return None


def create_app(settings: Settings | None = None) -> ChatApp:
    """The app for `settings` (the environment's by default)."""
    return ChatApp(settings or load())


app = create_app()
