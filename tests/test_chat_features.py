"""Chat as people expect it: edits, deletes, reactions and read positions, each an event on the
room's log, live and resumable; unread counts kept as counters. On Postgres + Redis with two
workers, and on the embedded default where it matters."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from db import messages, rooms, users
from db.pool import ChatDatabase
from db.room_events import MESSAGE_EDITED
from tests.support.graphql import Account, GraphQLClient, create_room, join_room, post_message, sign_up
from tests.support.processes import Server
from tests.support.wsclient import MESSAGE_CREATED, PROTOCOLS, GraphQLWebSocket

EDIT = "mutation($id: ID!, $b: String!) { editMessage(id: $id, body: $b) { id seq body editedAt deleted } }"
DELETE = "mutation($id: ID!) { deleteMessage(id: $id) }"
REACT = "mutation($m: ID!, $e: String!) { react(message: $m, emoji: $e) { id reactions { emoji count mine } } }"
UNREACT = "mutation($m: ID!, $e: String!) { unreact(message: $m, emoji: $e) { id reactions { emoji count mine } } }"
MARK_READ = "mutation($r: ID!, $u: String!) { markRead(room: $r, upTo: $u) { id unreadCount lastReadCursor } }"
HISTORY = """query($r: ID!) { room(id: $r) { messages(first: 50) { edges { node {
  id seq body deleted editedAt reactions { emoji count mine } } } } } }"""
EVENTS = """query($r: ID!) { room(id: $r) { latestEventCursor events(first: 100) { edges { node {
  __typename cursor ... on MessageCreated { message { id body deleted } } ... on MessageDeleted { messageId }
  ... on MessageEdited { message { id body editedAt } } } } } } }"""
UNREAD = "{ unreadCounts { id unreadCount lastReadCursor } }"
ROOMS_UNREAD = "{ rooms { id unreadCount } }"
LIVE_EVENTS = """subscription($room: ID!, $after: String) { roomEvents(room: $room, after: $after) {
  __typename cursor
  ... on MessageCreated { message { id body } }
  ... on MessageEdited { message { id body editedAt } }
  ... on MessageDeleted { messageId }
  ... on ReactionChanged { emoji added user { name } message { id reactions { emoji count mine } } }
  ... on ReadUpTo { user { name } upTo }
} }"""


@pytest.fixture(params=["postgres", "sqlite"])
def api(request: pytest.FixtureRequest, server: Server, sqlite_server: Server) -> GraphQLClient:
    return GraphQLClient((server if request.param == "postgres" else sqlite_server).url)


def pair(api: GraphQLClient) -> tuple[Account, Account, str]:
    ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
    room = create_room(api, ann)
    join_room(api, bob, room)
    return ann, bob, room


def history(api: GraphQLClient, account: Account, room: str) -> list[dict]:
    return [edge["node"] for edge in api.data(HISTORY, {"r": room}, account.token)["room"]["messages"]["edges"]]


def events(api: GraphQLClient, account: Account, room: str) -> list[dict]:
    return [edge["node"] for edge in api.data(EVENTS, {"r": room}, account.token)["room"]["events"]["edges"]]


def test_only_the_sender_edits_and_an_edit_keeps_its_place(api: GraphQLClient) -> None:
    ann, bob, room = pair(api)
    first = post_message(api, ann, room, "first")
    post_message(api, bob, room, "second")
    edited = api.data(EDIT, {"id": first["id"], "b": "  first, edited  "}, ann.token)["editMessage"]
    assert edited["body"] == "first, edited" and edited["seq"] == 1 and edited["editedAt"] and not edited["deleted"]
    assert [(m["seq"], m["body"], bool(m["editedAt"])) for m in history(api, bob, room)] == [
        (2, "second", False),
        (1, "first, edited", True),
    ]
    assert api.error_codes(EDIT, {"id": first["id"], "b": "mine now"}, bob.token) == ["FORBIDDEN"]
    eve = sign_up(api, "Eve")
    assert api.error_codes(EDIT, {"id": first["id"], "b": "x"}, eve.token) == ["FORBIDDEN"]
    assert api.error_codes(EDIT, {"id": "987654321", "b": "x"}, ann.token) == ["NOT_FOUND"]
    assert api.error_codes(EDIT, {"id": first["id"], "b": "   "}, ann.token) == ["BAD_USER_INPUT"]
    assert events(api, ann, room)[-1]["__typename"] == "MessageEdited"


def test_a_delete_is_a_tombstone_everywhere(api: GraphQLClient) -> None:
    ann, bob, room = pair(api)
    message = post_message(api, ann, room, "regrettable")
    assert api.error_codes(DELETE, {"id": message["id"]}, bob.token) == ["FORBIDDEN"]
    assert api.data(DELETE, {"id": message["id"]}, ann.token) == {"deleteMessage": True}
    assert api.data(DELETE, {"id": message["id"]}, ann.token) == {"deleteMessage": False}  # already
    [gone] = history(api, bob, room)
    assert (gone["seq"], gone["body"], gone["deleted"]) == (1, "", True)
    log = events(api, bob, room)
    assert log[-2]["message"] == {"id": message["id"], "body": "", "deleted": True}  # its creation, as it is now
    assert log[-1] == {"__typename": "MessageDeleted", "cursor": log[-1]["cursor"], "messageId": message["id"]}
    assert api.error_codes(EDIT, {"id": message["id"], "b": "undo"}, ann.token) == ["BAD_USER_INPUT"]
    assert api.error_codes(REACT, {"m": message["id"], "e": "👍"}, bob.token) == ["BAD_USER_INPUT"]


def test_reactions_are_idempotent_per_member_and_mine_is_per_viewer(api: GraphQLClient) -> None:
    ann, bob, room = pair(api)
    message = post_message(api, ann, room, "react to me")
    for _ in range(2):  # twice is once
        reacted = api.data(REACT, {"m": message["id"], "e": "👍"}, bob.token)["react"]
    assert reacted["reactions"] == [{"emoji": "👍", "count": 1, "mine": True}]
    api.data(REACT, {"m": message["id"], "e": ":tada:"}, ann.token)
    api.data(REACT, {"m": message["id"], "e": "👍"}, ann.token)
    assert history(api, bob, room)[0]["reactions"] == [
        {"emoji": "👍", "count": 2, "mine": True},
        {"emoji": ":tada:", "count": 1, "mine": False},
    ]
    assert history(api, ann, room)[0]["reactions"][1] == {"emoji": ":tada:", "count": 1, "mine": True}
    for _ in range(2):
        unreacted = api.data(UNREACT, {"m": message["id"], "e": "👍"}, bob.token)["unreact"]
    assert unreacted["reactions"] == [  # ordered by each emoji's earliest standing reaction
        {"emoji": ":tada:", "count": 1, "mine": False},
        {"emoji": "👍", "count": 1, "mine": False},
    ]
    for bad in ("ab", "👍👍", "", ":no spaces:", "👍 "[:1] + "x"):
        assert api.error_codes(REACT, {"m": message["id"], "e": bad}, bob.token) == ["BAD_USER_INPUT"], bad
    eve = sign_up(api, "Eve")
    assert api.error_codes(REACT, {"m": message["id"], "e": "👍"}, eve.token) == ["FORBIDDEN"]
    for emoji in ("👍🏽", "🇫🇷", "👨‍👩‍👧", "❤️"):  # one grapheme each
        api.data(REACT, {"m": message["id"], "e": emoji}, bob.token)


def test_a_message_takes_at_most_twenty_different_reactions(api: GraphQLClient) -> None:
    ann, bob, room = pair(api)
    message = post_message(api, ann, room, "popular")
    for i in range(20):
        api.data(REACT, {"m": message["id"], "e": f":emoji_{i}:"}, bob.token)
    assert api.error_codes(REACT, {"m": message["id"], "e": ":one_too_many:"}, ann.token) == ["BAD_USER_INPUT"]
    api.data(REACT, {"m": message["id"], "e": ":emoji_3:"}, ann.token)  # an emoji already there is fine


def test_a_member_who_left_no_longer_edits_deletes_or_reacts(api: GraphQLClient) -> None:
    ann, bob, room = pair(api)
    mine = post_message(api, bob, room, "before leaving")
    theirs = post_message(api, ann, room, "still here")
    api.data("mutation($r: ID!) { leaveRoom(room: $r) }", {"r": room}, bob.token)
    assert api.error_codes(EDIT, {"id": mine["id"], "b": "after leaving"}, bob.token) == ["FORBIDDEN"]
    assert api.error_codes(DELETE, {"id": mine["id"]}, bob.token) == ["FORBIDDEN"]
    assert api.error_codes(REACT, {"m": theirs["id"], "e": "👍"}, bob.token) == ["FORBIDDEN"]
    assert [(m["body"], m["deleted"], m["reactions"]) for m in history(api, ann, room)] == [
        ("still here", False, []),
        ("before leaving", False, []),
    ]  # nothing refused was kept


async def test_reactions_at_once_all_come_live_in_order_and_never_behind(server: Server) -> None:
    """Reactions at once from many members, through both workers: every one comes live, in the
    log's order, and no event shows fewer reactions than the events before it made. (An event
    a feed fills from the log shows the message as it is by then, so a count may run ahead.)"""
    api = GraphQLClient(server.url)
    ann, bob, room = pair(api)
    others = [sign_up(api, f"Fan{i}") for i in range(12)]
    for account in others:
        join_room(api, account, room)
    message = post_message(api, ann, room, "react at once")
    watcher = await GraphQLWebSocket.open(server.ws_url, PROTOCOLS[0], bob.token)
    await watcher.subscribe("e", LIVE_EVENTS, {"room": room})
    await watcher.barrier()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        answers = await asyncio.gather(
            *(
                http.post(
                    "/graphql",
                    json={"query": REACT, "variables": {"m": message["id"], "e": "👍"}},
                    headers={"Authorization": f"Bearer {account.token}"},
                )
                for account in others
            )
        )
    assert all("errors" not in answer.json() for answer in answers)
    seen = await watcher.events("e", len(others))
    await watcher.close()
    assert [event["__typename"] for event in seen] == ["ReactionChanged"] * len(others)
    assert len({event["cursor"] for event in seen}) == len(others)
    counts = [event["message"]["reactions"][0]["count"] for event in seen]
    assert all(count >= place for place, count in enumerate(counts, start=1)), counts
    assert counts[-1] == len(others)


async def test_each_event_carries_the_message_as_of_its_place_in_the_log(database_url: str) -> None:
    """Edits and reactions on one message at once, on the database layer (what each mutation
    publishes): in the log's order, each event's message has the body of the last edit before
    it and the reactions made before it. A body an earlier edit replaced would undo that edit
    in Apollo's cache, which takes the message from every event."""
    database = ChatDatabase(database_url, min_size=1, max_size=10)
    await database.connect()
    try:
        tag = uuid.uuid4().hex[:8]
        people = [
            await users.create_user(database, f"P{i}", f"p{i}-{tag}@example.com", f"{tag}{i}", "x") for i in range(9)
        ]
        ann, fans = people[0], people[1:]
        room, _ = await rooms.create_room(database, "at once", ann)
        for fan in fans:
            await rooms.add_member(database, room, fan)
        created = await messages.create_message(database, room["id"], ann, "v0")
        assert created is not None
        message_id = created["message"]["id"]
        body = "v0"
        for attempt in range(3):
            changes = await asyncio.gather(
                *(messages.edit_message(database, message_id, ann, f"v{attempt}.{i}") for i in range(len(fans))),
                *(
                    messages.react(database, message_id, fan, f":r{attempt}:", added=True, max_distinct=20)
                    for fan in fans
                ),
            )
            reactions = 0
            for event in sorted(changes, key=lambda event: event["seq"]):
                if event["kind"] == MESSAGE_EDITED:
                    body = event["message"]["body"]
                else:
                    reactions += 1
                assert event["message"]["body"] == body, (event["seq"], event["message"]["body"], body)
                standing = {r["emoji"]: r["count"] for r in event["message"]["reactions"]}
                assert standing.get(f":r{attempt}:", 0) == reactions, (event["seq"], standing)
    finally:
        await database.disconnect()


