"""GraphQL over SSE at /graphql (graphql-sse's "distinct connections" mode), read as a browser's
EventSource reads it: the stream opens at once and stays alive with comments; results are `next`
events whose `id` is what resumes them (a message's id, a room event's cursor), so `Last-Event-ID`
on reconnect gives exactly what was missed; the token comes in the Authorization header or, for
EventSource, from a cookie session; refusals and revocations end with `next` (errors) then
`complete`; a restart ends the response without `complete` (EventSource reconnects)."""

from __future__ import annotations

import asyncio
import email.utils
import json
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from tests.support.graphql import (
    CREATE_MESSAGE,
    Account,
    GraphQLClient,
    create_room,
    join_room,
    post_message,
    sign_up,
)
from tests.support.httpstream import SSE_ACCEPT, SSEStream, open_sse
from tests.support.processes import SHARED_REDIS_URL, Server
from tests.support.sockets import closes_unnoticed, unread_by_server
from tests.support.waiting import until
from tests.support.wsclient import MESSAGE_CREATED, ROOM_EVENTS

COOKIE = "chat_sse_token"
LEAVE = "mutation($r: ID!) { leaveRoom(room: $r) }"
LOG_OUT = "mutation { logOut }"
# What a plain EventSource URL would carry: no `after` at all (Last-Event-ID supplies it).
MESSAGE_CREATED_NO_AFTER = "subscription($room: ID!) { messageCreated(room: $room) { id seq body } }"
LATEST_CURSOR = "query($id: ID!) { room(id: $id) { latestEventCursor } }"
EVENT_CURSORS = "query($id: ID!, $after: String) { room(id: $id) { events(after: $after) { edges { cursor } } } }"
METHODS = ["GET", "POST"]


@pytest.fixture
def api(server: Server) -> Iterator[GraphQLClient]:
    client = GraphQLClient(server.url)
    yield client
    client.close()


def dyno_env(database_url: str, **more: str) -> dict[str, str]:
    prefix = f"test-{uuid.uuid4().hex[:10]}:"
    return {"DATABASE_URL": database_url, "REDIS_URL": SHARED_REDIS_URL, "CHANNEL_PREFIX": prefix, **more}


@pytest.fixture(scope="module")
def beating(database_url: str) -> Iterator[Server]:
    """A heartbeat every half second."""
    server = Server(env=dyno_env(database_url, SSE_HEARTBEAT_SECONDS="0.5"), workers=1).start()
    yield server
    server.stop()


def room_with(api: GraphQLClient, *members: Account) -> str:
    room = create_room(api, members[0])
    for member in members[1:]:
        join_room(api, member, room)
    return room


def codes(errors: list[dict]) -> list[str]:
    return [error["extensions"]["code"] for error in errors]


def event_cursors(api: GraphQLClient, account: Account, room: str, after: str | None = None) -> list[str]:
    edges = api.data(EVENT_CURSORS, {"id": room, "after": after}, account.token)["room"]["events"]["edges"]
    return [edge["cursor"] for edge in edges]


def log_since(server: Server, offset: int) -> str:
    return server.log()[offset:]


async def test_the_stream_opens_at_once_with_a_comment_and_the_right_headers(
    server: Server, api: GraphQLClient
) -> None:
    ann = sign_up(api, "Ann")
    room = create_room(api, ann)
    async with await open_sse(server.url, MESSAGE_CREATED, {"room": room}, token=ann.token) as stream:
        assert stream.status == 200
        assert stream.headers["content-type"].replace(" ", "").lower() == "text/event-stream;charset=utf-8"
        assert "no-cache" in stream.headers["cache-control"]
        assert stream.headers["x-accel-buffering"] == "no"
        # Long before the first heartbeat (15 s by default): the proxies see bytes at once.
        await stream.wait_comments(1, timeout=3)
        assert stream.first_byte_at is not None and stream.first_byte_at - stream.opened_at < 3
        assert bytes(stream.raw).startswith(b":\n\n")
        assert stream.events == []


