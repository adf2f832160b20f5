"""Sessions that end (issue 24): tokens expire (renewed by use, without a write per request),
`logOut(everywhere:)`, `changePassword`, and the SSE cookie session as a credential of its own.
Each end reaches every live transport: graphql-transport-ws, legacy graphql-ws, SSE (by header
and by cookie) and multipart. Against real servers: gunicorn on Postgres + Redis, and SQLite."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from redis import Redis

from tests.support.graphql import Account, GraphQLClient, create_room, join_room, post_message, sign_up
from tests.support.httpstream import MultipartStream, SSEStream, open_multipart, open_sse, part_errors
from tests.support.processes import SHARED_REDIS_URL, Server, migrate
from tests.support.wsclient import LEGACY_WS, MESSAGE_CREATED, PROTOCOLS, TRANSPORT_WS, GraphQLWebSocket

COOKIE = "chat_sse_token"
LOG_IN = "mutation($e: String!, $p: String!) { logIn(email: $e, password: $p) { token } }"
LOG_OUT = "mutation { logOut }"
LOG_OUT_EVERYWHERE = "mutation { logOut(everywhere: true) }"
CHANGE = "mutation($c: String!, $n: String!) { changePassword(current: $c, new: $n) { token user { id name } } }"
ME = "{ me { id } }"


def psql(database_url: str, sql: str) -> str:
    url = database_url.replace("postgres://", "postgresql://", 1)
    return subprocess.run(["psql", url, "-At", "-c", sql], check=True, capture_output=True, text=True).stdout.strip()


def codes(errors: list[dict]) -> list[str]:
    return [error["extensions"]["code"] for error in errors]


def log_in(api: GraphQLClient, account: Account, password: str | None = None) -> str:
    variables = {"e": account.email, "p": password or account.password}
    return api.data(LOG_IN, variables)["logIn"]["token"]


def open_session(url: str, token: str) -> str:
    """POST /graphql/sse-session: the cookie's value (the session's secret)."""
    response = httpx.post(f"{url}/graphql/sse-session", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 204, response.text
    return response.cookies[COOKIE]


def cookie_header(cookie: str) -> dict[str, str]:
    return {"cookie": f"{COOKIE}={cookie}"}


@dataclass
class Live:
    """One subscription to a room on each transport, all made with one token (SSE twice: by
    header, and by a cookie session made from the token)."""

    sockets: dict[str, GraphQLWebSocket] = field(default_factory=dict)
    sse: dict[str, SSEStream] = field(default_factory=dict)
    multipart: MultipartStream | None = None

    async def all_receive(self, body: str) -> None:
        for ws in self.sockets.values():
            assert (await ws.result("1"))["data"]["messageCreated"]["body"] == body
        for stream in self.sse.values():
            assert [m["body"] for m in await stream.data("messageCreated", 1)] == [body]
        assert self.multipart is not None
        [part] = await self.multipart.payloads(1)
        assert part["payload"]["data"]["messageCreated"]["body"] == body

    async def all_end(self, code: str = "UNAUTHENTICATED", timeout: float = 10.0) -> None:
        """Every subscription ends with `code`, as logOut has always ended them."""
        for ws in self.sockets.values():
            ended = await ws.result("1", timeout)
            assert codes(ended["errors"]) == [code], ended
            assert await ws.receive(timeout) == {"type": "complete", "id": "1"}
        for stream in self.sse.values():
            assert codes(await stream.refused(timeout)) == [code]
        assert self.multipart is not None
        [part] = await self.multipart.payloads(1, timeout)
        assert codes(part_errors(part)) == [code]
        await self.multipart.finishes(timeout)


@asynccontextmanager
async def live_everywhere(server: Server, token: str, room: str, after: str) -> AsyncIterator[Live]:
    variables = {"room": room, "after": after}
    cookie = open_session(server.url, token)
    live = Live()
    async with AsyncExitStack() as stack:
        for protocol in PROTOCOLS:
            ws = await GraphQLWebSocket.open(server.ws_url, protocol, token)
            stack.push_async_callback(ws.close)
            await ws.subscribe("1", MESSAGE_CREATED, variables)
            live.sockets[protocol] = ws
        live.sse["header"] = await stack.enter_async_context(
            await open_sse(server.url, MESSAGE_CREATED, variables, token=token)
        )
        live.sse["cookie"] = await stack.enter_async_context(
            await open_sse(
                server.url, MESSAGE_CREATED, variables, method="GET", headers={"cookie": f"{COOKIE}={cookie}"}
            )
        )
        live.multipart = await stack.enter_async_context(
            await open_multipart(server.url, MESSAGE_CREATED, variables, token=token)
        )
        yield live


async def refused_everywhere(server: Server, token: str, cookie: str, room: str) -> None:
    """A token (and a session made from it) that opens nothing any more, on any path."""
    api = GraphQLClient(server.url)
    try:
        assert api.data(ME, token=token) == {"me": None}
        assert api.error_codes('mutation { createRoom(name: "x") { id } }', token=token) == ["UNAUTHENTICATED"]
    finally:
        api.close()
    variables = {"room": room}
    for protocol in PROTOCOLS:
        ws = await GraphQLWebSocket.open(server.ws_url, protocol)
        await ws.send({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
        if protocol == LEGACY_WS:
            assert (await ws.receive())["type"] == "connection_error"
        assert await ws.close_code() == 4403
    async with await open_sse(server.url, MESSAGE_CREATED, variables, token=token) as stream:
        assert codes(await stream.refused()) == ["UNAUTHENTICATED"]
    cookie_header = {"cookie": f"{COOKIE}={cookie}"}
    async with await open_sse(server.url, MESSAGE_CREATED, variables, method="GET", headers=cookie_header) as stream:
        assert codes(await stream.refused()) == ["UNAUTHENTICATED"]
    async with await open_multipart(server.url, MESSAGE_CREATED, variables, token=token) as multipart:
        [part] = await multipart.payloads(1)
        assert codes(part_errors(part)) == ["UNAUTHENTICATED"]


@pytest.fixture
def api(server: Server) -> Iterator[GraphQLClient]:
    client = GraphQLClient(server.url)
    yield client
    client.close()


def room_with_anchor(api: GraphQLClient, owner: Account, *others: Account) -> tuple[str, str]:
    room = create_room(api, owner)
    for other in others:
        join_room(api, other, room)
    return room, post_message(api, owner, room, "anchor")["id"]


async def test_log_out_everywhere_ends_every_token_on_every_transport(server: Server, api: GraphQLClient) -> None:
    ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
    room, anchor = room_with_anchor(api, ann, bob)
    phone = log_in(api, ann)
    bobs = await GraphQLWebSocket.open(server.ws_url, TRANSPORT_WS, bob.token)
    await bobs.subscribe("1", MESSAGE_CREATED, {"room": room, "after": anchor})
    async with (
        live_everywhere(server, ann.token, room, anchor) as laptop,
        live_everywhere(server, phone, room, anchor) as handset,
    ):
        post_message(api, bob, room, "hello")
        await laptop.all_receive("hello")
        await handset.all_receive("hello")
        assert (await bobs.result("1"))["data"]["messageCreated"]["body"] == "hello"
        cookie = open_session(server.url, phone)
        assert api.data(LOG_OUT_EVERYWHERE, token=phone) == {"logOut": True}
        await laptop.all_end()
        await handset.all_end()
    await refused_everywhere(server, ann.token, cookie, room)
    await refused_everywhere(server, phone, cookie, room)
    # Someone else's live subscription is untouched, and Ann can sign in again.
    post_message(api, bob, room, "still here")
    assert (await bobs.result("1"))["data"]["messageCreated"]["body"] == "still here"
    await bobs.close()
    assert api.data(ME, token=log_in(api, ann)) == {"me": {"id": ann.id}}


async def test_log_out_revokes_its_token_and_its_cookie_sessions_only(server: Server, api: GraphQLClient) -> None:
    ann = sign_up(api, "Ann")
    room, anchor = room_with_anchor(api, ann)
    other = log_in(api, ann)
    cookie = open_session(server.url, ann.token)
    async with live_everywhere(server, ann.token, room, anchor) as live:
        assert api.data(LOG_OUT, token=ann.token) == {"logOut": True}
        await live.all_end()
    await refused_everywhere(server, ann.token, cookie, room)
    assert api.data(ME, token=other) == {"me": {"id": ann.id}}  # the other device stays signed in


async def test_change_password_revokes_every_token_and_returns_a_fresh_one(server: Server, api: GraphQLClient) -> None:
    ann = sign_up(api, "Ann")
    room, anchor = room_with_anchor(api, ann)
    other = log_in(api, ann)
    cookie = open_session(server.url, ann.token)
    new_password = "a much better passphrase"
    wrong = api.post(CHANGE, {"c": "not my password", "n": new_password}, token=ann.token)
    assert codes(wrong["errors"]) == ["BAD_USER_INPUT"] and wrong["errors"][0]["extensions"]["argument"] == "current"
    short = api.post(CHANGE, {"c": ann.password, "n": "short"}, token=ann.token)
    assert codes(short["errors"]) == ["BAD_USER_INPUT"] and short["errors"][0]["extensions"]["argument"] == "new"
    assert api.error_codes(CHANGE, {"c": ann.password, "n": new_password}) == ["UNAUTHENTICATED"]
    assert api.data(ME, token=ann.token) == {"me": {"id": ann.id}}  # refusals changed nothing

    async with live_everywhere(server, other, room, anchor) as live:
        changed = api.data(CHANGE, {"c": ann.password, "n": new_password}, token=ann.token)["changePassword"]
        await live.all_end()
    fresh = changed["token"]
    assert changed["user"] == {"id": ann.id, "name": "Ann"} and fresh not in (ann.token, other)
    await refused_everywhere(server, ann.token, cookie, room)
    await refused_everywhere(server, other, cookie, room)
    assert api.data(ME, token=fresh) == {"me": {"id": ann.id}}
    assert api.error_codes(LOG_IN, {"e": ann.email, "p": ann.password}) == ["UNAUTHENTICATED"]
    assert api.data(ME, token=log_in(api, ann, new_password)) == {"me": {"id": ann.id}}


async def test_delete_sse_session_revokes_the_captured_cookie(server: Server, api: GraphQLClient) -> None:
    """DELETE /graphql/sse-session ends the session on the server: its open stream ends, and a
    copy of the cookie taken before (a leaked one) opens nothing, while the token lives on."""
    ann = sign_up(api, "Ann")
    room, anchor = room_with_anchor(api, ann)
    variables = {"room": room, "after": anchor}
    captured = open_session(server.url, ann.token)
    headers = {"cookie": f"{COOKIE}={captured}"}
    async with await open_sse(server.url, MESSAGE_CREATED, variables, method="GET", headers=headers) as stream:
        post_message(api, ann, room, "before")
        assert [m["body"] for m in await stream.data("messageCreated", 1)] == ["before"]
        deleted = httpx.delete(f"{server.url}/graphql/sse-session", headers=headers)
        assert deleted.status_code == 204
        assert deleted.cookies.get(COOKIE) in (None, "", '""')
        assert codes(await stream.refused()) == ["UNAUTHENTICATED"]
    async with await open_sse(server.url, MESSAGE_CREATED, variables, method="GET", headers=headers) as again:
        assert codes(await again.refused()) == ["UNAUTHENTICATED"]
    assert api.data(ME, token=ann.token) == {"me": {"id": ann.id}}
    # The session secret is no bearer token, and a bearer token is no session.
    assert api.data(ME, token=captured) == {"me": None}
    fresh = open_session(server.url, ann.token)
    assert api.data(ME, token=fresh) == {"me": None}
    bearer_cookie = {"cookie": f"{COOKIE}={ann.token}"}
    async with await open_sse(server.url, MESSAGE_CREATED, variables, method="GET", headers=bearer_cookie) as bearer:
        assert codes(await bearer.refused()) == ["UNAUTHENTICATED"]
    # A revoked or made-up session cannot mint another.
    for bad in (captured, "sse.made-up", "x" * 5000):
        minted = httpx.post(f"{server.url}/graphql/sse-session", headers={"authorization": f"Bearer {bad}"})
        assert minted.status_code == 401


async def test_a_token_keeps_a_few_cookie_sessions_at_most(server: Server, api: GraphQLClient) -> None:
    """Each POST makes a session: a token holds 4 at most, the oldest revoked first."""
    ann = sign_up(api, "Ann")
    room, anchor = room_with_anchor(api, ann)
    cookies = [open_session(server.url, ann.token) for _ in range(6)]
    variables = {"room": room, "after": anchor}
    async with AsyncExitStack() as stack:
        streams = [
            await stack.enter_async_context(
                await open_sse(
                    server.url, MESSAGE_CREATED, variables, method="GET", headers={"cookie": f"{COOKIE}={c}"}
                )
            )
            for c in cookies
        ]
        for stream in streams[:2]:
            assert codes(await stream.refused()) == ["UNAUTHENTICATED"]
        post_message(api, ann, room, "to the four newest")
        for stream in streams[2:]:
            assert [m["body"] for m in await stream.data("messageCreated", 1)] == ["to the four newest"]


async def test_asking_again_with_the_cookie_keeps_the_session(server: Server, api: GraphQLClient) -> None:
    """A browser POSTs again (each page, each reconnect) with its cookie: it keeps that session,
    so the streams it has open are not ended by a new one displacing it."""
    ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
    room, anchor = room_with_anchor(api, ann)
    first = open_session(server.url, ann.token)
    variables = {"room": room, "after": anchor}
    async with await open_sse(
        server.url, MESSAGE_CREATED, variables, method="GET", headers=cookie_header(first)
    ) as stream:
        for _ in range(6):
            again = httpx.post(
                f"{server.url}/graphql/sse-session",
                headers={"authorization": f"Bearer {ann.token}", **cookie_header(first)},
            )
            assert again.status_code == 204 and again.cookies[COOKIE] == first
        post_message(api, ann, room, "still streaming")
        assert [m["body"] for m in await stream.data("messageCreated", 1)] == ["still streaming"]
    # Another user's session in the cookie is not kept: Bob's token gets a session of its own.
    bobs = httpx.post(
        f"{server.url}/graphql/sse-session", headers={"authorization": f"Bearer {bob.token}", **cookie_header(first)}
    )
    assert bobs.status_code == 204 and bobs.cookies[COOKIE] not in (first, bob.token)


def test_the_default_lifetime_renews_without_a_write_per_request(server: Server, api: GraphQLClient) -> None:
    ann = sign_up(api, "Ann")
    database_url = server.env["DATABASE_URL"]
    digest_query = (
        f"SELECT expires_at, EXTRACT(EPOCH FROM expires_at - now()) FROM tokens WHERE user_id = {int(ann.id)}"
    )
    before = psql(database_url, digest_query)
    expires, seconds = before.split("|")
    assert 30 * 86400 - 120 < float(seconds) <= 30 * 86400  # TOKEN_TTL_SECONDS' default: 30 days
    for _ in range(40):
        assert api.data(ME, token=ann.token) == {"me": {"id": ann.id}}
    assert psql(database_url, digest_query).split("|")[0] == expires  # not renewed: not a day old


@pytest.fixture(scope="module")
def short_lived(database_url: str) -> Iterator[Server]:
    """Tokens live 6 s and are never renewed: expiry while connected, on Postgres + Redis (the
    setup, a sign-up and five live connections on two workers, must fit in that lifetime on a
    loaded machine)."""
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": SHARED_REDIS_URL,
        "CHANNEL_PREFIX": f"test-{uuid.uuid4().hex[:10]}:",
        "TOKEN_TTL_SECONDS": "6",
        "TOKEN_RENEW_SECONDS": "0",
    }
    server = Server(env=env, workers=2).start()
    yield server
    server.stop()


async def test_a_live_connection_ends_when_its_token_expires(short_lived: Server) -> None:
    api = GraphQLClient(short_lived.url)
    try:
        ann = sign_up(api, "Ann")
        signed_up_at = time.monotonic()
        room, anchor = room_with_anchor(api, ann)
        cookie = open_session(short_lived.url, ann.token)
        async with live_everywhere(short_lived, ann.token, room, anchor) as live:
            post_message(api, ann, room, "while valid")
            await live.all_receive("while valid")
            # Ends within one check interval (a quarter of the lifetime) of the expiry.
            await live.all_end(timeout=10.0)
            assert time.monotonic() - signed_up_at >= 5.5
        await refused_everywhere(short_lived, ann.token, cookie, room)
        # Signing in again prunes the user's expired tokens (the session with its token).
        assert api.data(ME, token=log_in(api, ann)) == {"me": {"id": ann.id}}
        database_url = short_lived.env["DATABASE_URL"]
        assert psql(database_url, f"SELECT count(*) FROM tokens WHERE user_id = {int(ann.id)}") == "1"
    finally:
        api.close()


async def test_tokens_expire_on_the_embedded_default(tmp_path: Any) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'chat.db'}", "REDIS_URL": "", "TOKEN_TTL_SECONDS": "4"}
    env["TOKEN_RENEW_SECONDS"] = "0"
    migrate(env)
    server = Server(env=env, workers=1).start()
    api = GraphQLClient(server.url)
    try:
        ann = sign_up(api, "Ann")
        room, anchor = room_with_anchor(api, ann)
        ws = await GraphQLWebSocket.open(server.ws_url, LEGACY_WS, ann.token)
        await ws.subscribe("1", MESSAGE_CREATED, {"room": room, "after": anchor})
        assert api.data(ME, token=ann.token) == {"me": {"id": ann.id}}
        ended = await ws.result("1", timeout=10.0)
        assert codes(ended["errors"]) == ["UNAUTHENTICATED"]
        await ws.close()
        assert api.data(ME, token=ann.token) == {"me": None}
    finally:
        api.close()
        server.stop()


async def test_use_renews_a_token_and_idleness_ends_it(database_url: str) -> None:
    """Sliding expiry: used every half second, a 3 s token lives past its first 3 s (renewed at
    most once a second, not per request); left alone, it dies."""
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": SHARED_REDIS_URL,
        "CHANNEL_PREFIX": f"test-{uuid.uuid4().hex[:10]}:",
        "TOKEN_TTL_SECONDS": "3",
        "TOKEN_RENEW_SECONDS": "1",
    }
    server = Server(env=env, workers=2).start()
    api = GraphQLClient(server.url)
    try:
        ann = sign_up(api, "Ann")
        lifetime = float(env["TOKEN_TTL_SECONDS"])
        started = time.monotonic()
        while time.monotonic() - started < 5.0:  # the thing tested: used past its first lifetime
            assert api.data(ME, token=ann.token) == {"me": {"id": ann.id}}
            await asyncio.sleep(0.25)
        # Past its first lifetime it lives: use renewed it. Now idle (a request would renew it
        # again) for longer than a lifetime (the thing waited for): it is gone.
        await asyncio.sleep(lifetime + 0.5)
        assert api.data(ME, token=ann.token) == {"me": None}
        assert api.error_codes(LOG_OUT, token=ann.token) == ["UNAUTHENTICATED"]
    finally:
        api.close()
        server.stop()


def test_a_made_up_session_cookie_announces_nothing(server: Server, channel_prefix: str) -> None:
    """Anyone may send DELETE /graphql/sse-session with any cookie: one that names no session is
    cleared without a revocation announced to every process (a real logOut after it is the first
    thing the revocation channel carries)."""
    redis = Redis.from_url(SHARED_REDIS_URL)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(f"{channel_prefix}revocations")
    api = GraphQLClient(server.url)
    try:
        ann = sign_up(api, "Ann")
        for junk in (f"sse.{uuid.uuid4().hex}", "sse." + "x" * 40):
            answer = httpx.delete(f"{server.url}/graphql/sse-session", cookies={"chat_sse_token": junk})
            assert answer.status_code == 204
        assert api.data(LOG_OUT, token=ann.token) == {"logOut": True}
        deadline = time.monotonic() + 10
        message = None
        while message is None:
            assert time.monotonic() < deadline, "the logOut's revocation never came"
            message = pubsub.get_message(timeout=1.0)
        assert message["data"].decode() == f"revoke {hashlib.sha256(ann.token.encode()).hexdigest()}"
    finally:
        api.close()
        pubsub.close()
        redis.close()