def test_unread_counts_come_from_the_read_position_and_never_go_back(api: GraphQLClient) -> None:
    ann, bob, room = pair(api)
    for i in range(3):
        post_message(api, ann, room, f"from ann {i}")
    post_message(api, bob, room, "bob's own")
    unread = {r["id"]: r for r in api.data(UNREAD, token=bob.token)["unreadCounts"]}
    assert unread[room]["unreadCount"] == 3 and unread[room]["lastReadCursor"] is None
    assert api.data(ROOMS_UNREAD, token=bob.token)["rooms"] == [{"id": room, "unreadCount": 3}]
    assert api.data(ROOMS_UNREAD, token=ann.token)["rooms"] == [{"id": room, "unreadCount": 1}]

    log = events(api, bob, room)
    second = next(
        e["cursor"] for e in log if e["__typename"] == "MessageCreated" and e["message"]["body"] == "from ann 1"
    )
    marked = api.data(MARK_READ, {"r": room, "u": second}, bob.token)["markRead"]
    assert marked == {"id": room, "unreadCount": 1, "lastReadCursor": second}
    latest = api.data(EVENTS, {"r": room}, bob.token)["room"]["latestEventCursor"]
    api.data(MARK_READ, {"r": room, "u": latest}, bob.token)
    post_message(api, bob, room, "bob again")  # my own messages never count
    assert api.data(ROOMS_UNREAD, token=bob.token)["rooms"] == [{"id": room, "unreadCount": 0}]
    back = api.data(MARK_READ, {"r": room, "u": second}, bob.token)["markRead"]  # never backwards
    assert back["lastReadCursor"] == latest and back["unreadCount"] == 0
    post_message(api, ann, room, "new for bob")
    assert api.data(ROOMS_UNREAD, token=bob.token)["rooms"] == [{"id": room, "unreadCount": 1}]

    other = create_room(api, ann, "other")
    foreign = api.data(EVENTS, {"r": other}, ann.token)["room"]["latestEventCursor"]
    body = api.post(MARK_READ, {"r": room, "u": foreign}, bob.token)
    assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "argument": "upTo"}
    assert api.error_codes(MARK_READ, {"r": other, "u": foreign}, bob.token) == ["FORBIDDEN"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_edits_deletes_reactions_and_reads_are_live_and_resumable(server: Server, protocol: str) -> None:
    api = GraphQLClient(server.url)
    ann, bob, room = pair(api)
    start = api.data(EVENTS, {"r": room}, ann.token)["room"]["latestEventCursor"]
    ann_ws = await GraphQLWebSocket.open(server.ws_url, protocol, ann.token)
    bob_ws = await GraphQLWebSocket.open(server.ws_url, protocol, bob.token)
    bob_phone = await GraphQLWebSocket.open(server.ws_url, protocol, bob.token)  # another device
    for ws in (ann_ws, bob_ws, bob_phone):
        await ws.subscribe("e", LIVE_EVENTS, {"room": room, "after": start})
    messages_only = await GraphQLWebSocket.open(server.ws_url, protocol, bob.token)
    await messages_only.subscribe("m", MESSAGE_CREATED, {"room": room})
    for ws in (ann_ws, bob_ws, bob_phone, messages_only):
        await ws.barrier()

    message = post_message(api, ann, room, "hello")
    api.data(EDIT, {"id": message["id"], "b": "hello, edited"}, ann.token)
    api.data(REACT, {"m": message["id"], "e": "👍"}, bob.token)
    cursor = api.data(EVENTS, {"r": room}, bob.token)["room"]["latestEventCursor"]
    api.data(MARK_READ, {"r": room, "u": cursor}, bob.token)
    api.data(DELETE, {"id": message["id"]}, ann.token)

    seen = {}
    for name, ws in (("ann", ann_ws), ("bob", bob_ws), ("phone", bob_phone)):
        seen[name] = await ws.events("e", 5)
        assert [e["__typename"] for e in seen[name]] == [
            "MessageCreated", "MessageEdited", "ReactionChanged", "ReadUpTo", "MessageDeleted",
        ]  # fmt: skip
    reaction = {name: events[2] for name, events in seen.items()}
    assert reaction["bob"]["message"]["reactions"] == [{"emoji": "👍", "count": 1, "mine": True}]
    assert reaction["phone"]["message"]["reactions"] == [{"emoji": "👍", "count": 1, "mine": True}]
    assert reaction["ann"]["message"]["reactions"] == [{"emoji": "👍", "count": 1, "mine": False}]
    assert reaction["ann"]["emoji"] == "👍" and reaction["ann"]["added"] and reaction["ann"]["user"]["name"] == "Bob"
    assert seen["phone"][3]["user"]["name"] == "Bob" and seen["phone"][3]["upTo"] == cursor  # the other device
    assert seen["ann"][4]["messageId"] == message["id"]
    assert [m["body"] for m in await messages_only.messages("m", 1)] == ["hello"]
    assert await messages_only.silent(0.5)  # edits, reactions, reads and deletes are not new messages

    # A client that was away replays all of it, in the same order and the same shapes.
    late = await GraphQLWebSocket.open(server.ws_url, protocol, bob.token)
    await late.subscribe("e", LIVE_EVENTS, {"room": room, "after": start})
    replayed = await late.events("e", 5)
    assert [e["cursor"] for e in replayed] == [e["cursor"] for e in seen["bob"]]
    assert replayed[1]["message"]["body"] == "" and replayed[2]["message"]["reactions"] == [
        {"emoji": "👍", "count": 1, "mine": True}
    ]  # the message as it is now: deleted, its reaction kept
    for ws in (ann_ws, bob_ws, bob_phone, messages_only, late):
        await ws.close()
