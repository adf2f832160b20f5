"""Rooms people control (issue 26's foundation), sent as clients and attackers send them against
gunicorn on Postgres and Redis: room kinds and who can see them, roles, bans, mutes, moderation,
the log's new events, and live subscriptions a removal ends on every transport."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from tests.support.graphql import (
    CREATE_MESSAGE,
    Account,
    GraphQLClient,
    add_member,
    create_room,
    join_room,
    post_message,
    sign_up,
)
from tests.support.httpstream import MultipartStream, open_multipart, open_sse, part_errors
from tests.support.processes import Server
from tests.support.wsclient import MESSAGE_CREATED, PROTOCOLS, ROOM_EVENTS, GraphQLWebSocket

CREATE = """
mutation($name: String!, $kind: RoomKind, $topic: String) {
  createRoom(name: $name, kind: $kind, topic: $topic) { id name kind topic myRole memberCount }
}"""
JOIN = "mutation($r: ID!) { joinRoom(room: $r) { id myRole memberCount } }"
LEAVE = "mutation($r: ID!) { leaveRoom(room: $r) }"
REMOVE = "mutation($r: ID!, $u: ID!, $ban: Boolean) { removeMember(room: $r, user: $u, ban: $ban) }"
UNBAN = "mutation($r: ID!, $u: ID!) { unbanMember(room: $r, user: $u) }"
SET_ROLE = "mutation($r: ID!, $u: ID!, $role: Role!) { setRole(room: $r, user: $u, role: $role) { user { id } role } }"
MUTE = "mutation($r: ID!, $u: ID!, $m: Int!) { muteMember(room: $r, user: $u, minutes: $m) { user { id } role } }"
ADD = "mutation($r: ID!, $u: ID!) { addMember(room: $r, user: $u) { id memberCount } }"
UPDATE = """
mutation($r: ID!, $name: String, $topic: String, $kind: RoomKind) {
  updateRoom(room: $r, name: $name, topic: $topic, kind: $kind) { id name topic kind myRole }
}"""
EDIT = "mutation($m: ID!, $b: String!) { editMessage(id: $m, body: $b) { id } }"
DELETE = "mutation($m: ID!) { deleteMessage(id: $m) }"
REACT = 'mutation($m: ID!) { react(message: $m, emoji: "👍") { id } }'
UNREACT = 'mutation($m: ID!) { unreact(message: $m, emoji: "👍") { id } }'
MARK_READ = "mutation($r: ID!, $c: String!) { markRead(room: $r, upTo: $c) { id } }"
TYPING = "mutation($r: ID!) { typing(room: $r) }"
MEMBERSHIPS = "query($r: ID!, $after: String) { room(id: $r) { memberships(after: $after) { user { id } role } } }"
JOINED_AT = "query($r: ID!) { room(id: $r) { memberships { joinedAt } } }"
EVENTS = """
query($r: ID!, $after: String) {
  room(id: $r) {
    events(after: $after) {
      edges {
        cursor
        node {
          __typename
          ... on MemberJoined { user { id } by { id } }
          ... on MemberRemoved { user { id } who: by { id } banned }
          ... on RoleChanged { user { id } role by { id } }
          ... on RoomUpdated { who: by { id } name topic kind }
          ... on MessageDeleted { messageId who: by { id } }
          ... on MemberLeft { user { id } }
        }
      }
    }
  }
}"""
LIVE_EVENTS = """
subscription($room: ID!, $after: String) {
  roomEvents(room: $room, after: $after) {
    __typename cursor
    ... on MemberJoined { user { id } by { id } }
    ... on MemberRemoved { user { id } who: by { id } banned }
    ... on RoleChanged { user { id } role by { id } }
    ... on RoomUpdated { who: by { id } name topic kind }
    ... on MessageDeleted { messageId who: by { id } }
  }
}"""
TYPING_SUB = "subscription($room: ID!) { typing(room: $room) { users { id } } }"
PRESENCE_SUB = "subscription($room: ID!) { presence(room: $room) { online { id } } }"
SUBSCRIPTIONS = [MESSAGE_CREATED, ROOM_EVENTS, TYPING_SUB, PRESENCE_SUB]
MISSING_ROOM = "987654"
MISSING_MESSAGE = "987654321"


@pytest.fixture
def api(server: Server) -> GraphQLClient:
    return GraphQLClient(server.url)


def codes(errors: list[dict]) -> list[str]:
    return [error["extensions"]["code"] for error in errors]


def refusal(api: GraphQLClient, query: str, variables: dict, account: Account) -> tuple[str, str]:
    """The code and message of the one error a request got (nothing else in the answer)."""
    body = api.post(query, variables, account.token)
    assert body.get("errors") and len(body["errors"]) == 1, body
    error = body["errors"][0]
    return error["extensions"]["code"], error["message"]


def events_of(api: GraphQLClient, account: Account, room: str, after: str | None = None) -> list[dict]:
    edges = api.data(EVENTS, {"r": room, "after": after}, account.token)["room"]["events"]["edges"]
    return [as_by(edge["node"]) for edge in edges]


def as_by(event: dict) -> dict:
    """`by` is `User!` on some events and `User` on others: a document asking for both aliases
    one of them (`who`); read back as `by`."""
    return {("by" if key == "who" else key): value for key, value in event.items()}


def forged_cursor(room: str) -> str:
    return base64.urlsafe_b64encode(f"event:{room}:1".encode()).decode()


def test_create_room_is_private_by_default_its_creator_owner_and_direct_is_refused(api: GraphQLClient) -> None:
    ann = sign_up(api, "Ann")
    created = api.data(CREATE, {"name": "  plans ", "topic": " next week "}, ann.token)["createRoom"]
    assert {k: created[k] for k in ("name", "kind", "topic", "myRole", "memberCount")} == {
        "name": "plans",
        "kind": "PRIVATE",
        "topic": "next week",
        "myRole": "OWNER",
        "memberCount": 1,
    }
    direct = api.post(CREATE, {"name": "dm", "kind": "DIRECT"}, ann.token)
    assert direct["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "argument": "kind"}
    hidden = api.post(CREATE, {"name": "x", "topic": "a\u200bb"}, ann.token)  # a zero-width space
    assert hidden["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert hidden["errors"][0]["extensions"]["argument"] == "topic"
    assert api.data(MEMBERSHIPS, {"r": created["id"]}, ann.token)["room"]["memberships"] == [
        {"user": {"id": ann.id}, "role": "OWNER"}
    ]
    [joined] = api.data(JOINED_AT, {"r": created["id"]}, ann.token)["room"]["memberships"]
    assert abs((datetime.fromisoformat(joined["joinedAt"]) - datetime.now(UTC)).total_seconds()) < 60


def test_a_private_room_is_not_found_to_an_outsider_exactly_as_a_missing_one(api: GraphQLClient) -> None:
    """Every query and mutation an attacker can aim at a room's id, or a message's of it: the
    same code and message as for what does not exist."""
    ann, eve = sign_up(api, "Ann"), sign_up(api, "Eve")
    room = create_room(api, ann, "secret", kind="PRIVATE")
    message = post_message(api, ann, room, "secret body")["id"]
    probes = [
        ("query($r: ID!) { room(id: $r) { id } }", {}),
        ("query($r: ID!) { room(id: $r) { name kind memberCount } }", {}),
        (JOIN, {}),
        (LEAVE, {}),
        (CREATE_MESSAGE.replace("$room", "$r").replace("room: $r", "room: $r"), {"body": "hi"}),
        (TYPING, {}),
        (UPDATE, {"name": "mine now"}),
        (ADD, {"u": eve.id}),
        (REMOVE, {"u": ann.id}),
        (UNBAN, {"u": eve.id}),
        (SET_ROLE, {"u": eve.id, "role": "OWNER"}),
        (MUTE, {"u": ann.id, "m": 5}),
    ]
    for query, extra in probes:
        seen = refusal(api, query, {"r": room, **extra}, eve)
        missing = refusal(api, query, {"r": MISSING_ROOM, **extra}, eve)
        assert seen == missing and seen[0] == "NOT_FOUND", (query, seen, missing)
    assert refusal(api, MARK_READ, {"r": room, "c": forged_cursor(room)}, eve) == refusal(
        api, MARK_READ, {"r": MISSING_ROOM, "c": forged_cursor(MISSING_ROOM)}, eve
    )
    for query, extra in ((EDIT, {"b": "mine"}), (DELETE, {}), (REACT, {}), (UNREACT, {})):
        seen = refusal(api, query, {"m": message, **extra}, eve)
        missing = refusal(api, query, {"m": MISSING_MESSAGE, **extra}, eve)
        assert seen == missing and seen[0] == "NOT_FOUND", (query, seen, missing)
    assert api.data('{ publicRooms(search: "secret") { id } }', token=eve.token)["publicRooms"] == []
    assert "secret body" not in str(api.post("query($r: ID!) { room(id: $r) { id } }", {"r": room}, eve.token))


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_private_room_is_not_found_to_an_outsiders_subscriptions_over_websocket(
    server: Server, api: GraphQLClient, protocol: str
) -> None:
    ann, eve = sign_up(api, "Ann"), sign_up(api, "Eve")
    room = create_room(api, ann, kind="PRIVATE")
    ws = await GraphQLWebSocket.open(server.ws_url, protocol, eve.token)
    for i, query in enumerate(SUBSCRIPTIONS):
        await ws.subscribe(f"s{i}", query, {"room": room})
        seen = await ws.error(f"s{i}")
        await ws.subscribe(f"m{i}", query, {"room": MISSING_ROOM})
        missing = await ws.error(f"m{i}")
        assert codes(seen) == ["NOT_FOUND"] and [e["message"] for e in seen] == [e["message"] for e in missing]
    post_message(api, ann, room, "not for eve")
    assert await ws.silent()
    await ws.close()


async def test_a_private_room_is_not_found_to_an_outsiders_subscriptions_over_sse_and_multipart(
    server: Server, api: GraphQLClient
) -> None:
    ann, eve = sign_up(api, "Ann"), sign_up(api, "Eve")
    room = create_room(api, ann, kind="PRIVATE")
    for query in SUBSCRIPTIONS:
        answers = []
        for target in (room, MISSING_ROOM):
            async with await open_sse(server.url, query, {"room": target}, token=eve.token) as stream:
                answers.append(await stream.refused())
        assert codes(answers[0]) == ["NOT_FOUND"] and answers[0][0]["message"] == answers[1][0]["message"]
        answers = []
        for target in (room, MISSING_ROOM):
            async with await open_multipart(server.url, query, {"room": target}, token=eve.token) as parts:
                answers.append(await multipart_refused(parts))
        assert codes(answers[0]) == ["NOT_FOUND"] and answers[0][0]["message"] == answers[1][0]["message"]


async def multipart_refused(stream: MultipartStream) -> list[dict]:
    [body] = await stream.payloads(1)
    errors = part_errors(body)
    await stream.finishes()
    return errors


def test_outside_a_public_room_one_sees_its_card_and_nothing_else(api: GraphQLClient) -> None:
    ann, eve = sign_up(api, "Ann"), sign_up(api, "Eve")
    room = api.data(CREATE, {"name": "lobby", "kind": "PUBLIC", "topic": "say hi"}, ann.token)["createRoom"]["id"]
    post_message(api, ann, room, "welcome")
    card = api.data(
        "query($r: ID!) { room(id: $r) { id name topic kind memberCount myRole lastMessage { body } } }",
        {"r": room},
        eve.token,
    )["room"]
    assert card == {
        "id": room,
        "name": "lobby",
        "topic": "say hi",
        "kind": "PUBLIC",
        "memberCount": 1,
        "myRole": None,
        "lastMessage": {"body": "welcome"},
    }
    for field in (
        "members { id }",
        "memberships { role }",
        "messages { edges { cursor } }",
        "events { edges { cursor } }",
        "latestEventCursor",
        "unreadCount",
        "lastReadCursor",
        "lastMessage { room { members { id } } }",  # round the back, through the message's room
    ):
        body = api.post(f"query($r: ID!) {{ room(id: $r) {{ id {field} }} }}", {"r": room}, eve.token)
        assert codes(body["errors"]) == ["FORBIDDEN"], (field, body)
        assert "welcome" not in str(body["errors"]) and ann.id not in str(body.get("data")), field
    assert refusal(api, CREATE_MESSAGE, {"room": room, "body": "hi"}, eve)[0] == "FORBIDDEN"
    joined = api.data(JOIN, {"r": room}, eve.token)["joinRoom"]
    assert joined == {"id": room, "myRole": "MEMBER", "memberCount": 2}
    assert api.data("query($r: ID!) { room(id: $r) { members { id } } }", {"r": room}, eve.token)["room"][
        "members"
    ] == [{"id": ann.id}, {"id": eve.id}]


def test_public_rooms_most_members_first_searched_paged_bounded_and_costed(api: GraphQLClient) -> None:
    ann, bob, cy = sign_up(api, "Ann"), sign_up(api, "Bob"), sign_up(api, "Cy")
    tag = f"dir{ann.id}x"
    small = create_room(api, ann, f"{tag} small")
    big = create_room(api, ann, f"{tag} big")
    middle = create_room(api, ann, f"{tag} middle")
    create_room(api, ann, f"{tag} hidden", kind="PRIVATE")
    for member in (bob, cy):
        join_room(api, member, big)
    join_room(api, bob, middle)
    listed = """
    query($s: String, $f: Int, $a: String) {
      publicRooms(search: $s, first: $f, after: $a) { id memberCount myRole }
    }"""
    found = api.data(listed, {"s": tag.upper()}, cy.token)["publicRooms"]
    assert [room["id"] for room in found] == [big, middle, small]
    assert [room["myRole"] for room in found] == ["MEMBER", None, None]
    page = api.data(listed, {"s": tag, "f": 1, "a": big}, cy.token)["publicRooms"]
    assert [room["id"] for room in page] == [middle]
    assert api.data(listed, {"s": "%"}, cy.token)["publicRooms"] == []  # no wildcard: nothing is named "%"
    for first in (-1, 501):
        body = api.post(listed, {"f": first}, cy.token)
        assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "argument": "first"}
    assert api.error_codes(listed, {"s": "x\u202e"}, cy.token) == ["BAD_USER_INPUT"]
    # Counted as every list is: its absent `first` as its maximum, nested lists multiplied.
    heavy = "{ publicRooms { memberships { user { id } } } }"
    assert api.error_codes(heavy, token=cy.token) == ["QUERY_TOO_COMPLEX"]


def test_roles_owners_and_moderators_and_what_each_may_do(api: GraphQLClient) -> None:
    ann, mod, mod2, bob, cy = (sign_up(api, name) for name in ("Ann", "Mod", "Mod2", "Bob", "Cy"))
    room = create_room(api, ann, kind="PRIVATE")
    for member in (mod, mod2, bob):
        add_member(api, ann, room, member.id)
    for moderator in (mod, mod2):
        assert api.data(SET_ROLE, {"r": room, "u": moderator.id, "role": "MODERATOR"}, ann.token)["setRole"] == {
            "user": {"id": moderator.id},
            "role": "MODERATOR",
        }
    # A MEMBER moderates nothing.
    assert refusal(api, ADD, {"r": room, "u": cy.id}, bob)[0] == "FORBIDDEN"
    assert refusal(api, REMOVE, {"r": room, "u": mod.id}, bob)[0] == "FORBIDDEN"
    assert refusal(api, UPDATE, {"r": room, "name": "bob's"}, bob)[0] == "FORBIDDEN"
    # A MODERATOR adds and removes MEMBERs, and no one else; sets no roles.
    assert api.data(ADD, {"r": room, "u": cy.id}, mod.token)["addMember"]["memberCount"] == 5
    assert refusal(api, REMOVE, {"r": room, "u": mod2.id}, mod)[0] == "FORBIDDEN"
    assert refusal(api, REMOVE, {"r": room, "u": ann.id}, mod)[0] == "FORBIDDEN"
    assert refusal(api, SET_ROLE, {"r": room, "u": bob.id, "role": "MODERATOR"}, mod)[0] == "FORBIDDEN"
    assert api.data(REMOVE, {"r": room, "u": cy.id}, mod.token)["removeMember"] is True
    assert api.data(REMOVE, {"r": room, "u": cy.id}, mod.token)["removeMember"] is False
    # An OWNER removes a MODERATOR; a room keeps one OWNER at least.
    assert api.data(REMOVE, {"r": room, "u": mod2.id}, ann.token)["removeMember"] is True
    body = api.post(SET_ROLE, {"r": room, "u": ann.id, "role": "MEMBER"}, ann.token)
    assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "argument": "role"}
    assert refusal(api, SET_ROLE, {"r": room, "u": cy.id, "role": "MEMBER"}, ann)[0] == "NOT_FOUND"
    assert refusal(api, REMOVE, {"r": room, "u": ann.id}, ann)[0] == "BAD_USER_INPUT"  # leaveRoom is for that
    # The removed cannot see the PRIVATE room any more.
    assert refusal(api, "query($r: ID!) { room(id: $r) { id } }", {"r": room}, mod2)[0] == "NOT_FOUND"
    roles = api.data(MEMBERSHIPS, {"r": room}, bob.token)["room"]["memberships"]
    assert roles == [
        {"user": {"id": ann.id}, "role": "OWNER"},
        {"user": {"id": mod.id}, "role": "MODERATOR"},
        {"user": {"id": bob.id}, "role": "MEMBER"},
    ]
    assert api.data(MEMBERSHIPS, {"r": room, "after": mod.id}, bob.token)["room"]["memberships"] == roles[2:]


def test_a_banned_user_comes_back_by_no_route_until_unbanned(api: GraphQLClient) -> None:
    ann, mod, eve, fay = (sign_up(api, name) for name in ("Ann", "Mod", "Eve", "Fay"))
    public = create_room(api, ann, "open")
    private = create_room(api, ann, "closed", kind="PRIVATE")
    for room in (public, private):
        add_member(api, ann, room, mod.id)
        api.data(SET_ROLE, {"r": room, "u": mod.id, "role": "MODERATOR"}, ann.token)
        add_member(api, ann, room, eve.id)
        assert api.data(REMOVE, {"r": room, "u": eve.id, "ban": True}, mod.token)["removeMember"] is True
    assert refusal(api, JOIN, {"r": public}, eve)[0] == "FORBIDDEN"
    assert refusal(api, JOIN, {"r": private}, eve) == refusal(api, JOIN, {"r": MISSING_ROOM}, eve)
    for room in (public, private):
        assert refusal(api, ADD, {"r": room, "u": eve.id}, ann)[0] == "FORBIDDEN"
    # Banned ahead, never having been a member.
    assert api.data(REMOVE, {"r": public, "u": fay.id, "ban": True}, mod.token)["removeMember"] is True
    assert refusal(api, JOIN, {"r": public}, fay)[0] == "FORBIDDEN"
    # Unbanned: back by either route.
    assert refusal(api, UNBAN, {"r": public, "u": eve.id}, eve)[0] == "FORBIDDEN"  # outside: no moderator
    assert api.data(UNBAN, {"r": public, "u": eve.id}, mod.token)["unbanMember"] is True
    assert api.data(UNBAN, {"r": public, "u": eve.id}, mod.token)["unbanMember"] is False
    assert api.data(JOIN, {"r": public}, eve.token)["joinRoom"]["myRole"] == "MEMBER"
    assert api.data(UNBAN, {"r": private, "u": eve.id}, ann.token)["unbanMember"] is True
    assert api.data(ADD, {"r": private, "u": eve.id}, mod.token)["addMember"]["id"] == private


def test_a_muted_member_is_refused_posting_editing_and_reacting_with_until(api: GraphQLClient) -> None:
    ann, mod, bob = sign_up(api, "Ann"), sign_up(api, "Mod"), sign_up(api, "Bob")
    room = create_room(api, ann, kind="PRIVATE")
    add_member(api, ann, room, mod.id)
    add_member(api, ann, room, bob.id)
    api.data(SET_ROLE, {"r": room, "u": mod.id, "role": "MODERATOR"}, ann.token)
    mine = post_message(api, bob, room, "before")["id"]
    assert refusal(api, MUTE, {"r": room, "u": mod.id, "m": 5}, ann)[0] == "FORBIDDEN"  # only MEMBERs
    assert refusal(api, MUTE, {"r": room, "u": bob.id, "m": -1}, mod)[0] == "BAD_USER_INPUT"
    before = datetime.now(UTC)
    assert api.data(MUTE, {"r": room, "u": bob.id, "m": 10}, mod.token)["muteMember"]["role"] == "MEMBER"
    for query, variables in (
        (CREATE_MESSAGE, {"room": room, "body": "muted?"}),
        (EDIT, {"m": mine, "b": "edited"}),
        (REACT, {"m": mine}),
    ):
        body = api.post(query, variables, bob.token)
        [error] = body["errors"]
        assert error["extensions"]["code"] == "FORBIDDEN", (query, body)
        until = datetime.fromisoformat(error["extensions"]["until"])
        assert 9 * 60 <= (until - before).total_seconds() <= 11 * 60
    assert api.data(DELETE, {"m": mine}, bob.token)["deleteMessage"] is True  # taking back is allowed
    api.data(MUTE, {"r": room, "u": bob.id, "m": 0}, mod.token)
    assert post_message(api, bob, room, "after")["body"] == "after"


def test_moderators_delete_anyones_message_as_a_tombstone_with_by(api: GraphQLClient) -> None:
    ann, mod, bob = sign_up(api, "Ann"), sign_up(api, "Mod"), sign_up(api, "Bob")
    room = create_room(api, ann, kind="PRIVATE")
    add_member(api, ann, room, mod.id)
    add_member(api, ann, room, bob.id)
    api.data(SET_ROLE, {"r": room, "u": mod.id, "role": "MODERATOR"}, ann.token)
    anns = post_message(api, ann, room, "ann's")["id"]
    bobs = post_message(api, bob, room, "bob's")["id"]
    assert refusal(api, DELETE, {"m": anns}, bob)[0] == "FORBIDDEN"
    assert api.data(DELETE, {"m": bobs}, mod.token)["deleteMessage"] is True
    assert api.data(DELETE, {"m": bobs}, mod.token)["deleteMessage"] is False
    assert api.data(DELETE, {"m": anns}, ann.token)["deleteMessage"] is True
    deleted = [event for event in events_of(api, bob, room) if event["__typename"] == "MessageDeleted"]
    assert deleted == [
        {"__typename": "MessageDeleted", "messageId": bobs, "by": {"id": mod.id}},
        {
            "__typename": "MessageDeleted",
            "messageId": anns,
            "by": {"id": ann.id},
        },
    ]
    history = api.data(
        "query($r: ID!) { room(id: $r) { messages { edges { node { id body deleted sender { id } } } } } }",
        {"r": room},
        bob.token,
    )["room"]["messages"]["edges"]
    assert {"id": bobs, "body": "", "deleted": True, "sender": {"id": bob.id}} in [edge["node"] for edge in history]


def test_when_the_last_owner_leaves_the_longest_standing_moderator_else_member_takes_over(
    api: GraphQLClient,
) -> None:
    ann, bob, mod, cy = (sign_up(api, name) for name in ("Ann", "Bob", "Mod", "Cy"))
    room = create_room(api, ann, kind="PRIVATE")
    for member in (bob, mod, cy):
        add_member(api, ann, room, member.id)
    api.data(SET_ROLE, {"r": room, "u": mod.id, "role": "MODERATOR"}, ann.token)
    assert api.data(LEAVE, {"r": room}, ann.token)["leaveRoom"] is True
    tail = events_of(api, bob, room)[-2:]
    assert tail == [
        {"__typename": "MemberLeft", "user": {"id": ann.id}},
        {"__typename": "RoleChanged", "user": {"id": mod.id}, "role": "OWNER", "by": None},
    ]
    assert api.data(LEAVE, {"r": room}, mod.token)["leaveRoom"] is True  # no moderator left: the oldest member
    assert events_of(api, cy, room)[-1] == {
        "__typename": "RoleChanged",
        "user": {"id": bob.id},
        "role": "OWNER",
        "by": None,
    }
    assert api.data("query($r: ID!) { room(id: $r) { myRole } }", {"r": room}, bob.token)["room"]["myRole"] == "OWNER"


def test_update_room_changes_what_is_given_never_to_direct_and_hides_a_room_made_private(
    api: GraphQLClient,
) -> None:
    ann, mod, eve = sign_up(api, "Ann"), sign_up(api, "Mod"), sign_up(api, "Eve")
    room = create_room(api, ann, "town")
    join_room(api, mod, room)
    api.data(SET_ROLE, {"r": room, "u": mod.id, "role": "MODERATOR"}, ann.token)
    updated = api.data(UPDATE, {"r": room, "topic": "news"}, mod.token)["updateRoom"]
    assert updated == {"id": room, "name": "town", "topic": "news", "kind": "PUBLIC", "myRole": "MODERATOR"}
    body = api.post(UPDATE, {"r": room, "kind": "DIRECT"}, ann.token)
    assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "argument": "kind"}
    assert refusal(api, UPDATE, {"r": room, "name": "a\u200fb"}, ann)[0] == "BAD_USER_INPUT"
    assert api.data("query($r: ID!) { room(id: $r) { name } }", {"r": room}, eve.token)["room"]["name"] == "town"
    updated = api.data(UPDATE, {"r": room, "kind": "PRIVATE", "topic": ""}, ann.token)["updateRoom"]
    assert updated["kind"] == "PRIVATE" and updated["topic"] is None
    assert refusal(api, "query($r: ID!) { room(id: $r) { name } }", {"r": room}, eve) == refusal(
        api, "query($r: ID!) { room(id: $r) { name } }", {"r": MISSING_ROOM}, eve
    )
    assert refusal(api, JOIN, {"r": room}, eve)[0] == "NOT_FOUND"
    updates = [event for event in events_of(api, ann, room) if event["__typename"] == "RoomUpdated"]
    assert updates == [
        {"__typename": "RoomUpdated", "by": {"id": mod.id}, "name": "town", "topic": "news", "kind": "PUBLIC"},
        {"__typename": "RoomUpdated", "by": {"id": ann.id}, "name": "town", "topic": None, "kind": "PRIVATE"},
    ]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_the_new_events_reach_room_events_live_in_order_and_resumably(
    server: Server, api: GraphQLClient, protocol: str
) -> None:
    ann, bob, cy = sign_up(api, "Ann"), sign_up(api, "Bob"), sign_up(api, "Cy")
    room = create_room(api, ann, kind="PRIVATE")
    start = api.data("query($r: ID!) { room(id: $r) { latestEventCursor } }", {"r": room}, ann.token)["room"][
        "latestEventCursor"
    ]
    ws = await GraphQLWebSocket.open(server.ws_url, protocol, ann.token)
    await ws.subscribe("1", LIVE_EVENTS, {"room": room, "after": start})
    await ws.barrier()
    add_member(api, ann, room, bob.id)
    add_member(api, ann, room, cy.id)
    api.data(SET_ROLE, {"r": room, "u": bob.id, "role": "MODERATOR"}, ann.token)
    api.data(UPDATE, {"r": room, "name": "renamed"}, bob.token)
    api.data(REMOVE, {"r": room, "u": cy.id, "ban": True}, bob.token)
    live = await ws.events("1", 5)
    logged = events_of(api, ann, room, start)
    assert [event["cursor"] for event in live] == [
        edge["cursor"] for edge in api.data(EVENTS, {"r": room, "after": start}, ann.token)["room"]["events"]["edges"]
    ]
    assert [as_by({k: v for k, v in event.items() if k != "cursor"}) for event in live] == logged
    assert logged == [
        {"__typename": "MemberJoined", "user": {"id": bob.id}, "by": {"id": ann.id}},
        {"__typename": "MemberJoined", "user": {"id": cy.id}, "by": {"id": ann.id}},
        {"__typename": "RoleChanged", "user": {"id": bob.id}, "role": "MODERATOR", "by": {"id": ann.id}},
        {"__typename": "RoomUpdated", "by": {"id": bob.id}, "name": "renamed", "topic": None, "kind": "PRIVATE"},
        {"__typename": "MemberRemoved", "user": {"id": cy.id}, "by": {"id": bob.id}, "banned": True},
    ]
    await ws.close()
    # Resumed from the middle: the rest, once each, in order.
    ws = await GraphQLWebSocket.open(server.ws_url, protocol, ann.token)
    await ws.subscribe("2", LIVE_EVENTS, {"room": room, "after": live[2]["cursor"]})
    assert [event["cursor"] for event in await ws.events("2", 2)] == [event["cursor"] for event in live[3:]]
    assert await ws.silent()
    await ws.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_kick_ends_the_kicked_persons_subscriptions_over_websocket(
    server: Server, api: GraphQLClient, protocol: str
) -> None:
    ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
    room = create_room(api, ann, kind="PRIVATE")
    add_member(api, ann, room, bob.id)
    bobs = await GraphQLWebSocket.open(server.ws_url, protocol, bob.token)
    bobs_log = await GraphQLWebSocket.open(server.ws_url, protocol, bob.token)
    anns = await GraphQLWebSocket.open(server.ws_url, protocol, ann.token)
    await bobs.subscribe("m", MESSAGE_CREATED, {"room": room})
    await bobs_log.subscribe("e", ROOM_EVENTS, {"room": room})
    await anns.subscribe("e", LIVE_EVENTS, {"room": room})
    for ws in (bobs, bobs_log, anns):
        await ws.barrier()
    post_message(api, ann, room, "before")
    assert (await bobs.messages("m", 1))[0]["body"] == "before"
    assert (await bobs_log.events("e", 1))[0]["message"]["body"] == "before"
    api.data(REMOVE, {"r": room, "u": bob.id}, ann.token)
    for ws, op_id in ((bobs, "m"), (bobs_log, "e")):
        ended = await ws.result(op_id)
        assert codes(ended["errors"]) == ["FORBIDDEN"], ended
        assert await ws.receive() == {"type": "complete", "id": op_id}
    events = await anns.events("e", 2)
    assert [event["__typename"] for event in events] == ["MessageCreated", "MemberRemoved"]
    post_message(api, ann, room, "after")
    assert await bobs.silent() and await bobs_log.silent(0.1)
    for ws in (bobs, bobs_log, anns):
        await ws.close()


async def test_a_ban_ends_the_banned_persons_sse_and_multipart_streams(server: Server, api: GraphQLClient) -> None:
    ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
    room = create_room(api, ann, kind="PRIVATE")
    add_member(api, ann, room, bob.id)
    anchor = post_message(api, ann, room, "anchor")
    variables = {"room": room, "after": anchor["id"]}
    sse = await open_sse(server.url, MESSAGE_CREATED, variables, token=bob.token)
    parts = await open_multipart(server.url, MESSAGE_CREATED, variables, token=bob.token)
    async with sse, parts:
        post_message(api, ann, room, "before")
        assert [m["body"] for m in await sse.data("messageCreated", 1)] == ["before"]
        assert [m["body"] for m in await parts.data("messageCreated", 1)] == ["before"]
        api.data(REMOVE, {"r": room, "u": bob.id, "ban": True}, ann.token)
        assert codes(await sse.refused()) == ["FORBIDDEN"]
        assert codes(await multipart_refused(parts)) == ["FORBIDDEN"]


async def test_the_embedded_default_keeps_rooms_private_and_ends_a_kicked_stream(sqlite_server: Server) -> None:
    api = GraphQLClient(sqlite_server.url)
    ann, bob, eve = sign_up(api, "Ann"), sign_up(api, "Bob"), sign_up(api, "Eve")
    room = create_room(api, ann, kind="PRIVATE")
    add_member(api, ann, room, bob.id)
    api.data(SET_ROLE, {"r": room, "u": bob.id, "role": "MODERATOR"}, ann.token)
    assert refusal(api, "query($r: ID!) { room(id: $r) { id } }", {"r": room}, eve) == refusal(
        api, "query($r: ID!) { room(id: $r) { id } }", {"r": MISSING_ROOM}, eve
    )
    anns = post_message(api, ann, room, "hello")["id"]
    assert api.data(DELETE, {"m": anns}, bob.token)["deleteMessage"] is True
    async with await open_sse(sqlite_server.url, MESSAGE_CREATED, {"room": room, "after": anns}, token=bob.token) as s:
        post_message(api, ann, room, "live")
        assert [m["body"] for m in await s.data("messageCreated", 1)] == ["live"]
        api.data(SET_ROLE, {"r": room, "u": bob.id, "role": "MEMBER"}, ann.token)
        api.data(REMOVE, {"r": room, "u": bob.id}, ann.token)
        assert codes(await s.refused()) == ["FORBIDDEN"]
    api.close()
