"""Rooms and membership over HTTP: only members read a room, its members and its messages (a
PRIVATE room is not even found by anyone else)."""

from __future__ import annotations

from tests.support.graphql import (
    CREATE_MESSAGE,
    GraphQLClient,
    add_member,
    create_room,
    join_room,
    post_message,
    sign_up,
)

ROOM = "query($id: ID!) { room(id: $id) { id name members { id name } } }"
MESSAGES = "query($id: ID!) { room(id: $id) { messages { edges { node { body } } } } }"


def test_the_creator_is_the_first_member_and_names_are_trimmed(client: GraphQLClient) -> None:
    ann = sign_up(client, "Ann")
    created = client.data('mutation { createRoom(name: "  general  ") { id name members { id } } }', token=ann.token)
    assert created["createRoom"]["name"] == "general"
    assert created["createRoom"]["members"] == [{"id": ann.id}]


def test_rooms_lists_mine_only_in_the_order_i_joined(client: GraphQLClient) -> None:
    ann, bob = sign_up(client, "Ann"), sign_up(client, "Bob")
    first = create_room(client, ann, "first")
    bobs = create_room(client, bob, "bob's")
    second = create_room(client, ann, "second")
    join_room(client, ann, bobs)
    mine = client.data("{ rooms { id name } }", token=ann.token)["rooms"]
    assert [room["id"] for room in mine] == [first, second, bobs]
    assert [room["id"] for room in client.data("{ rooms { id } }", token=bob.token)["rooms"]] == [bobs]


def test_rooms_pages_after_the_last_room_of_the_page_before(client: GraphQLClient) -> None:
    """A room list's first page, then the next after its last room: every room once, in the
    order joined. After a room I have left, or one I was never in (PRIVATE or not existing), the
    list ends (no oracle), and what cannot be a room's id is BAD_USER_INPUT."""
    ann, bob = sign_up(client, "Ann"), sign_up(client, "Bob")
    mine = [create_room(client, ann, f"room {i}") for i in range(5)]
    theirs = create_room(client, bob, "bob's", kind="PRIVATE")
    page = "query($after: String) { rooms(first: 2, after: $after) { id } }"
    seen: list[str] = []
    after = None
    for _ in range(4):
        listed = [room["id"] for room in client.data(page, {"after": after}, ann.token)["rooms"]]
        seen += listed
        if len(listed) < 2:
            break
        after = listed[-1]
    assert seen == mine
    client.data("mutation($r: ID!) { leaveRoom(room: $r) }", {"r": mine[1]}, token=ann.token)
    assert [room["id"] for room in client.data(page, {"after": mine[0]}, ann.token)["rooms"]] == mine[2:4]
    for gone in (mine[1], theirs, "987654321"):
        assert client.data(page, {"after": gone}, ann.token)["rooms"] == [], gone
    body = client.post(page, {"after": "not-an-id"}, token=ann.token)
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", body


def test_a_room_list_shows_each_rooms_last_message_as_the_room_itself_does(client: GraphQLClient) -> None:
    """`rooms { lastMessage }` reads every room's newest message with the page (and the room's
    own `lastMessage` by itself): the same message, its sender and time, whether the selection
    names it directly or through fragments; null before any message; a deleted one as it is."""
    ann, bob = sign_up(client, "Ann"), sign_up(client, "Bob")
    quiet, busy, erased = create_room(client, ann, "quiet"), create_room(client, bob, "busy"), create_room(client, ann)
    for room in (busy, erased):
        join_room(client, ann if room == busy else bob, room)
    post_message(client, ann, busy, "first")
    post_message(client, bob, busy, "second from Bob")
    gone = post_message(client, bob, erased, "to be deleted")
    client.data("mutation($m: ID!) { deleteMessage(id: $m) }", {"m": gone["id"]}, token=bob.token)
    fields = "lastMessage { id body deleted createdAt sender { id name } }"
    alone = {
        room: client.data(f"query($id: ID!) {{ room(id: $id) {{ {fields} }} }}", {"id": room}, ann.token)["room"]
        for room in (quiet, busy, erased)
    }
    assert alone[quiet]["lastMessage"] is None
    assert alone[busy]["lastMessage"]["body"] == "second from Bob"
    assert alone[busy]["lastMessage"]["sender"] == {"id": bob.id, "name": "Bob"}
    assert alone[erased]["lastMessage"]["deleted"] is True
    for query in (
        f"{{ rooms {{ id {fields} }} }}",
        f"{{ rooms {{ id ... on Room {{ {fields} }} }} }}",
        f"{{ rooms {{ ...listed }} }} fragment listed on Room {{ id ... on Room {{ {fields} }} }}",
    ):
        listed = client.data(query, token=ann.token)["rooms"]
        assert {room["id"]: {"lastMessage": room["lastMessage"]} for room in listed} == alone, query


