"""`myRooms`, one subscription for all of my rooms, against gunicorn (two workers) on Postgres and
Redis, over every transport: UPDATED for a message in any of my rooms with my own unread count,
ADDED and REMOVED as my memberships change (and nothing of a room after I am out of it), and
nothing about a room I am not in.

The feed has no resume (a client that reconnects reads `rooms` again), so a test knows its
subscription is live by a barrier: it creates rooms until its feed reports one ADDED; notes of
those barrier rooms are skipped after."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.support.graphql import (
    Account,
    GraphQLClient,
    add_member,
    create_room,
    join_room,
    post_message,
    sign_up,
)
from tests.support.httpstream import MultipartStream, SSEStream, open_multipart, open_sse
from tests.support.processes import Server
from tests.support.wsclient import MESSAGE_CREATED, PROTOCOLS, GraphQLWebSocket

MY_ROOMS = """
subscription {
  myRooms { change roomId room { id name topic myRole unreadCount lastMessage { body } } }
}"""
REMOVE = "mutation($r: ID!, $u: ID!, $ban: Boolean) { removeMember(room: $r, user: $u, ban: $ban) }"
LEAVE = "mutation($r: ID!) { leaveRoom(room: $r) }"
UPDATE = "mutation($r: ID!, $topic: String) { updateRoom(room: $r, topic: $topic) { id } }"
SET_ROLE = "mutation($r: ID!, $u: ID!, $role: Role!) { setRole(room: $r, user: $u, role: $role) { role } }"
CURSOR = "query($r: ID!) { room(id: $r) { latestEventCursor } }"
MARK_READ = "mutation($r: ID!, $c: String!) { markRead(room: $r, upTo: $c) { id } }"
EDIT = "mutation($m: ID!, $b: String!) { editMessage(id: $m, body: $b) { id } }"
BARRIER_ATTEMPTS = 20


@pytest.fixture
def api(server: Server) -> GraphQLClient:
    return GraphQLClient(server.url)


class Feed:
    """One `myRooms` subscription on some transport: its changes in order, the barrier's skipped."""

    def __init__(self, api: GraphQLClient, account: Account, take: Callable[[float], Awaitable[dict]]) -> None:
        self.api = api
        self.account = account
        self._take = take
        self.barrier_rooms: set[str] = set()

    async def next(self, timeout: float = 10.0) -> dict:
        while True:
            result = await self._take(timeout)
            assert "errors" not in result, result
            change = result["data"]["myRooms"]
            if change["roomId"] not in self.barrier_rooms:
                return change

    async def live(self) -> None:
        """Returns once the subscription is live: a room created now reaches it as ADDED."""
        for _ in range(BARRIER_ATTEMPTS):
            self.barrier_rooms.add(create_room(self.api, self.account, "barrier", kind="PRIVATE"))
            try:
                result = await self._take(1.0)
            except TimeoutError:
                continue
            change = result["data"]["myRooms"]
            assert change["change"] == "ADDED" and change["roomId"] in self.barrier_rooms, change
            return
        raise AssertionError("myRooms never went live")

    async def quiet(self, seconds: float = 0.8) -> None:
        """Nothing but barrier notes for `seconds`."""
        try:
            change = await self.next(seconds)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected change: {change}")


async def ws_feed(server: Server, api: GraphQLClient, account: Account, protocol: str) -> tuple[Feed, Any]:
    ws = await GraphQLWebSocket.open(server.ws_url, protocol, account.token)
    await ws.subscribe("r", MY_ROOMS)

    async def take(timeout: float) -> dict:
        return await ws.result("r", timeout)

    feed = Feed(api, account, take)
    await feed.live()
    return feed, ws


async def sse_feed(server: Server, api: GraphQLClient, account: Account) -> tuple[Feed, SSEStream]:
    stream = await open_sse(server.url, MY_ROOMS, {}, token=account.token)

    async def take(timeout: float) -> dict:
        try:
            [result] = await stream.results(1, timeout)
        except AssertionError as error:
            if str(error).startswith("waited"):
                raise TimeoutError from error
            raise
        return result

    feed = Feed(api, account, take)
    await feed.live()
    return feed, stream


async def multipart_feed(server: Server, api: GraphQLClient, account: Account) -> tuple[Feed, MultipartStream]:
    stream = await open_multipart(server.url, MY_ROOMS, {}, token=account.token)

    async def take(timeout: float) -> dict:
        try:
            [body] = await stream.payloads(1, timeout)
        except AssertionError as error:
            if str(error).startswith("waited"):
                raise TimeoutError from error
            raise
        return body["payload"]

    feed = Feed(api, account, take)
    await feed.live()
    return feed, stream


def two_rooms(api: GraphQLClient) -> tuple[Account, Account, str, str]:
    ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
    a = create_room(api, bob, "A", kind="PRIVATE")
    b = create_room(api, bob, "B", kind="PUBLIC")
    add_member(api, bob, a, ann.id)
    join_room(api, ann, b)
    return ann, bob, a, b