async def test_an_idle_stream_gets_heartbeat_comments_and_still_delivers(beating: Server) -> None:
    api = GraphQLClient(beating.url)
    ann = sign_up(api, "Ann")
    room = create_room(api, ann)
    anchor = post_message(api, ann, room, "anchor")
    variables = {"room": room, "after": anchor["id"]}
    async with await open_sse(beating.url, MESSAGE_CREATED, variables, token=ann.token) as stream:
        # The thing tested: heartbeats over time. 6.4 intervals of SSE_HEARTBEAT_SECONDS.
        span = 6.4 * float(beating.env["SSE_HEARTBEAT_SECONDS"])
        await asyncio.sleep(span)
        within = [c for c in stream.comments if c.at - stream.opened_at <= span]
        # Every 0.5 s: about 7 in 3.2 s; at least 4 with room for a busy machine, and not a flood.
        assert 4 <= len(within) <= 12, [round(c.at - stream.opened_at, 2) for c in within]
        assert all(comment.text == "" for comment in stream.comments)
        assert stream.events == []
        assert b"\n:\n\n" in bytes(stream.raw)
        posted = post_message(api, ann, room, "between heartbeats")
        [event] = await stream.next_events(1)
        assert event.id == posted["id"]
        assert event.json() == {"data": {"messageCreated": {**pick(posted), "room": {"id": room}}}}
        await stream.wait_comments(len(stream.comments) + 2, timeout=5)
        assert await stream.silent(0.3)
    api.close()


def pick(message: dict) -> dict:
    """The fields MESSAGE_CREATED selects, but `room`."""
    return {key: message[key] for key in ("id", "seq", "body", "sender")}


async def test_the_embedded_default_streams_too(sqlite_server: Server) -> None:
    api = GraphQLClient(sqlite_server.url)
    ann = sign_up(api, "Ann")
    room = create_room(api, ann)
    anchor = post_message(api, ann, room, "anchor")
    variables = {"room": room, "after": anchor["id"]}
    async with await open_sse(sqlite_server.url, MESSAGE_CREATED, variables, token=ann.token) as stream:
        posted = post_message(api, ann, room, "on sqlite")
        [event] = await stream.next_events(1)
        assert event.id == posted["id"]
        assert event.json()["data"]["messageCreated"]["body"] == "on sqlite"
    api.close()


@pytest.mark.parametrize("method", METHODS)
async def test_message_created_events_carry_the_message_id(server: Server, api: GraphQLClient, method: str) -> None:
    ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
    room = room_with(api, ann, bob)
    anchor = post_message(api, ann, room, "anchor")
    variables = {"room": room, "after": anchor["id"]}
    async with await open_sse(server.url, MESSAGE_CREATED, variables, token=bob.token, method=method) as stream:
        posted = [post_message(api, ann, room, f"m{i}") for i in range(1, 4)]
        events = await stream.next_events(3)
        assert [event.id for event in events] == [message["id"] for message in posted]
        assert [event.json()["data"]["messageCreated"]["body"] for event in events] == ["m1", "m2", "m3"]
        assert [event.json()["data"]["messageCreated"]["seq"] for event in events] == [2, 3, 4]
        assert events[-1].last_event_id == posted[-1]["id"]
        assert await stream.silent(0.3)


@pytest.mark.parametrize("method", METHODS)
async def test_room_events_carry_their_cursor(server: Server, api: GraphQLClient, method: str) -> None:
    ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
    room = create_room(api, ann)
    start = api.data(LATEST_CURSOR, {"id": room}, ann.token)["room"]["latestEventCursor"]
    variables = {"room": room, "after": start}
    async with await open_sse(server.url, ROOM_EVENTS, variables, token=ann.token, method=method) as stream:
        join_room(api, bob, room)
        post_message(api, bob, room, "hello")
        events = await stream.next_events(2)
        nodes = [event.json()["data"]["roomEvents"] for event in events]
        assert [node["__typename"] for node in nodes] == ["MemberJoined", "MessageCreated"]
        assert [event.id for event in events] == [node["cursor"] for node in nodes]
        assert [event.id for event in events] == event_cursors(api, ann, room, start)
        assert await stream.silent(0.3)


