"""The ASGI application: GraphQL over HTTP and WebSocket at /graphql, health checks, lifespan."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from ariadne.asgi import GraphQL
from ariadne.explorer import ExplorerGraphiQL, ExplorerHttp405
from graphql import DocumentNode
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

import logs
from db.connection import database
from errors import format_error
from execution.documents import query_parser, query_validator
from limits.body_size import BodySizeLimitMiddleware
from limits.http import JSONErrorsHTTPHandler
from limits.query_shape import cost_rule, shape_rule
from realtime.broadcast import broadcast, redis_reachable
from realtime.fanout import hub
from realtime.revocations import revocations
from realtime.websocket import DualProtocolHandler, StrictWebSocket
from resolvers import schema
from resolvers.context import get_context
from settings import settings
from viewer_cache import cache as viewer_cache

logs.configure(settings.log_level)

_shape_rule = shape_rule(settings.query_max_depth, settings.query_max_fields, settings.query_max_aliases)


def validation_rules(_context: Any, _document: DocumentNode, data: dict) -> list:
    """The cost depends on the variables (`first: $n`), so these rules are built per request."""
    variables = data.get("variables") if isinstance(data, dict) else None
    return [_shape_rule, cost_rule(settings.query_max_cost, variables if isinstance(variables, dict) else None)]


websocket_handler = DualProtocolHandler(
    keepalive=settings.ws_keepalive_seconds,
    init_timeout=settings.ws_init_timeout_seconds,
    max_subscriptions=settings.ws_max_subscriptions,
)
graphql = GraphQL(
    schema,
    context_value=get_context,
    error_formatter=format_error,
    execute_get_queries=True,
    validation_rules=validation_rules,
    query_parser=query_parser,
    query_validator=query_validator,
    introspection=settings.introspection,
    explorer=ExplorerGraphiQL() if settings.explorer else ExplorerHttp405(),
    http_handler=JSONErrorsHTTPHandler(),
    debug=settings.debug,
    logger="chat.graphql",
    websocket_handler=websocket_handler,
)


WEB_DIST = Path(__file__).resolve().parent / "web" / "dist"


async def no_web_client(_request: Request) -> JSONResponse:
    return JSONResponse({"graphql": "/graphql", "web client": "not built: run `make run` with Node.js installed"})


async def healthz(_request: Request) -> JSONResponse:
    """Liveness only: the process answers. Readiness of Postgres and Redis is /readyz.

    Also this worker's viewer cache: `live` false for more than a moment means its heartbeat
    is not coming back from Redis, and every request reads its token from Postgres."""
    stats = viewer_cache.stats
    cache = {"live": viewer_cache.live, "entries": len(viewer_cache), "hits": stats.hits, "misses": stats.misses}
    return JSONResponse({"status": "ok", "worker": os.getpid(), "viewer_cache": cache})


async def readyz(_request: Request) -> JSONResponse:
    """Readiness: Postgres answers a query and Redis (when configured) answers a PING."""
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(3):
            await database.fetch_val("SELECT 1")
        checks["database"] = "ok"
    except Exception as error:
        checks["database"] = f"unavailable: {type(error).__name__}"
    try:
        async with asyncio.timeout(3):
            reachable = await redis_reachable()
        checks["redis"] = "not configured" if reachable is None else "ok"
    except Exception as error:
        checks["redis"] = f"unavailable: {type(error).__name__}"
    ready = all(value in ("ok", "not configured") for value in checks.values())
    return JSONResponse({"status": "ready" if ready else "unavailable", **checks}, status_code=200 if ready else 503)


@asynccontextmanager
async def lifespan(_app: Starlette) -> AsyncIterator[None]:
    await database.connect()
    await broadcast.connect()
    await revocations.start()
    try:
        yield
    finally:
        await revocations.stop()
        await hub.close()
        await broadcast.disconnect()
        await database.disconnect()


http_app = Starlette(
    routes=[
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/graphql", graphql, methods=["GET", "POST"]),
        # The reference web client (web/), built by `make run`, `make test` and Heroku's Node buildpack.
        Mount("/", StaticFiles(directory=WEB_DIST, html=True)) if WEB_DIST.is_dir() else Route("/", no_web_client),
    ],
    middleware=[
        Middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes),
        *(
            [
                Middleware(
                    CORSMiddleware,
                    allow_origins=settings.cors_origins,
                    allow_methods=["GET", "POST"],
                    allow_headers=["authorization", "content-type"],
                    max_age=600,
                )
            ]
            if settings.cors_origins
            else []
        ),
    ],
    lifespan=lifespan,
)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """WebSockets at /graphql go straight to their handler: a long-lived connection keeps its
    whole coroutine stack (each frame about 250 bytes), and Starlette's routing and HTTP
    middleware, Ariadne's dispatch on the scope type, are of no use to it."""
    if scope["type"] == "websocket" and scope["path"] == "/graphql":
        await websocket_handler.handle_websocket(StrictWebSocket(scope=scope, receive=receive, send=send))
    else:
        await http_app(scope, receive, send)
