"""Operations whose client asked for a stream at /graphql (transports.http hands them here): who
the viewer is, what the resolvers see, and which protocol (transports.sse, transports.multipart)
serves the stream, its refusals included.

The token comes from `Authorization`. A browser's EventSource cannot set headers, so an SSE
subscription also takes a session from the `chat_sse_token` cookie, which `POST
/graphql/sse-session` sets when sent a valid `Authorization` header: HttpOnly, SameSite=Strict,
only sent to /graphql, and never in a URL (access logs, browser history and Referer headers keep
URLs). The cookie is honoured for SSE subscriptions only: a cross-site form can never run a
mutation with it.

The cookie holds a credential of its own, not the bearer token: a session secret (`sse.`...),
stored as a token row made from the bearer token (db/users.py). It expires with that token and
is revoked with it (logOut, changePassword); `DELETE /graphql/sse-session` revokes it on the
server, ending its streams, before it clears the cookie. It is never accepted as a bearer token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

import orjson
from databases import Database
from graphql import OperationType
from starlette.requests import HTTPConnection
from starlette.requests import Request as HTTPRequest
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from core.errors import ServiceUnavailable
from db import users
from execution.operations import Request
from identity.auth import SESSION_PREFIX, looks_like_jwt, new_session_secret, token_digest, token_from_header
from identity.revocations import Revocations
from identity.viewers import Viewers
from transports import multipart, sse
from transports.keepalive import Keepalive
from transports.media import Streamed
from transports.operations import LiveServer
from transports.stream import RETRY_AFTER_SECONDS

SESSION_COOKIE = "chat_sse_token"
SESSION_PATH = "/graphql"


class StreamEndpoint:
    def __init__(self, server: LiveServer, sse_heartbeat: float, multipart_heartbeat: float) -> None:
        self.server = server
        self.keepalives = {Streamed.SSE: Keepalive(sse_heartbeat), Streamed.MULTIPART: Keepalive(multipart_heartbeat)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send, request: Request, kind: Streamed) -> None:
        connection = HTTPConnection(scope)
        token = token_from_header(connection.headers.get("authorization"))
        if token is None and kind is Streamed.SSE and request.kind == OperationType.SUBSCRIPTION:
            token = session_secret(connection.cookies.get(SESSION_COOKIE))
        protocol = sse if kind is Streamed.SSE else multipart
        keepalive = self.keepalives[kind]
        try:
            viewer = await self.server.authenticate(token)
        except Exception:  # e.g. Postgres unreachable: the client should come back shortly
            await protocol.unavailable(self.server, keepalive, scope, receive, send)
            return
        last_event_id = connection.headers.get("last-event-id") if kind is Streamed.SSE else None
        context = self.server.context(viewer, connection, last_event_id or None)
        if request.kind == OperationType.SUBSCRIPTION:
            # Nothing reads the request's headers again: a long-lived stream need not keep them
            # (emptied in place: uvicorn's protocol holds the same list).
            scope["headers"].clear()
        await protocol.serve(self.server, keepalive, scope, receive, send, request, viewer, context)


def session_secret(cookie: str | None) -> str | None:
    """The session secret in a cookie; anything else (a bearer token included) is none."""
    return cookie if cookie and cookie.startswith(SESSION_PREFIX) and len(cookie) <= MAX_SECRET else None


# A session secret is 4 + 43 characters: anything longer is not one (and is not hashed).
MAX_SECRET = 64
# (bearer token, the session secret the request's cookie holds) -> the session's secret (that one
# if it is a valid session of the token, else a new one), or None when the token is not valid
CreateSession = Callable[[str, str | None], Awaitable[str | None]]
# a session's secret -> it is revoked: deleted, and its streams ended in every process
RevokeSession = Callable[[str], Awaitable[None]]


def _unauthenticated() -> Response:
    error = {"message": "Send a valid `Authorization: Bearer <token>`.", "extensions": {"code": "UNAUTHENTICATED"}}
    return Response(orjson.dumps({"errors": [error]}), 401, media_type="application/json")


def _unavailable(error: ServiceUnavailable) -> Response:
    body = {"errors": [{"message": str(error), "extensions": {"code": "SERVICE_UNAVAILABLE"}}]}
    return Response(orjson.dumps(body), 503, {"retry-after": str(RETRY_AFTER_SECONDS)}, "application/json")


async def open_session(request: HTTPRequest, create: CreateSession) -> Response:
    """`POST /graphql/sse-session` with `Authorization: Bearer <token>`: the cookie an EventSource
    sends instead (204), holding a session made from the token; 401 for a token that is not
    valid. A browser asking again (each page, each reconnect) keeps the session its cookie holds:
    a new one would end the streams still open with the old one."""
    token = token_from_header(request.headers.get("authorization"))
    secret = await create(token, session_secret(request.cookies.get(SESSION_COOKIE))) if token else None
    if secret is None:
        return _unauthenticated()
    response = Response(status_code=204)
    secure = request.url.scheme == "https"  # behind a trusted router, its X-Forwarded-Proto (forwarded.py)
    response.set_cookie(SESSION_COOKIE, secret, path=SESSION_PATH, httponly=True, samesite="strict", secure=secure)
    return response


async def close_session(request: HTTPRequest, revoke: RevokeSession) -> Response:
    """`DELETE /graphql/sse-session`: the cookie's session is revoked (its streams end, it opens
    no other) and the cookie cleared. 503 when the revocation cannot be announced (Redis
    away): the session is then left whole, and the client tries again."""
    secret = session_secret(request.cookies.get(SESSION_COOKIE))
    if secret is not None:
        try:
            await revoke(secret)
        except ServiceUnavailable as error:
            return _unavailable(error)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path=SESSION_PATH, httponly=True, samesite="strict")
    return response


class SessionEndpoint:
    """`POST` and `DELETE /graphql/sse-session`: the cookie's session made from a bearer token,
    and revoked."""

    def __init__(self, db: Database, viewers: Viewers, revocations: Revocations) -> None:
        self._db = db
        self._viewers = viewers
        self._revocations = revocations

    async def __call__(self, request: HTTPRequest) -> Response:
        if request.method == "DELETE":
            return await close_session(request, self.revoke)
        return await open_session(request, self.create)

    async def create(self, token: str, current: str | None) -> str | None:
        """The cookie's session if it is one of this token's; else a new SSE session made from a
        valid bearer token (the sessions it displaces are revoked)."""
        db = self._db
        if looks_like_jwt(token) and await self._viewers.of_host_token(token) is None:
            return None  # else the JWT is registered: a session is made from it as from a token
        if current is not None and await users.is_session_of(db, token_digest(current), token_digest(token)):
            return current
        secret = new_session_secret()
        displaced = await users.create_session(db, token_digest(token), token_digest(secret))
        if displaced is None:
            return None
        if displaced:
            await self._revocations.revoke(displaced, _nothing)  # deleted already
        return secret

    async def revoke(self, secret: str) -> None:
        """A session that exists is revoked everywhere; a made-up cookie costs one batched read,
        never an announcement to every process (anyone may send DELETE with any cookie)."""
        digest = token_digest(secret)
        if not await self._viewers.holds(digest):
            return
        await self._revocations.revoke(digest, partial(users.delete_token, self._db, digest))


async def _nothing() -> None:
    return None