async def test_last_event_id_resumes_exactly_the_missed_messages_and_wins_over_after(
    server: Server, api: GraphQLClient
) -> None:
    """EventSource keeps its URL (here with `after` the anchor) and sends Last-Event-ID when it
    reconnects: the header wins, so it gets what it missed, once."""
    ann = sign_up(api, "Ann")
    room = create_room(api, ann)
    anchor = post_message(api, ann, room, "anchor")
    variables = {"room": room, "after": anchor["id"]}
    first = await open_sse(server.url, MESSAGE_CREATED, variables, token=ann.token, method="GET")
    seen = [post_message(api, ann, room, f"m{i}") for i in range(1, 4)]
    events = await first.next_events(3)
    assert [event.id for event in events] == [message["id"] for message in seen]
    last_event_id = events[-1].last_event_id
    await first.aclose()

    missed = [post_message(api, ann, room, f"m{i}") for i in range(4, 7)]
    async with await open_sse(
        server.url, MESSAGE_CREATED, variables, token=ann.token, method="GET", last_event_id=last_event_id
    ) as resumed:
        events = await resumed.next_events(3)
        assert [event.id for event in events] == [message["id"] for message in missed]
        assert [event.json()["data"]["messageCreated"]["seq"] for event in events] == [5, 6, 7]
        assert await resumed.silent(0.5)
        live = post_message(api, ann, room, "m7")
        [event] = await resumed.next_events(1)
        assert event.id == live["id"] and event.json()["data"]["messageCreated"]["seq"] == 8
        assert await resumed.silent(0.3)


async def test_resuming_with_last_event_id_while_others_post_has_no_gap_and_no_duplicate(
    server: Server, api: GraphQLClient
) -> None:
    """The document has no `after` at all: the header alone resumes it."""
    ann = sign_up(api, "Ann")
    room = create_room(api, ann)
    first = post_message(api, ann, room, "m1")

    created: list[dict] = []

    async def post_burst() -> list[dict]:
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {ann.token}"}) as http:
            for i in range(2, 41):
                variables = {"room": room, "body": f"m{i}"}
                response = await http.post("/graphql", json={"query": CREATE_MESSAGE, "variables": variables})
                created.append(response.json()["data"]["createMessage"])
        return created

    burst = asyncio.create_task(post_burst())
    # Resume while the burst is under way (some posted, most to come): the switch-over is mid-stream.
    await until(lambda: len(created) >= 3, "the burst under way")
    async with await open_sse(
        server.url, MESSAGE_CREATED_NO_AFTER, {"room": room}, token=ann.token, last_event_id=first["id"]
    ) as stream:
        created = await burst
        events = await stream.next_events(39, timeout=30)
        assert [event.json()["data"]["messageCreated"]["seq"] for event in events] == list(range(2, 41))
        assert [event.id for event in events] == [message["id"] for message in created]
        assert await stream.silent(0.5)


async def test_last_event_id_resumes_room_events_and_wins_over_after(server: Server, api: GraphQLClient) -> None:
    ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
    room = create_room(api, ann)
    start = api.data(LATEST_CURSOR, {"id": room}, ann.token)["room"]["latestEventCursor"]
    join_room(api, bob, room)
    for i in range(3):
        post_message(api, bob, room, f"m{i}")
    cursors = event_cursors(api, ann, room, start)  # joined, m0, m1, m2
    assert len(cursors) == 4
    variables = {"room": room, "after": start}
    async with await open_sse(
        server.url, ROOM_EVENTS, variables, token=ann.token, method="GET", last_event_id=cursors[1]
    ) as stream:
        events = await stream.next_events(2)
        assert [event.id for event in events] == cursors[2:]
        assert [event.json()["data"]["roomEvents"]["message"]["body"] for event in events] == ["m1", "m2"]
        assert await stream.silent(0.5)
        post_message(api, ann, room, "live")
        [event] = await stream.next_events(1)
        assert event.id == event_cursors(api, ann, room, cursors[-1])[0]


