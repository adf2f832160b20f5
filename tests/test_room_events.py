"""The room's event log: `Room.events` pages it oldest first, `roomEvents` replays it after a
cursor and goes live, on both protocols, across workers, gap-free and without duplicates;
joins and leaves are on it, a member who leaves stops receiving it, and `messageCreated` keeps
its meaning beside it."""

from __future__ import annotations

import asyncio
import base64

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
from tests.support.processes import Server
from tests.support.waiting import until
from tests.support.wsclient import MESSAGE_CREATED, PROTOCOLS, ROOM_EVENTS, GraphQLWebSocket

EVENTS = """
query($room: ID!, $after: String, $first: Int) {
  room(id: $room) {
    events(after: $after, first: $first) {
      edges { cursor node { __typename cursor at ... on MessageCreated { message { seq body } }
                            ... on MemberJoined { user { name } } ... on MemberLeft { user { name } } } }
      pageInfo { hasNextPage endCursor }
    }
  }
}"""
LEAVE = "mutation($r: ID!) { leaveRoom(room: $r) }"


@pytest.fixture
def api(server: Server) -> GraphQLClient:
    return GraphQLClient(server.url)


def page(api: GraphQLClient, account: Account, room: str, after: str | None = None, first: int = 100) -> dict:
    return api.data(EVENTS, {"room": room, "after": after, "first": first}, account.token)["room"]["events"]


def summary(event: dict) -> tuple[str, str]:
    """(type, who or what) of an event, from either the history or a subscription."""
    kind = event["__typename"]
    if kind == "MessageCreated":
        return kind, event["message"]["body"]
    return kind, event["user"]["name"]


def test_the_log_pages_oldest_first_with_joins_messages_and_leaves(api: GraphQLClient) -> None:
    ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
    room = create_room(api, ann)
    join_room(api, bob, room)
    post_message(api, ann, room, "hello")
    join_room(api, bob, room)  # joining twice is no event
    post_message(api, bob, room, "hi")
    api.data(LEAVE, {"r": room}, bob.token)
    api.data(LEAVE, {"r": room}, bob.token)  # nor is leaving twice

    everything = page(api, ann, room)
    assert [summary(edge["node"]) for edge in everything["edges"]] == [
        ("MemberJoined", "Ann"),
        ("MemberJoined", "Bob"),
        ("MessageCreated", "hello"),
        ("MessageCreated", "hi"),
        ("MemberLeft", "Bob"),
    ]
    assert everything["pageInfo"]["hasNextPage"] is False
    assert [edge["cursor"] for edge in everything["edges"]] == [edge["node"]["cursor"] for edge in everything["edges"]]
    # Message.seq keeps its meaning: messages only, 1, 2, ...
    assert [edge["node"]["message"]["seq"] for edge in everything["edges"][2:4]] == [1, 2]

    first = page(api, ann, room, first=2)
    assert [summary(edge["node"]) for edge in first["edges"]] == [("MemberJoined", "Ann"), ("MemberJoined", "Bob")]
    assert first["pageInfo"]["hasNextPage"] is True
    rest = page(api, ann, room, after=first["pageInfo"]["endCursor"])
    assert [edge["node"] for edge in rest["edges"]] == [edge["node"] for edge in everything["edges"][2:]]
    assert page(api, ann, room, after=everything["pageInfo"]["endCursor"])["edges"] == []