async def hears_both_rooms(api: GraphQLClient, feed: Feed, bob: Account, a: str, b: str) -> None:
    post_message(api, bob, a, "in A")
    post_message(api, bob, b, "in B")
    post_message(api, bob, a, "again in A")
    changes = [await feed.next() for _ in range(3)]
    # Each room's notes come in its own order; two rooms' travel apart (a topic each, ordered
    # within it), so B's may come after A's second.
    assert all(c["change"] == "UPDATED" for c in changes)
    by_room = {room: [c["room"]["lastMessage"]["body"] for c in changes if c["roomId"] == room] for room in (a, b)}
    assert by_room == {a: ["in A", "again in A"], b: ["in B"]}
    counts = {room: [c["room"]["unreadCount"] for c in changes if c["roomId"] == room] for room in (a, b)}
    assert counts == {a: [1, 2], b: [1]}
    assert {c["room"]["name"] for c in changes} == {"A", "B"}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_one_subscription_hears_every_room_of_mine_over_websocket(
    server: Server, api: GraphQLClient, protocol: str
) -> None:
    ann, bob, a, b = two_rooms(api)
    feed, ws = await ws_feed(server, api, ann, protocol)
    await hears_both_rooms(api, feed, bob, a, b)
    await ws.close()


async def test_one_subscription_hears_every_room_of_mine_over_sse_and_multipart(
    server: Server, api: GraphQLClient
) -> None:
    ann, bob, a, b = two_rooms(api)
    feed, stream = await sse_feed(server, api, ann)
    async with stream:
        await hears_both_rooms(api, feed, bob, a, b)
    parts_feed, parts = await multipart_feed(server, api, ann)
    async with parts:
        post_message(api, bob, b, "multipart")
        change = await parts_feed.next()
        assert (change["change"], change["roomId"], change["room"]["lastMessage"]["body"]) == (
            "UPDATED",
            b,
            "multipart",
        )


@pytest.mark.parametrize("ban", [False, True])
async def test_added_then_removed_and_nothing_of_the_room_after(server: Server, api: GraphQLClient, ban: bool) -> None:
    ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
    room = create_room(api, bob, "Secret", kind="PRIVATE")
    feed, ws = await ws_feed(server, api, ann, PROTOCOLS[0])
    add_member(api, bob, room, ann.id)
    added = await feed.next()
    assert added["change"] == "ADDED" and added["roomId"] == room, added
    assert added["room"]["name"] == "Secret" and added["room"]["myRole"] == "MEMBER"
    post_message(api, bob, room, "welcome")
    updated = await feed.next()
    assert updated["change"] == "UPDATED" and updated["room"]["lastMessage"]["body"] == "welcome"
    api.data(REMOVE, {"r": room, "u": ann.id, "ban": ban}, bob.token)
    assert await feed.next() == {"change": "REMOVED", "roomId": room, "room": None}
    post_message(api, bob, room, "after")
    api.data(UPDATE, {"r": room, "topic": "renamed"}, bob.token)
    await feed.quiet()
    await ws.close()


async def test_joining_and_leaving_and_what_only_i_changed(server: Server, api: GraphQLClient) -> None:
    """joinRoom is ADDED, leaveRoom REMOVED; my markRead and my new role are UPDATED for me, a
    rename and a changed last message for everyone."""
    ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
    room = create_room(api, bob, "Open", kind="PUBLIC")
    feed, stream = await sse_feed(server, api, ann)
    async with stream:
        join_room(api, ann, room)
        assert (await feed.next())["change"] == "ADDED"
        message = post_message(api, bob, room, "first")
        assert (await feed.next())["room"]["unreadCount"] == 1
        cursor = api.data(CURSOR, {"r": room}, ann.token)["room"]["latestEventCursor"]
        api.data(MARK_READ, {"r": room, "c": cursor}, ann.token)
        read = await feed.next()
        assert (read["change"], read["room"]["unreadCount"]) == ("UPDATED", 0)
        api.data(SET_ROLE, {"r": room, "u": ann.id, "role": "MODERATOR"}, bob.token)
        assert (await feed.next())["room"]["myRole"] == "MODERATOR"
        api.data(UPDATE, {"r": room, "topic": "news"}, bob.token)
        assert (await feed.next())["room"]["topic"] == "news"
        api.data(EDIT, {"m": message["id"], "b": "first, edited"}, bob.token)
        assert (await feed.next())["room"]["lastMessage"]["body"] == "first, edited"
        assert api.data(LEAVE, {"r": room}, ann.token)["leaveRoom"] is True
        assert await feed.next() == {"change": "REMOVED", "roomId": room, "room": None}
        post_message(api, bob, room, "gone")
        await feed.quiet()