@pytest.mark.parametrize("method", METHODS)
async def test_refusals_are_a_next_with_errors_then_complete(server: Server, api: GraphQLClient, method: str) -> None:
    ann, eve = sign_up(api, "Ann"), sign_up(api, "Eve")
    room = create_room(api, ann)
    cases = [
        (None, {"room": room}, None, "UNAUTHENTICATED"),  # not signed in
        ("not-a-token", {"room": room}, None, "UNAUTHENTICATED"),
        (eve.token, {"room": room}, None, "FORBIDDEN"),  # not a member
        (ann.token, {"room": "987654"}, None, "NOT_FOUND"),
        (ann.token, {"room": room, "after": "987654321"}, None, "BAD_USER_INPUT"),
        (ann.token, {"room": room}, "x!", "BAD_USER_INPUT"),  # a Last-Event-ID that is no message of the room
    ]
    for token, variables, last_event_id, code in cases:
        async with await open_sse(
            server.url, MESSAGE_CREATED, variables, token=token, method=method, last_event_id=last_event_id
        ) as stream:
            assert stream.status == 200
            assert codes(await stream.refused()) == [code], (token, variables, last_event_id)
    post_message(api, ann, room, "not for eve")


@pytest.mark.parametrize(
    ("method", "content", "query"),
    [
        ("POST", b"{not json", None),
        ("POST", b'{"variables": {}}', None),  # no query
        ("POST", None, 'subscription { messageCreated(room: "1") { id '),
        ("POST", None, 'subscription { messageCreated(room: "1") { nothing } }'),
        ("GET", None, "subscription { messageCreated(room: "),
        ("GET", None, "subscription { nothing }"),
    ],
)
def test_request_errors_are_a_400_json_answer(server: Server, method: str, content: bytes | None, query: str) -> None:
    headers = {"accept": SSE_ACCEPT}
    if method == "GET":
        response = httpx.get(f"{server.url}/graphql", params={"query": query}, headers=headers)
    elif content is not None:
        response = httpx.post(
            f"{server.url}/graphql", content=content, headers={**headers, "content-type": "application/json"}
        )
    else:
        response = httpx.post(f"{server.url}/graphql", json={"query": query}, headers=headers)
    assert response.status_code == 400, response.text
    assert "json" in response.headers["content-type"], response.headers
    assert response.json()["errors"][0]["message"]
    assert "Traceback" not in response.text


@pytest.mark.parametrize("method", METHODS)
async def test_a_query_over_sse_is_one_next_then_complete(server: Server, api: GraphQLClient, method: str) -> None:
    ann = sign_up(api, "Ann")
    async with await open_sse(server.url, "{ me { id name } }", token=ann.token, method=method) as stream:
        assert stream.status == 200
        assert await stream.results(1) == [{"data": {"me": {"id": ann.id, "name": "Ann"}}}]
        await stream.completes()


async def test_a_mutation_over_sse_is_one_next_then_complete_and_not_over_get(
    server: Server, api: GraphQLClient
) -> None:
    ann = sign_up(api, "Ann")
    room = create_room(api, ann)
    variables = {"room": room, "body": "over sse"}
    async with await open_sse(server.url, CREATE_MESSAGE, variables, token=ann.token) as stream:
        [result] = await stream.results(1)
        assert result["data"]["createMessage"]["body"] == "over sse"
        assert result["data"]["createMessage"]["seq"] == 1
        await stream.completes()
    refused = httpx.get(
        f"{server.url}/graphql",
        params={"query": 'mutation { createRoom(name: "over get") { id } }'},
        headers={"accept": SSE_ACCEPT, "authorization": f"Bearer {ann.token}"},
    )
    assert refused.status_code == 405
    assert refused.headers["allow"] == "POST"
    assert api.data("{ rooms { name } }", token=ann.token) == {"rooms": [{"name": "room"}]}


