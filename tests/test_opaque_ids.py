"""Ids reveal nothing (issue 26): the ids of users, rooms and messages a client gets from the
served app (Postgres) follow no order and no step it could count through, a known id's
neighbours name nothing, and what it gets is a string (a 19-digit number would not survive
JavaScript's doubles). Cursors tell only what a member reads anyway: a room's own counts."""

from __future__ import annotations

import base64
import itertools
import json
import math

import httpx

from tests.support.graphql import GraphQLClient, create_room, post_message, sign_up
from tests.support.processes import Server

ROOM = "query($id: ID!) { room(id: $id) { id latestEventCursor } }"
EDIT = 'mutation($id: ID!) { editMessage(id: $id, body: "x") { id } }'
ADD_MEMBER = "mutation($r: ID!, $u: ID!) { addMember(room: $r, user: $u) { id } }"
N = 20


def _no_order_no_step(ids: list[int]) -> None:
    """Neither increasing nor decreasing in the order they were made, and the differences between
    them share no step (their gcd is 1: no arithmetic progression, of any step, holds them all)."""
    assert len(set(ids)) == len(ids)
    assert ids != sorted(ids) and ids != sorted(ids, reverse=True), ids
    assert math.gcd(*(b - a for a, b in itertools.pairwise(ids))) == 1, ids


def test_ids_follow_no_order_and_no_step(server: Server) -> None:
    api = GraphQLClient(server.url)
    try:
        people = [sign_up(api, f"u{i}") for i in range(N)]
        ann = people[0]
        rooms = [create_room(api, ann, f"r{i}", kind="PRIVATE") for i in range(N)]
        messages = [post_message(api, ann, rooms[0], f"m{i}")["id"] for i in range(N)]
        for made in ([int(person.id) for person in people], [int(id) for id in rooms], [int(id) for id in messages]):
            assert all(2**32 <= id < 2**63 for id in made), made
            _no_order_no_step(made)
        # Spread over the whole range, not bunched where a count would put them.
        spread = [int(person.id) for person in people] + [int(id) for id in rooms + messages]
        assert max(spread) - min(spread) > 2**61, spread

        # A known id's neighbours name nothing (NOT_FOUND, as any id that names nothing).
        room, message, bob = int(rooms[0]), int(messages[0]), int(people[1].id)
        for step in (-1, 1):
            assert api.error_codes(ROOM, {"id": str(room + step)}, ann.token) == ["NOT_FOUND"]
            assert api.error_codes(EDIT, {"id": str(message + step)}, ann.token) == ["NOT_FOUND"]
            assert api.error_codes(ADD_MEMBER, {"r": rooms[0], "u": str(bob + step)}, ann.token) == ["NOT_FOUND"]
        assert api.data(ADD_MEMBER, {"r": rooms[0], "u": str(bob)}, ann.token)["addMember"]["id"] == rooms[0]

        # Every id reaches the client as a JSON string, never a number.
        raw = api.http.post(
            "/graphql",
            json={"query": "{ me { id } rooms(first: 1) { id lastMessage { id sender { id } } } }"},
            headers={"Authorization": f"Bearer {ann.token}"},
        ).text
        body = json.loads(raw, parse_int=_no_number)
        assert body["data"]["me"]["id"] == ann.id
        assert body["data"]["rooms"] == [
            {"id": rooms[0], "lastMessage": {"id": messages[-1], "sender": {"id": ann.id}}}
        ]

        # A room's event cursor names the room and its own log's place: two rooms made one after
        # the other both start at 1, so it counts nothing across rooms.
        for id in rooms[1:3]:
            cursor = api.data(ROOM, {"id": id}, ann.token)["room"]["latestEventCursor"]
            assert base64.urlsafe_b64decode(cursor).decode() == f"event:{id}:1"

        # The generated avatar of a 19-digit id is served.
        avatar = httpx.get(f"{server.url}/avatars/{ann.id}.svg?s=16")
        assert avatar.status_code == 200 and avatar.text.startswith("<svg")
    finally:
        api.close()


def _no_number(text: str) -> int:
    """JSON numbers in an answer that holds only ids: none may be one."""
    raise AssertionError(f"a JSON number in the answer: {text}")
