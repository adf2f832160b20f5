"""The ASGI application: GraphQL over HTTP and WebSocket at /graphql, health checks, lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ariadne.asgi import GraphQL
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from db.connection import database
from errors import ExpectedErrorFilter, format_error
from realtime.broadcast import broadcast, redis_reachable
from realtime.websocket import DualProtocolHandler
from resolvers import schema
from resolvers.context import get_context
from settings import settings

logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
logging.getLogger("chat.graphql").addFilter(ExpectedErrorFilter())

graphql = GraphQL(
    schema,
    context_value=get_context,
    error_formatter=format_error,
    execute_get_queries=True,
    debug=settings.debug,
    logger="chat.graphql",
    websocket_handler=DualProtocolHandler(
        keepalive=settings.ws_keepalive_seconds,
        init_timeout=settings.ws_init_timeout_seconds,
    ),
)


async def healthz(_request: Request) -> JSONResponse:
    """Liveness only: the process answers. Readiness of Postgres and Redis is /readyz."""
    return JSONResponse({"status": "ok"})


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
    try:
        yield
    finally:
        await broadcast.disconnect()
        await database.disconnect()


app = Starlette(
    routes=[
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/graphql", graphql, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", graphql),
    ],
    lifespan=lifespan,
)