def test_members_in_join_order_and_join_is_idempotent(client: GraphQLClient) -> None:
    ann, bob, cy = sign_up(client, "Ann"), sign_up(client, "Bob"), sign_up(client, "Cy")
    room = create_room(client, ann)
    join_room(client, bob, room)
    join_room(client, cy, room)
    join_room(client, bob, room)
    members = client.data(ROOM, {"id": room}, token=cy.token)["room"]["members"]
    assert members == [{"id": ann.id, "name": "Ann"}, {"id": bob.id, "name": "Bob"}, {"id": cy.id, "name": "Cy"}]


def test_non_members_and_unknown_rooms_get_the_same_not_found(client: GraphQLClient) -> None:
    ann, eve = sign_up(client, "Ann"), sign_up(client, "Eve")
    room = create_room(client, ann, kind="PRIVATE")
    post_message(client, ann, room, "secret")
    unknown = client.post(ROOM, {"id": "999999"}, token=eve.token)
    for query in (ROOM, MESSAGES):
        body = client.post(query, {"id": room}, token=eve.token)
        assert body["data"] == {"room": None}
        assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
        assert body["errors"][0]["message"] == unknown["errors"][0]["message"]
        assert "secret" not in str(body)
    assert client.error_codes(CREATE_MESSAGE, {"room": room, "body": "hi"}, token=eve.token) == ["NOT_FOUND"]
    assert client.error_codes(ROOM, {"id": "999999"}, token=ann.token) == ["NOT_FOUND"]
    assert client.error_codes("mutation($r: ID!) { joinRoom(room: $r) { id } }", {"r": "999999"}, token=ann.token) == [
        "NOT_FOUND"
    ]
    for malformed in ("not-a-number", "-1", "0", "9223372036854775808"):  # can be no room's id (past int8)
        assert client.error_codes(ROOM, {"id": malformed}, token=ann.token) == ["BAD_USER_INPUT"]
        assert client.error_codes(
            "mutation($r: ID!) { joinRoom(room: $r) { id } }", {"r": malformed}, token=ann.token
        ) == ["BAD_USER_INPUT"]
    assert client.error_codes(ROOM, {"id": room}) == ["UNAUTHENTICATED"]
    assert client.error_codes("{ rooms { id } }") == ["UNAUTHENTICATED"]


def test_leaving_a_room_takes_away_reading_and_posting(client: GraphQLClient) -> None:
    ann, bob = sign_up(client, "Ann"), sign_up(client, "Bob")
    room = create_room(client, ann, kind="PRIVATE")
    public = create_room(client, ann, "public")
    add_member(client, ann, room, bob.id)
    join_room(client, bob, public)
    leave = "mutation($r: ID!) { leaveRoom(room: $r) }"
    assert client.data(leave, {"r": public}, token=bob.token)["leaveRoom"] is True
    assert client.data(leave, {"r": public}, token=bob.token)["leaveRoom"] is False
    assert client.data(leave, {"r": room}, token=bob.token)["leaveRoom"] is True
    assert client.error_codes(leave, {"r": room}, token=bob.token) == ["NOT_FOUND"]  # a private room is gone for him
    assert client.error_codes(leave, {"r": "424242"}, token=bob.token) == ["NOT_FOUND"]
    assert client.error_codes(ROOM, {"id": room}, token=bob.token) == ["NOT_FOUND"]
    assert client.error_codes(CREATE_MESSAGE, {"room": room, "body": "hi"}, token=bob.token) == ["NOT_FOUND"]
    assert client.error_codes(CREATE_MESSAGE, {"room": public, "body": "hi"}, token=bob.token) == ["FORBIDDEN"]
    assert client.data("{ rooms { id } }", token=bob.token)["rooms"] == []
    assert client.data(ROOM, {"id": room}, token=ann.token)["room"]["members"] == [{"id": ann.id, "name": "Ann"}]


def test_invalid_room_names_are_refused(client: GraphQLClient) -> None:
    ann = sign_up(client, "Ann")
    for name in ("", "   ", "x" * 101):
        body = client.post("mutation($n: String!) { createRoom(name: $n) { id } }", {"n": name}, token=ann.token)
        assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "argument": "name"}
