"""DIRECT rooms (issue 26), sent as clients and attackers send them against gunicorn on Postgres
and Redis (and the embedded default): one room per set of people whoever opens it and however
many open it at once, membership fixed, invisible to everyone else on every path, rate limited."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from tests.support.graphql import CREATE_MESSAGE, Account, GraphQLClient, post_message, sign_up
from tests.support.httpstream import open_sse
from tests.support.processes import Server, served_with_limits
from tests.support.waiting import at_window_start
from tests.support.wsclient import MESSAGE_CREATED, PROTOCOLS, ROOM_EVENTS, GraphQLWebSocket

OPEN = "mutation($u: [ID!]!) { openDirect(users: $u) { id name kind myRole memberCount } }"
OPEN_ID = "mutation($u: [ID!]!) { openDirect(users: $u) { id } }"
ROOM = "query($r: ID!) { room(id: $r) { id name kind } }"
MEMBERSHIPS = "query($r: ID!) { room(id: $r) { memberships { user { id } role } } }"
EVENTS = """
query($r: ID!) {
  room(id: $r) { events { edges { node { __typename ... on MemberJoined { user { id } by { id } } } } } }
}"""
MY_ROOMS = "{ rooms(first: 500) { id kind } }"
JOIN = "mutation($r: ID!) { joinRoom(room: $r) { id } }"
LEAVE = "mutation($r: ID!) { leaveRoom(room: $r) }"
ADD = "mutation($r: ID!, $u: ID!) { addMember(room: $r, user: $u) { id } }"
REMOVE = "mutation($r: ID!, $u: ID!) { removeMember(room: $r, user: $u) }"
SET_ROLE = "mutation($r: ID!, $u: ID!) { setRole(room: $r, user: $u, role: OWNER) { role } }"
UPDATE = 'mutation($r: ID!) { updateRoom(room: $r, name: "mine") { id } }'
UPDATE_KIND = "mutation($r: ID!) { updateRoom(room: $r, kind: PUBLIC) { id } }"
MUTE = "mutation($r: ID!, $u: ID!) { muteMember(room: $r, user: $u, minutes: 5) { role } }"
TYPING = "mutation($r: ID!) { typing(room: $r) }"
EDIT = 'mutation($m: ID!) { editMessage(id: $m, body: "x") { id } }'
REACT = 'mutation($m: ID!) { react(message: $m, emoji: "👍") { id } }'
MISSING_ROOM = "987654"
MISSING_MESSAGE = "987654321"
MISSING_USER = "987654"


@pytest.fixture
def api(server: Server) -> Iterator[GraphQLClient]:
    client = GraphQLClient(server.url)
    yield client
    client.close()


def refusal(api: GraphQLClient, query: str, variables: dict, account: Account) -> tuple[str, str]:
    body = api.post(query, variables, account.token)
    assert body.get("errors") and len(body["errors"]) == 1, body
    return body["errors"][0]["extensions"]["code"], body["errors"][0]["message"]


def direct_rooms(api: GraphQLClient, account: Account) -> list[str]:
    return [room["id"] for room in api.data(MY_ROOMS, token=account.token)["rooms"] if room["kind"] == "DIRECT"]


def test_the_same_people_get_the_same_room_in_any_order_whoever_opens_it(client: GraphQLClient) -> None:
    """On Postgres and on the embedded default."""
    ann, bob, cy = sign_up(client, "Ann"), sign_up(client, "bob"), sign_up(client, "Cy")
    first = client.data(OPEN, {"u": [bob.id, cy.id]}, ann.token)["openDirect"]
    # The stored name: everyone's names as they were when it was opened, sorted, the same for all.
    assert first == {"id": first["id"], "name": "Ann, bob, Cy", "kind": "DIRECT", "myRole": "MEMBER", "memberCount": 3}
    for opener, others in ((ann, [cy.id, bob.id]), (bob, [ann.id, cy.id]), (cy, [bob.id, ann.id, cy.id])):
        again = client.data(OPEN, {"u": others}, opener.token)["openDirect"]
        assert again == first, (opener.name, again)
    # Everyone is a MEMBER (nobody in a direct room moderates another); the log says who opened it.
    memberships = client.data(MEMBERSHIPS, {"r": first["id"]}, bob.token)["room"]["memberships"]
    # (All joined at the same instant: in the order of their ids, which is no order of theirs.)
    assert memberships == [{"user": {"id": i}, "role": "MEMBER"} for i in sorted((ann.id, bob.id, cy.id), key=int)]
    events = [edge["node"] for edge in client.data(EVENTS, {"r": first["id"]}, cy.token)["room"]["events"]["edges"]]
    assert events == [
        {"__typename": "MemberJoined", "user": {"id": ann.id}, "by": None},
        {"__typename": "MemberJoined", "user": {"id": bob.id}, "by": {"id": ann.id}},
        {"__typename": "MemberJoined", "user": {"id": cy.id}, "by": {"id": ann.id}},
    ]
    for account in (ann, bob, cy):
        assert direct_rooms(client, account) == [first["id"]]
    # A subset, or one more person, is another room.
    pair = client.data(OPEN, {"u": [ann.id]}, bob.token)["openDirect"]
    assert pair["id"] != first["id"] and pair["name"] == "Ann, bob" and pair["memberCount"] == 2
    assert client.data(OPEN, {"u": [bob.id]}, ann.token)["openDirect"]["id"] == pair["id"]
    # Its members post and read it as any room's.
    post_message(client, bob, pair["id"], "hi Ann")
    body = client.data("query($r: ID!) { room(id: $r) { lastMessage { body } } }", {"r": pair["id"]}, ann.token)
    assert body["room"]["lastMessage"] == {"body": "hi Ann"}


def test_who_may_be_in_one_is_checked_before_anything_is_written(api: GraphQLClient) -> None:
    ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
    crowd = [sign_up(api, f"p{i}") for i in range(10)]
    bad = [
        [],
        [ann.id],  # myself only
        [bob.id, bob.id],
        [ann.id, ann.id, bob.id],
        [person.id for person in crowd],  # 10 others
        [ann.id, *[person.id for person in crowd]],
        [bob.id] * 10_000,  # refused by its length before anything is parsed
        ["not-an-id"],
        ["-1"],
    ]
    for users in bad:
        body = api.post(OPEN_ID, {"u": users}, ann.token)
        assert [e["extensions"] for e in body["errors"]] == [{"code": "BAD_USER_INPUT", "argument": "users"}], users
    # Nine others is the most; my own id among them is ignored.
    nine = api.data(OPEN, {"u": [ann.id, *[p.id for p in crowd[:9]]]}, ann.token)["openDirect"]
    assert nine["memberCount"] == 10
    # An id naming nobody: NOT_FOUND for the whole call, not saying which, the same for one or several.
    for users in ([MISSING_USER], [bob.id, MISSING_USER], [MISSING_USER, "987655"]):
        assert refusal(api, OPEN_ID, {"u": users}, ann) == ("NOT_FOUND", "User not found.")
    assert direct_rooms(api, ann) == [nine["id"]] and direct_rooms(api, bob) == []
    assert api.error_codes(OPEN_ID, {"u": [bob.id]}) == ["UNAUTHENTICATED"]


async def test_many_opening_it_at_the_same_moment_all_get_one_room(server: Server, api: GraphQLClient) -> None:
    """Both people (and a third) open it many times at once, over several connections to both
    workers, released together: one room, one membership each, one log."""
    ann, bob, cy = sign_up(api, "Ann"), sign_up(api, "Bob"), sign_up(api, "Cy")
    pair_of = {ann.token: [bob.id], bob.token: [ann.id]}
    trio_of = {ann.token: [cy.id, bob.id], bob.token: [ann.id, cy.id], cy.token: [bob.id, ann.id]}
    clients = [
        httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        for token in [ann.token, bob.token] * 8 + [cy.token] * 4
    ]
    go = asyncio.Event()
    ready = 0

    async def opens(http: httpx.AsyncClient, token: str) -> list[str]:
        nonlocal ready
        await http.post("/graphql", json={"query": "{ me { id } }"})  # the connection is open
        ready += 1
        if ready == len(clients):  # the last one ready releases them all
            go.set()
        await go.wait()
        answers = []
        for users in ([pair_of[token]] if token in pair_of else []) + [trio_of[token]]:
            response = await http.post("/graphql", json={"query": OPEN_ID, "variables": {"u": users}})
            assert "errors" not in response.json(), response.text
            answers.append(response.json()["data"]["openDirect"]["id"])
        return answers

    try:
        tokens = [str(http.headers["Authorization"]).removeprefix("Bearer ") for http in clients]
        answers = await asyncio.gather(*(opens(http, token) for http, token in zip(clients, tokens, strict=True)))
    finally:
        await asyncio.gather(*(http.aclose() for http in clients))
    pairs = {ids[0] for ids in answers if len(ids) == 2}
    trios = {ids[-1] for ids in answers}
    assert len(pairs) == 1 and len(trios) == 1 and pairs != trios
    [pair], [trio] = pairs, trios
    assert sorted(direct_rooms(api, ann)) == sorted([pair, trio]) and direct_rooms(api, cy) == [trio]
    for room, size in ((pair, 2), (trio, 3)):
        assert len(api.data(MEMBERSHIPS, {"r": room}, ann.token)["room"]["memberships"]) == size
        edges = api.data(EVENTS, {"r": room}, ann.token)["room"]["events"]["edges"]
        assert [edge["node"]["__typename"] for edge in edges] == ["MemberJoined"] * size


def test_nobody_joins_leaves_is_added_removed_or_changes_role(api: GraphQLClient) -> None:
    ann, bob, cy = sign_up(api, "Ann"), sign_up(api, "Bob"), sign_up(api, "Cy")
    room = api.data(OPEN_ID, {"u": [bob.id]}, ann.token)["openDirect"]["id"]
    fixed = ("FORBIDDEN", "A direct room's membership and roles are fixed.")
    assert refusal(api, JOIN, {"r": room}, bob) == fixed
    assert refusal(api, LEAVE, {"r": room}, ann) == fixed
    for query, variables in (
        (ADD, {"r": room, "u": cy.id}),
        (REMOVE, {"r": room, "u": bob.id}),
        (SET_ROLE, {"r": room, "u": ann.id}),
        (SET_ROLE, {"r": room, "u": bob.id}),
        (MUTE, {"r": room, "u": bob.id}),
        (UPDATE, {"r": room}),
        (UPDATE_KIND, {"r": room}),
    ):
        for account in (ann, bob):
            assert refusal(api, query, variables, account)[0] in ("FORBIDDEN", "BAD_USER_INPUT"), query
    memberships = api.data(MEMBERSHIPS, {"r": room}, bob.token)["room"]["memberships"]
    # Both joined at one instant: they come in the order of their (random) ids.
    both = [{"user": {"id": ann.id}, "role": "MEMBER"}, {"user": {"id": bob.id}, "role": "MEMBER"}]
    assert memberships == sorted(both, key=lambda membership: int(membership["user"]["id"]))
    assert api.data(ROOM, {"r": room}, ann.token)["room"] == {"id": room, "name": "Ann, Bob", "kind": "DIRECT"}


def test_an_outsider_probing_it_gets_not_found_exactly_as_for_a_missing_room(api: GraphQLClient) -> None:
    ann, bob, eve = sign_up(api, "Ann"), sign_up(api, "Bob"), sign_up(api, "Eve")
    room = api.data(OPEN_ID, {"u": [bob.id]}, ann.token)["openDirect"]["id"]
    message = post_message(api, ann, room, "just us")["id"]
    probes = [
        (ROOM, {}),
        ("query($r: ID!) { room(id: $r) { memberCount lastMessage { body } } }", {}),
        (JOIN, {}),
        (LEAVE, {}),
        (CREATE_MESSAGE.replace("$room", "$r"), {"body": "let me in"}),
        (TYPING, {}),
        (UPDATE, {}),
        (ADD, {"u": eve.id}),
        (REMOVE, {"u": bob.id}),
        (SET_ROLE, {"u": eve.id}),
        (MUTE, {"u": bob.id}),
    ]
    for query, extra in probes:
        seen = refusal(api, query, {"r": room, **extra}, eve)
        missing = refusal(api, query, {"r": MISSING_ROOM, **extra}, eve)
        assert seen == missing and seen[0] == "NOT_FOUND", (query, seen, missing)
    for query in (EDIT, REACT):
        assert refusal(api, query, {"m": message}, eve) == refusal(api, query, {"m": MISSING_MESSAGE}, eve)
    public = api.data("{ publicRooms(first: 500) { id } }", token=eve.token)["publicRooms"]
    assert room not in [found["id"] for found in public]
    assert api.data('{ publicRooms(search: "Ann, Bob") { id } }', token=eve.token)["publicRooms"] == []
    # Opening one with its people gets you your own room, not theirs.
    mine = api.data(OPEN_ID, {"u": [ann.id, bob.id]}, eve.token)["openDirect"]["id"]
    assert mine != room and direct_rooms(api, ann) == [room, mine]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_outsiders_subscriptions_to_it_are_not_found_over_websocket(
    server: Server, api: GraphQLClient, protocol: str
) -> None:
    ann, bob, eve = sign_up(api, "Ann"), sign_up(api, "Bob"), sign_up(api, "Eve")
    room = api.data(OPEN_ID, {"u": [bob.id]}, ann.token)["openDirect"]["id"]
    ws = await GraphQLWebSocket.open(server.ws_url, protocol, eve.token)
    for i, query in enumerate((MESSAGE_CREATED, ROOM_EVENTS)):
        await ws.subscribe(f"s{i}", query, {"room": room})
        seen = await ws.error(f"s{i}")
        await ws.subscribe(f"m{i}", query, {"room": MISSING_ROOM})
        missing = await ws.error(f"m{i}")
        assert [e["extensions"]["code"] for e in seen] == ["NOT_FOUND"]
        assert [e["message"] for e in seen] == [e["message"] for e in missing]
    post_message(api, ann, room, "not for eve")
    assert await ws.silent()
    await ws.close()


async def test_an_outsiders_subscription_to_it_is_not_found_over_sse(server: Server, api: GraphQLClient) -> None:
    ann, bob, eve = sign_up(api, "Ann"), sign_up(api, "Bob"), sign_up(api, "Eve")
    room = api.data(OPEN_ID, {"u": [bob.id]}, ann.token)["openDirect"]["id"]
    answers = []
    for target in (room, MISSING_ROOM):
        async with await open_sse(server.url, MESSAGE_CREATED, {"room": target}, token=eve.token) as stream:
            answers.append(await stream.refused())
    assert [e["extensions"]["code"] for e in answers[0]] == ["NOT_FOUND"]
    assert answers[0][0]["message"] == answers[1][0]["message"]


@pytest.fixture(scope="module")
def limited() -> Iterator[Server]:
    """Postgres + Redis with small budgets: 3 rooms and 8 actions an hour per user (counts,
    not windows' lengths, are what is tested)."""
    with served_with_limits(
        "chat_direct",
        {
            "RATE_LIMIT_ACTIONS": "8/3600",
            "RATE_LIMIT_ROOMS": "3/3600",
        },
    ) as server:
        yield server


def test_opening_counts_as_an_action_and_creating_as_a_room(limited: Server) -> None:
    """Every call spends RATE_LIMIT_ACTIONS; only one that creates a room spends
    RATE_LIMIT_ROOMS (shared with createRoom). (Run in one hour's window: 3600 s fixed windows.)"""
    api = GraphQLClient(limited.url)
    ann = sign_up(api, "Ann")
    people = [sign_up(api, f"p{i}") for i in range(4)]
    at_window_start(3600, 120)
    opened = [api.data(OPEN_ID, {"u": [p.id]}, ann.token)["openDirect"]["id"] for p in people[:3]]  # 3 actions
    assert api.error_codes(OPEN_ID, {"u": [people[3].id]}, ann.token) == ["RATE_LIMITED"]  # the 4th room: 4
    for room, person in zip(opened, people[:3], strict=True):  # existing rooms still open: 5, 6, 7
        assert api.data(OPEN_ID, {"u": [person.id]}, ann.token)["openDirect"]["id"] == room
    assert api.data(OPEN_ID, {"u": [people[0].id]}, ann.token)["openDirect"]["id"] == opened[0]  # 8
    body = api.post(OPEN_ID, {"u": [people[0].id]}, ann.token)  # the 9th action
    assert body["errors"][0]["extensions"]["code"] == "RATE_LIMITED" and body["errors"][0]["extensions"]["retryAfter"]
    # Per user: the room Ann could not open, the other side opens on their own budget.
    assert api.data(OPEN_ID, {"u": [ann.id]}, people[3].token)["openDirect"]["id"] not in opened
    api.close()
