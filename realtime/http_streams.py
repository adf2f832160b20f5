"""Operations whose client asked for a stream at /graphql (execution.http hands them here): who
the viewer is, what the resolvers see, and which protocol frames the stream.

The token comes from `Authorization`. A browser's EventSource cannot set headers, so an SSE
subscription also takes it from the `chat_sse_token` cookie, which `POST /graphql/sse-session`
sets from the `Authorization` header: HttpOnly, SameSite=Strict, only sent to /graphql, and never
in a URL (access logs, browser history and Referer headers keep URLs). The cookie is honoured for
SSE subscriptions only: a cross-site form can never run a mutation with it.
"""

from __future__ import annotations

import orjson
from graphql import OperationType
from starlette.requests import HTTPConnection
from starlette.requests import Request as HTTPRequest
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from auth import token_from_header
from execution.media import Streamed
from execution.operations import Request
from realtime.keepalive import Keepalive
from realtime.multipart import MultipartStream
from realtime.operations import LiveServer
from realtime.sse import SSEStream
from realtime.stream import UNAVAILABLE

SESSION_COOKIE = "chat_sse_token"
SESSION_PATH = "/graphql"
RETRY_AFTER_SECONDS = 2


class StreamEndpoint:
    def __init__(self, server: LiveServer, sse_heartbeat: float, multipart_heartbeat: float) -> None:
        self.server = server
        self.keepalives = {Streamed.SSE: Keepalive(sse_heartbeat), Streamed.MULTIPART: Keepalive(multipart_heartbeat)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send, request: Request, kind: Streamed) -> None:
        connection = HTTPConnection(scope)
        token = token_from_header(connection.headers.get("authorization"))
        if token is None and kind is Streamed.SSE and request.kind == OperationType.SUBSCRIPTION:
            token = connection.cookies.get(SESSION_COOKIE) or None
        stream = SSEStream if kind is Streamed.SSE else MultipartStream
        try:
            viewer = await self.server.authenticate(token)
        except Exception:  # e.g. Postgres unreachable: the client should come back shortly
            if kind is Streamed.SSE:  # a stream that ends at once: an EventSource retries it
                await stream(self.server, self.keepalives[kind]).cut(scope, receive, send)
                return
            body = orjson.dumps({"errors": [UNAVAILABLE]})
            await Response(body, 503, {"retry-after": str(RETRY_AFTER_SECONDS)}, "application/json")(
                scope, receive, send
            )
            return
        last_event_id = connection.headers.get("last-event-id") if kind is Streamed.SSE else None
        context = self.server.context(viewer, connection, last_event_id or None)
        if request.kind == OperationType.SUBSCRIPTION:
            # Nothing reads the request's headers again: a long-lived stream need not keep them
            # (emptied in place: uvicorn's protocol holds the same list).
            scope["headers"].clear()
        await stream(self.server, self.keepalives[kind]).serve(scope, receive, send, request, viewer, context)


async def open_session(request: HTTPRequest, server: LiveServer) -> Response:
    """`POST /graphql/sse-session` with `Authorization: Bearer <token>`: the cookie an EventSource
    sends instead (204); 401 for a token that is not valid."""
    token = token_from_header(request.headers.get("authorization"))
    viewer = await server.authenticate(token) if token else None
    if token is None or viewer is None:
        error = {"message": "Send a valid `Authorization: Bearer <token>`.", "extensions": {"code": "UNAUTHENTICATED"}}
        body = {"errors": [error]}
        return Response(orjson.dumps(body), 401, media_type="application/json")
    response = Response(status_code=204)
    secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
    response.set_cookie(SESSION_COOKIE, token, path=SESSION_PATH, httponly=True, samesite="strict", secure=secure)
    return response


def close_session(_request: HTTPRequest) -> Response:
    """`DELETE /graphql/sse-session`: the cookie is gone (signing out revokes the token itself)."""
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path=SESSION_PATH, httponly=True, samesite="strict")
    return response