async def test_each_member_gets_their_own_unread_count(server: Server, api: GraphQLClient) -> None:
    ann, carl, bob = sign_up(api, "Ann"), sign_up(api, "Carl"), sign_up(api, "Bob")
    room = create_room(api, bob, "Shared", kind="PRIVATE")
    add_member(api, bob, room, ann.id)
    add_member(api, bob, room, carl.id)
    post_message(api, bob, room, "one")
    post_message(api, bob, room, "two")
    cursor = api.data(CURSOR, {"r": room}, ann.token)["room"]["latestEventCursor"]
    api.data(MARK_READ, {"r": room, "c": cursor}, ann.token)
    anns, ann_ws = await ws_feed(server, api, ann, PROTOCOLS[0])
    carls, carl_stream = await sse_feed(server, api, carl)
    async with carl_stream:
        post_message(api, bob, room, "three")
        for_ann, for_carl = await anns.next(), await carls.next()
        assert for_ann["room"]["unreadCount"] == 1
        assert for_carl["room"]["unreadCount"] == 3
        assert for_ann["room"]["lastMessage"] == for_carl["room"]["lastMessage"] == {"body": "three"}
    await ann_ws.close()


async def test_an_outsider_hears_nothing_of_a_private_room(server: Server, api: GraphQLClient) -> None:
    """Not its messages, not its renames, not a ban ahead of joining, and the subscription takes
    no argument to point it at a room."""
    eve, bob = sign_up(api, "Eve"), sign_up(api, "Bob")
    room = create_room(api, bob, "Private", kind="PRIVATE")
    feed, ws = await ws_feed(server, api, eve, PROTOCOLS[1])
    post_message(api, bob, room, "secret")
    api.data(UPDATE, {"r": room, "topic": "secret topic"}, bob.token)
    api.data(REMOVE, {"r": room, "u": eve.id, "ban": True}, bob.token)
    await feed.quiet()
    await ws.subscribe("x", 'subscription { myRooms(room: "1") { change } }')
    errors = await ws.error("x")
    assert errors[0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED", errors
    await ws.close()


async def test_signed_out_is_refused_and_logging_out_ends_it(server: Server, api: GraphQLClient) -> None:
    async with await open_sse(server.url, MY_ROOMS, {}) as stream:
        errors = await stream.refused()
    assert [error["extensions"]["code"] for error in errors] == ["UNAUTHENTICATED"], errors
    ann = sign_up(api, "Ann")
    _feed, stream = await sse_feed(server, api, ann)
    async with stream:
        api.data("mutation { logOut }", {}, ann.token)
        errors = await stream.refused()
        assert [error["extensions"]["code"] for error in errors] == ["UNAUTHENTICATED"], errors


async def test_it_is_one_subscription_against_the_users_limit_however_many_rooms(
    server: Server, api: GraphQLClient
) -> None:
    """MAX_SUBSCRIPTIONS_PER_USER (100 for the `server` fixture): 99 others, then `myRooms` for
    three rooms is the 100th and is served; a second `myRooms` is refused."""
    ann, bob, a, _b = two_rooms(api)
    c = create_room(api, bob, "C", kind="PRIVATE")
    add_member(api, bob, c, ann.id)
    anchor = post_message(api, bob, a, "anchor")["id"]
    # 99 others (20 a connection at most), resumed after the anchor: "to the 99" reaches each
    # however late it starts.
    sockets = [await GraphQLWebSocket.open(server.ws_url, PROTOCOLS[0], ann.token) for _ in range(5)]
    for i in range(99):
        await sockets[i // 20].subscribe(f"m{i}", MESSAGE_CREATED, {"room": a, "after": anchor})
    post_message(api, bob, a, "to the 99")
    for index, socket in enumerate(sockets):
        received = [await socket.receive(timeout=10) for _ in range(20 if index < 4 else 19)]
        assert {message["payload"]["data"]["messageCreated"]["body"] for message in received} == {"to the 99"}
    ws = sockets[4]
    await ws.subscribe("r", MY_ROOMS)

    async def take(timeout: float) -> dict:
        return await ws.result("r", timeout)

    feed = Feed(api, ann, take)
    await feed.live()
    other = await GraphQLWebSocket.open(server.ws_url, PROTOCOLS[0], ann.token)
    await other.subscribe("over", MY_ROOMS)
    errors = await other.error("over")
    assert [error["extensions"]["code"] for error in errors] == ["TOO_MANY_SUBSCRIPTIONS"], errors
    post_message(api, bob, c, "in C")
    change = await feed.next()
    assert (change["change"], change["roomId"]) == ("UPDATED", c)
    for socket in [*sockets, other]:
        await socket.close()


async def test_the_embedded_default_serves_my_rooms(sqlite_server: Server) -> None:
    api = GraphQLClient(sqlite_server.url)
    ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
    room = create_room(api, bob, "Open", kind="PUBLIC")
    feed, stream = await sse_feed(sqlite_server, api, ann)
    async with stream:
        join_room(api, ann, room)
        assert (await feed.next())["change"] == "ADDED"
        post_message(api, bob, room, "hello")
        change = await feed.next()
        assert (change["change"], change["room"]["unreadCount"], change["room"]["lastMessage"]) == (
            "UPDATED",
            1,
            {"body": "hello"},
        )
        api.data(LEAVE, {"r": room}, ann.token)
        assert await feed.next() == {"change": "REMOVED", "roomId": room, "room": None}
    api.close()