def parse_set_cookie(header: str) -> tuple[str, str, dict[str, str]]:
    pair, *attributes = [part.strip() for part in header.split(";")]
    name, _, value = pair.partition("=")
    parsed = {}
    for attribute in attributes:
        key, _, val = attribute.partition("=")
        parsed[key.strip().lower()] = val.strip()
    return name, value, parsed


def session_cookies(response: httpx.Response) -> list[tuple[str, str, dict[str, str]]]:
    found = [parse_set_cookie(header) for header in response.headers.get_list("set-cookie")]
    return [cookie for cookie in found if cookie[0] == COOKIE]


def test_the_sse_session_sets_an_httponly_cookie_refuses_bad_tokens_and_clears(
    server: Server, api: GraphQLClient
) -> None:
    ann = sign_up(api, "Ann")
    created = httpx.post(f"{server.url}/graphql/sse-session", headers={"authorization": f"Bearer {ann.token}"})
    assert created.status_code == 204, created.text
    [(_, value, attributes)] = session_cookies(created)
    assert value.startswith("sse.") and ann.token not in value  # a credential of its own (issue 24)
    assert "httponly" in attributes
    assert attributes.get("path") == "/graphql"
    assert attributes.get("samesite", "").lower() == "strict"

    for bad in ("not-a-token", f"{ann.token}x"):
        refused = httpx.post(f"{server.url}/graphql/sse-session", headers={"authorization": f"Bearer {bad}"})
        assert refused.status_code == 401, refused.text
        assert all(value != bad for _, value, _ in session_cookies(refused))

    cleared = httpx.delete(f"{server.url}/graphql/sse-session", cookies={COOKIE: value})
    assert cleared.status_code == 204
    [(_, value, attributes)] = session_cookies(cleared)
    assert value in ("", '""'), value
    expired = attributes.get("max-age") == "0"
    if "expires" in attributes:
        expired = expired or email.utils.parsedate_to_datetime(attributes["expires"]) < datetime.now(UTC)
    assert expired, attributes


async def test_an_event_source_signed_in_by_cookie(server: Server, api: GraphQLClient) -> None:
    """What a browser does: the session cookie, then EventSource (a GET without headers of its
    own) with the document in the URL. The cookie signs in nothing else, and DELETE ends it."""
    ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
    room = room_with(api, ann, bob)
    anchor = post_message(api, ann, room, "anchor")
    offset = len(server.log())
    async with httpx.AsyncClient(base_url=server.url, timeout=httpx.Timeout(10.0, read=None)) as browser:
        session = await browser.post("/graphql/sse-session", headers={"authorization": f"Bearer {bob.token}"})
        assert session.status_code == 204
        assert (browser.cookies.get(COOKIE) or "").startswith("sse.")
        variables = {"room": room, "after": anchor["id"]}
        async with await open_sse(server.url, MESSAGE_CREATED, variables, method="GET", http=browser) as stream:
            posted = post_message(api, ann, room, "to bob's browser")
            [event] = await stream.next_events(1)
            assert event.id == posted["id"]
            assert event.json()["data"]["messageCreated"]["body"] == "to bob's browser"

        # Honoured for streamed subscriptions only: not for a query or a mutation, plain or streamed.
        plain = await browser.post("/graphql", json={"query": "{ me { id } }"})
        assert plain.json() == {"data": {"me": None}}
        mutation = await browser.post("/graphql", json={"query": 'mutation { createRoom(name: "csrf") { id } }'})
        assert codes(mutation.json()["errors"]) == ["UNAUTHENTICATED"]
        streamed = await open_sse(server.url, 'mutation { createRoom(name: "csrf") { id } }', http=browser)
        async with streamed:
            [result] = await streamed.results(1)
            assert codes(result["errors"]) == ["UNAUTHENTICATED"] and not result.get("data")
            await streamed.completes()
        assert api.data("{ rooms { id } }", token=bob.token) == {"rooms": [{"id": room}]}

        cleared = await browser.delete("/graphql/sse-session")
        assert cleared.status_code == 204
        assert browser.cookies.get(COOKIE) in (None, "", '""')
        async with await open_sse(server.url, MESSAGE_CREATED, variables, method="GET", http=browser) as stream:
            assert codes(await stream.refused()) == ["UNAUTHENTICATED"]
    # The access lines are written: the last request's (the refused GET) after the DELETE's.
    await until(
        lambda: '"GET /graphql' in log_since(server, offset).rpartition('"DELETE /graphql/sse-session')[2],
        "the access lines written",
    )
    log = log_since(server, offset)
    assert "/graphql/sse-session" in log
    assert bob.token not in server.log()


