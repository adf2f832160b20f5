"""Apollo's multipart HTTP subscriptions (its "multipart subscriptions" spec 1.0) at /graphql, read
as Apollo Client's HttpLink reads them: a part counts once the boundary after it has arrived, and
`--graphql--` ends the body. Results are `{"payload": ExecutionResult}` parts, in order and at once
(not held until the next heartbeat); heartbeats are `{}` parts; refusals and revocations are an
errors part, then the final boundary; a client may close at any time."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support.graphql import Account, GraphQLClient, create_room, join_room, post_message, sign_up
from tests.support.httpstream import MULTIPART_ACCEPT, MultipartStream, open_multipart, part_errors
from tests.support.processes import SHARED_REDIS_URL, Server
from tests.support.sockets import closes_unnoticed
from tests.support.waiting import until
from tests.support.wsclient import MESSAGE_CREATED, ROOM_EVENTS

CONTENT_TYPE = 'multipart/mixed;boundary="graphql";subscriptionSpec="1.0"'
PART_HEAD = b"\r\n--graphql\r\ncontent-type: application/json; charset=utf-8\r\n\r\n"
FINAL = b"\r\n--graphql--\r\n"
LEAVE = "mutation($r: ID!) { leaveRoom(room: $r) }"
LATEST_CURSOR = "query($id: ID!) { room(id: $id) { latestEventCursor } }"


@pytest.fixture(scope="module")
def quiet(database_url: str) -> Iterator[Server]:
    """Postgres and Redis, two workers, heartbeats far apart: whatever arrives is a result's own part."""
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": SHARED_REDIS_URL,
        "CHANNEL_PREFIX": f"test-{uuid.uuid4().hex[:10]}:",
        "MULTIPART_HEARTBEAT_SECONDS": "30",
    }
    server = Server(env=env, workers=2).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def beating(database_url: str) -> Iterator[Server]:
    """A heartbeat part every half second."""
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": SHARED_REDIS_URL,
        "CHANNEL_PREFIX": f"test-{uuid.uuid4().hex[:10]}:",
        "MULTIPART_HEARTBEAT_SECONDS": "0.5",
    }
    server = Server(env=env, workers=1).start()
    yield server
    server.stop()


@pytest.fixture
def api(quiet: Server) -> Iterator[GraphQLClient]:
    client = GraphQLClient(quiet.url)
    yield client
    client.close()


def room_with(api: GraphQLClient, *members: Account) -> str:
    room = create_room(api, members[0])
    for member in members[1:]:
        join_room(api, member, room)
    return room


def codes(errors: list[dict]) -> list[str]:
    return [error["extensions"]["code"] for error in errors]


async def refused(stream: MultipartStream) -> list[dict]:
    """One part with errors, then the final boundary: the errors."""
    [body] = await stream.payloads(1)
    errors = part_errors(body)
    await stream.finishes()
    assert bytes(stream.raw).endswith(FINAL), bytes(stream.raw)
    return errors


async def test_a_subscription_is_answered_as_apollo_multipart(quiet: Server, api: GraphQLClient) -> None:
    ann = sign_up(api, "Ann")
    room = create_room(api, ann)
    anchor = post_message(api, ann, room, "anchor")
    variables = {"room": room, "after": anchor["id"]}
    async with await open_multipart(quiet.url, MESSAGE_CREATED, variables, token=ann.token) as stream:
        assert stream.status == 200
        assert stream.headers["content-type"].replace(" ", "") == CONTENT_TYPE
        posted = post_message(api, ann, room, "hello")
        [body] = await stream.payloads(1, timeout=5)
        assert body == {
            "payload": {
                "data": {
                    "messageCreated": {
                        "id": posted["id"],
                        "seq": 2,
                        "body": "hello",
                        "sender": {"id": ann.id, "name": "Ann"},
                        "room": {"id": room},
                    }
                }
            }
        }
        assert stream.payload_parts[0].headers == {"content-type": "application/json; charset=utf-8"}
        assert bytes(stream.raw).startswith(PART_HEAD), bytes(stream.raw)


async def test_results_arrive_in_order_each_at_once(quiet: Server, api: GraphQLClient) -> None:
    """Heartbeats are 30 s apart here: a part held back until the next boundary would be late."""
    ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
    room = room_with(api, ann, bob)
    anchor = post_message(api, ann, room, "anchor")
    async with await open_multipart(
        quiet.url, MESSAGE_CREATED, {"room": room, "after": anchor["id"]}, token=bob.token
    ) as stream:
        for i in range(3):
            post_message(api, ann, room, f"one at a time {i}")
            [message] = await stream.data("messageCreated", 1, timeout=5)
            assert message["body"] == f"one at a time {i}"
        for i in range(10):
            post_message(api, ann, room, f"m{i}")
        received = await stream.data("messageCreated", 10, timeout=10)
        assert [message["seq"] for message in received] == list(range(5, 15))
        assert [message["body"] for message in received] == [f"m{i}" for i in range(10)]
        assert await stream.silent(0.5)


async def test_room_events_over_multipart(quiet: Server, api: GraphQLClient) -> None:
    ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
    room = create_room(api, ann)
    start = api.data(LATEST_CURSOR, {"id": room}, ann.token)["room"]["latestEventCursor"]
    async with await open_multipart(quiet.url, ROOM_EVENTS, {"room": room, "after": start}, token=ann.token) as stream:
        join_room(api, bob, room)
        post_message(api, bob, room, "hi")
        events = await stream.data("roomEvents", 2, timeout=5)
        assert [event["__typename"] for event in events] == ["MemberJoined", "MessageCreated"]