def test_a_cursor_of_another_room_or_garbage_is_refused(api: GraphQLClient) -> None:
    ann = sign_up(api, "Ann")
    room, other = create_room(api, ann, "mine", kind="PRIVATE"), create_room(api, ann, "other")
    foreign = page(api, ann, other)["edges"][0]["cursor"]
    forged = base64.urlsafe_b64encode(b"seq:1").decode()  # a messages cursor is not an events cursor
    for after in (foreign, "garbage!", forged):
        body = api.post(EVENTS, {"room": room, "after": after}, ann.token)
        assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "argument": "after"}
    eve = sign_up(api, "Eve")
    assert api.error_codes(EVENTS, {"room": room}, eve.token) == [
        "NOT_FOUND"
    ]  # room(id): as for a room that does not exist


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_room_events_replay_after_a_cursor_then_go_live(
    server: Server, api: GraphQLClient, protocol: str
) -> None:
    ann, bob, cat = sign_up(api, "Ann"), sign_up(api, "Bob"), sign_up(api, "Cat")
    room = create_room(api, ann)
    join_room(api, bob, room)
    post_message(api, bob, room, "one")
    middle = page(api, ann, room)["edges"][1]["cursor"]  # Bob joined

    ws = await GraphQLWebSocket.open(server.ws_url, protocol, ann.token)
    await ws.subscribe("e", ROOM_EVENTS, {"room": room, "after": middle})
    assert [summary(event) for event in await ws.events("e", 1)] == [("MessageCreated", "one")]
    assert await ws.silent(0.3)

    join_room(api, cat, room)
    post_message(api, cat, room, "two")
    api.data(LEAVE, {"r": room}, bob.token)
    live = await ws.events("e", 3)
    assert [summary(event) for event in live] == [
        ("MemberJoined", "Cat"),
        ("MessageCreated", "two"),
        ("MemberLeft", "Bob"),
    ]
    assert all(event["room"] == {"id": room} for event in live)
    history = [edge["node"]["cursor"] for edge in page(api, ann, room)["edges"]]
    assert [event["cursor"] for event in live] == history[-3:]

    # Without `after`: from now on.
    fresh = await GraphQLWebSocket.open(server.ws_url, protocol, ann.token)
    await fresh.subscribe("e", ROOM_EVENTS, {"room": room})
    await fresh.barrier()
    assert await fresh.silent(0.3)
    post_message(api, ann, room, "three")
    assert [summary(event) for event in await fresh.events("e", 1)] == [("MessageCreated", "three")]
    assert [summary(event) for event in await ws.events("e", 1)] == [("MessageCreated", "three")]
    await ws.close()
    await fresh.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_resuming_room_events_while_others_post_and_join_has_no_gap_and_no_duplicate(
    server: Server, api: GraphQLClient, protocol: str
) -> None:
    ann = sign_up(api, "Ann")
    room = create_room(api, ann)
    start = page(api, ann, room)["pageInfo"]["endCursor"]
    newcomers = [sign_up(api, f"New{i}") for i in range(5)]

    posted: list[int] = []

    async def busy_room() -> None:
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {ann.token}"}) as http:
            for i in range(40):
                variables = {"room": room, "body": f"m{i}"}
                assert (
                    "errors"
                    not in (await http.post("/graphql", json={"query": CREATE_MESSAGE, "variables": variables})).json()
                )
                if i % 8 == 0:
                    await asyncio.to_thread(join_room, api, newcomers[i // 8], room)
                posted.append(i)

    busy = asyncio.create_task(busy_room())
    await until(lambda: len(posted) >= 3, "the room busy")  # the replay-to-live switch happens mid-stream
    ws = await GraphQLWebSocket.open(server.ws_url, protocol, ann.token)
    await ws.subscribe("e", ROOM_EVENTS, {"room": room, "after": start})
    await busy
    received = await ws.events("e", 45)
    assert [event["cursor"] for event in received] == [
        edge["cursor"] for edge in page(api, ann, room, after=start)["edges"]
    ]
    assert sorted(summary(event) for event in received) == sorted(
        [("MessageCreated", f"m{i}") for i in range(40)] + [("MemberJoined", f"New{i}") for i in range(5)]
    )
    assert await ws.silent(0.5)
    await ws.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_member_who_leaves_stops_receiving_room_events_and_the_others_see_it(
    server: Server, api: GraphQLClient, protocol: str
) -> None:
    ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
    room = create_room(api, ann)
    join_room(api, bob, room)
    watchers = {}
    for account in (ann, bob):
        watchers[account.name] = await GraphQLWebSocket.open(server.ws_url, protocol, account.token)
        await watchers[account.name].subscribe("e", ROOM_EVENTS, {"room": room})
        await watchers[account.name].barrier()
    api.data(LEAVE, {"r": room}, bob.token)
    ended = await watchers["Bob"].result("e")
    assert ended["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert await watchers["Bob"].receive() == {"type": "complete", "id": "e"}
    assert [summary(event) for event in await watchers["Ann"].events("e", 1)] == [("MemberLeft", "Bob")]
    post_message(api, ann, room, "after bob")
    assert await watchers["Bob"].silent(0.3)
    assert [summary(event) for event in await watchers["Ann"].events("e", 1)] == [("MessageCreated", "after bob")]
    # And Bob may not come back to the log without joining again.
    await watchers["Bob"].subscribe("again", ROOM_EVENTS, {"room": room})
    assert [error["extensions"]["code"] for error in await watchers["Bob"].error("again")] == ["FORBIDDEN"]
    for ws in watchers.values():
        await ws.close()


async def test_message_created_beside_room_events_sees_only_messages(server: Server, api: GraphQLClient) -> None:
    ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
    room = create_room(api, ann)
    ws = await GraphQLWebSocket.open(server.ws_url, PROTOCOLS[0], ann.token)
    await ws.subscribe("m", MESSAGE_CREATED, {"room": room})
    await ws.subscribe("e", ROOM_EVENTS, {"room": room})
    await ws.barrier()
    join_room(api, bob, room)
    post_message(api, bob, room, "only this")
    by_operation: dict[str, list[dict]] = {"m": [], "e": []}
    for _ in range(3):
        message = await ws.receive()
        by_operation[message["id"]].append(message["payload"]["data"])
    assert [data["messageCreated"]["body"] for data in by_operation["m"]] == ["only this"]
    assert by_operation["m"][0]["messageCreated"]["seq"] == 1
    assert [summary(data["roomEvents"]) for data in by_operation["e"]] == [
        ("MemberJoined", "Bob"),
        ("MessageCreated", "only this"),
    ]
    assert await ws.silent(0.3)
    await ws.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_bad_room_events_cursor_is_refused(server: Server, api: GraphQLClient, protocol: str) -> None:
    ann = sign_up(api, "Ann")
    room, other = create_room(api, ann, "mine"), create_room(api, ann, "other")
    foreign = page(api, ann, other)["edges"][0]["cursor"]
    ws = await GraphQLWebSocket.open(server.ws_url, protocol, ann.token)
    for op_id, after in (("foreign", foreign), ("garbage", "x!")):
        await ws.subscribe(op_id, ROOM_EVENTS, {"room": room, "after": after})
        assert (await ws.error(op_id))[0]["extensions"] == {"code": "BAD_USER_INPUT", "argument": "after"}
    await ws.close()