@pytest.mark.parametrize("by", ["header", "cookie"])
async def test_logging_out_ends_the_stream(server: Server, api: GraphQLClient, by: str) -> None:
    ann = sign_up(api, "Ann")
    room = create_room(api, ann)
    anchor = post_message(api, ann, room, "anchor")
    variables = {"room": room, "after": anchor["id"]}
    session = httpx.post(f"{server.url}/graphql/sse-session", headers={"authorization": f"Bearer {ann.token}"})
    cookie = session.cookies[COOKIE]
    token, headers = (ann.token, None) if by == "header" else (None, {"cookie": f"{COOKIE}={cookie}"})
    async with await open_sse(server.url, MESSAGE_CREATED, variables, token=token, headers=headers) as stream:
        post_message(api, ann, room, "before")
        assert [m["body"] for m in await stream.data("messageCreated", 1)] == ["before"]
        api.data(LOG_OUT, token=ann.token)
        assert codes(await stream.refused()) == ["UNAUTHENTICATED"]
    async with await open_sse(server.url, MESSAGE_CREATED, variables, token=token, headers=headers) as again:
        assert codes(await again.refused()) == ["UNAUTHENTICATED"]
    assert ann.token not in server.log()


async def test_leaving_the_room_ends_both_subscriptions(server: Server, api: GraphQLClient) -> None:
    ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
    room = room_with(api, ann, bob)
    anchor = post_message(api, ann, room, "anchor")
    start = api.data(LATEST_CURSOR, {"id": room}, ann.token)["room"]["latestEventCursor"]
    messages = await open_sse(server.url, MESSAGE_CREATED, {"room": room, "after": anchor["id"]}, token=bob.token)
    events = await open_sse(server.url, ROOM_EVENTS, {"room": room, "after": start}, token=bob.token, method="GET")
    async with messages, events:
        post_message(api, ann, room, "before")
        assert [m["body"] for m in await messages.data("messageCreated", 1)] == ["before"]
        assert [e["message"]["body"] for e in await events.data("roomEvents", 1)] == ["before"]
        api.data(LEAVE, {"r": room}, bob.token)
        assert codes(await messages.refused()) == ["FORBIDDEN"]
        assert codes(await events.refused()) == ["FORBIDDEN"]


async def test_the_server_keeps_serving_after_clients_drop_mid_stream(server: Server, api: GraphQLClient) -> None:
    ann = sign_up(api, "Ann")
    room = create_room(api, ann)
    anchor = post_message(api, ann, room, "anchor")
    offset = len(server.log())
    variables = {"room": room, "after": anchor["id"]}
    streams: list[SSEStream] = []
    for i in range(6):
        streams.append(await open_sse(server.url, MESSAGE_CREATED, variables, token=ann.token, method=METHODS[i % 2]))
    await streams[0].aclose()  # before anything but the opening comment
    post_message(api, ann, room, "one")
    for stream in streams[1:4]:
        assert [m["body"] for m in await stream.data("messageCreated", 1)] == ["one"]
        await stream.aclose()  # after an event
    for stream in streams[4:]:
        await stream.wait_comments(1)
        await stream.aclose()  # idle
    post_message(api, ann, room, "two")
    # The server has noticed every drop (none left half-closed), writing to them or not.
    await until(lambda: closes_unnoticed(server.port) == 0, "the server noticed the drops")
    async with await open_sse(server.url, MESSAGE_CREATED, variables, token=ann.token) as fresh:
        assert [m["body"] for m in await fresh.data("messageCreated", 2)] == ["one", "two"]
        post_message(api, ann, room, "three")
        assert [m["body"] for m in await fresh.data("messageCreated", 1)] == ["three"]
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    log = log_since(server, offset)
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log