async def test_an_idle_subscription_gets_heartbeat_parts(beating: Server) -> None:
    api = GraphQLClient(beating.url)
    ann = sign_up(api, "Ann")
    room = create_room(api, ann)
    anchor = post_message(api, ann, room, "anchor")
    async with await open_multipart(
        beating.url, MESSAGE_CREATED, {"room": room, "after": anchor["id"]}, token=ann.token
    ) as stream:
        # The thing tested: heartbeats over time. 6.4 intervals of MULTIPART_HEARTBEAT_SECONDS.
        span = 6.4 * float(beating.env["MULTIPART_HEARTBEAT_SECONDS"])
        await asyncio.sleep(span)
        within = [part for part in stream.heartbeats if part.at - stream.opened_at <= span]
        # Every 0.5 s: about 6 in 3.2 s; at least 4 with room for a busy machine, and not a flood.
        assert 4 <= len(within) <= 12, [round(part.at - stream.opened_at, 2) for part in within]
        assert stream.payload_parts == []
        assert all(part.headers.get("content-type", "").startswith("application/json") for part in stream.parts)
        post_message(api, ann, room, "between heartbeats")
        [message] = await stream.data("messageCreated", 1, timeout=5)
        assert message["body"] == "between heartbeats"
        count = len(stream.heartbeats)
        await stream.wait_until(lambda: len(stream.heartbeats) >= count + 2, 5, "two more heartbeats")
    api.close()


async def test_refusals_are_an_errors_part_then_the_end(quiet: Server, api: GraphQLClient) -> None:
    ann, eve = sign_up(api, "Ann"), sign_up(api, "Eve")
    room = create_room(api, ann)
    cases = [
        (None, {"room": room}, "UNAUTHENTICATED"),
        (eve.token, {"room": room}, "FORBIDDEN"),
        (ann.token, {"room": "987654"}, "NOT_FOUND"),
        (ann.token, {"room": room, "after": "x!"}, "BAD_USER_INPUT"),
    ]
    for token, variables, code in cases:
        async with await open_multipart(quiet.url, MESSAGE_CREATED, variables, token=token) as stream:
            assert stream.status == 200
            assert codes(await refused(stream)) == [code], (token, variables)


async def test_leaving_the_room_and_logging_out_end_the_subscription(quiet: Server, api: GraphQLClient) -> None:
    ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
    room = room_with(api, ann, bob)
    anchor = post_message(api, ann, room, "anchor")
    variables = {"room": room, "after": anchor["id"]}
    bobs = await open_multipart(quiet.url, MESSAGE_CREATED, variables, token=bob.token)
    anns = await open_multipart(quiet.url, MESSAGE_CREATED, variables, token=ann.token)
    async with bobs, anns:
        post_message(api, ann, room, "before")
        assert [m["body"] for m in await bobs.data("messageCreated", 1)] == ["before"]
        assert [m["body"] for m in await anns.data("messageCreated", 1)] == ["before"]
        api.data(LEAVE, {"r": room}, bob.token)
        assert codes(await refused(bobs)) == ["FORBIDDEN"]
        api.data("mutation { logOut }", token=ann.token)
        assert codes(await refused(anns)) == ["UNAUTHENTICATED"]


async def test_a_client_may_close_at_any_time(quiet: Server, api: GraphQLClient) -> None:
    ann = sign_up(api, "Ann")
    room = create_room(api, ann)
    anchor = post_message(api, ann, room, "anchor")
    offset = len(quiet.log())
    variables = {"room": room, "after": anchor["id"]}
    streams = [await open_multipart(quiet.url, MESSAGE_CREATED, variables, token=ann.token) for _ in range(5)]
    await streams[0].aclose()  # before anything
    post_message(api, ann, room, "one")
    for stream in streams[1:]:
        assert [m["body"] for m in await stream.data("messageCreated", 1)] == ["one"]
        await stream.aclose()
    post_message(api, ann, room, "two")
    # The server has noticed every close (none left half-closed), so its log below covers them.
    await until(lambda: closes_unnoticed(quiet.port) == 0, "the server noticed the closes")
    async with await open_multipart(quiet.url, MESSAGE_CREATED, variables, token=ann.token) as fresh:
        assert [m["body"] for m in await fresh.data("messageCreated", 2)] == ["one", "two"]
    assert httpx.get(f"{quiet.url}/healthz").status_code == 200
    log = quiet.log()[offset:]
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ('subscription { messageCreated(room: "1") { id ', "GRAPHQL_PARSE_FAILED"),
        ('subscription { messageCreated(room: "1") { nope } }', "GRAPHQL_VALIDATION_FAILED"),
    ],
)
def test_a_request_error_is_answered_before_streaming(quiet: Server, query: str, code: str) -> None:
    """The Accept header also takes `application/json`: as for any request asking for that, a
    well-formed request that does not parse or validate is 200 with the errors in the body (or,
    equally readable by Apollo Client, a multipart body whose one part is the errors)."""
    response = httpx.post(f"{quiet.url}/graphql", json={"query": query}, headers={"accept": MULTIPART_ACCEPT})
    if response.headers["content-type"].startswith("multipart/mixed"):
        assert response.status_code == 200
        assert response.content.endswith(FINAL)
        assert f'"code":"{code}"'.encode() in response.content.replace(b" ", b"")
    else:
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert codes(response.json()["errors"]) == [code]
