"""The baseline the benchmark compares with: the same schema and resolvers, served the way
Ariadne and broadcaster are used out of the box. Stock GraphQLTransportWSHandler (every
subscriber executes its own selection set for every event), stock broadcaster (a queue per
subscriber), graphql-core parsing and validating every request, the standard JSON encoder.

    gunicorn -c gunicorn.conf.py bench.naive_app:app
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ariadne.asgi import GraphQL
from ariadne.asgi.handlers import GraphQLTransportWSHandler
from broadcaster import Broadcast
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

import realtime.broadcast as broadcasting
from settings import settings

# Before the resolvers import it: publishers and per-subscriber streams use the stock Broadcast.
broadcasting.broadcast = Broadcast(settings.redis_url or "memory://")

from db.connection import database  # noqa: E402
from realtime.websocket import authenticate  # noqa: E402
from resolvers import schema  # noqa: E402
from resolvers.context import get_context  # noqa: E402

graphql = GraphQL(
    schema,
    context_value=get_context,
    websocket_handler=GraphQLTransportWSHandler(on_connect=authenticate),
)


async def healthz(_request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


@asynccontextmanager
async def lifespan(_app: Starlette) -> AsyncIterator[None]:
    await database.connect()
    await broadcasting.broadcast.connect()
    try:
        yield
    finally:
        await broadcasting.broadcast.disconnect()
        await database.disconnect()


app = Starlette(
    routes=[Route("/healthz", healthz), Route("/graphql", graphql), WebSocketRoute("/graphql", graphql)],
    lifespan=lifespan,
)