async def test_a_graceful_stop_ends_the_stream_without_complete_and_the_next_server_resumes_it(
    database_url: str,
) -> None:
    env = dyno_env(database_url)
    server = Server(env=env, workers=1).start()
    try:
        api = GraphQLClient(server.url)
        ann = sign_up(api, "Ann")
        room = create_room(api, ann)
        anchor = post_message(api, ann, room, "anchor")
        variables = {"room": room, "after": anchor["id"]}
        async with await open_sse(server.url, MESSAGE_CREATED, variables, token=ann.token) as stream:
            post_message(api, ann, room, "before the restart")
            [event] = await stream.next_events(1)
            api.close()
            assert server.process is not None
            stopped_at = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            # Ended by the server itself, not by gunicorn's kill at the graceful timeout (20 s).
            await stream.wait_end(timeout=10)
            assert [e.type for e in stream.events] == ["next"], stream.events
            assert stream.ended_at is not None and stream.ended_at - stopped_at < 10
        assert server.process.wait(30) == 0
    finally:
        server.stop()

    # EventSource reconnects by itself, with the id of the last event it saw.
    successor = Server(env=env, workers=1).start()
    try:
        api = GraphQLClient(successor.url)
        missed = [post_message(api, ann, room, f"while away {i}") for i in range(2)]
        async with await open_sse(
            successor.url, MESSAGE_CREATED, variables, token=ann.token, last_event_id=event.last_event_id
        ) as resumed:
            events = await resumed.next_events(2)
            assert [e.id for e in events] == [message["id"] for message in missed]
            assert await resumed.silent(0.5)
        api.close()
    finally:
        successor.stop()


async def test_a_stream_still_on_its_way_in_when_the_stop_begins_ends_at_once_too(database_url: str) -> None:
    """Its headers read before the stop, its body after: no stream was open to be told to end, so
    the worker must not open one that lasts until gunicorn's kill at the graceful timeout (20 s)."""
    server = Server(env=dyno_env(database_url), workers=1).start()
    try:
        api = GraphQLClient(server.url)
        ann = sign_up(api, "Ann")
        room = create_room(api, ann)
        api.close()
        body = json.dumps({"query": MESSAGE_CREATED_NO_AFTER, "variables": {"room": room}}).encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        head = (
            f"POST /graphql HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: {SSE_ACCEPT}\r\n"
            f"content-type: application/json\r\nauthorization: Bearer {ann.token}\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        ).encode()
        writer.write(head + body[:10])
        await writer.drain()
        # The worker has read the headers (nothing unread in the kernel) and waits for the rest.
        await until(lambda: unread_by_server(server.port) == 0, "the headers read")
        assert server.process is not None
        logged = len(server.log())
        stopped_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        await until(lambda: "Shutting down" in server.log()[logged:], "the worker draining")
        writer.write(body[10:])
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 10)  # until the server closes it
        ended_after = time.monotonic() - stopped_at
        writer.close()
        assert response.startswith(b"HTTP/1.1 200"), response
        assert b"text/event-stream" in response and b"complete" not in response, response
        assert ended_after < 5, f"the stream lasted {ended_after:.1f} s into the stop"
        assert server.process.wait(30) == 0
        assert time.monotonic() - stopped_at < 10
    finally:
        server.stop()
