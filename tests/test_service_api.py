"""The host's server API (issue 27) against the real server (gunicorn, two workers, Postgres +
Redis, and SQLite): `Authorization: Bearer <SERVICE_KEY>` (either of two keys) drives users, tokens and
rooms; every service field refuses users (FORBIDDEN) and the anonymous (UNAUTHENTICATED); the
key works over plain HTTP only; revokeTokens ends a user's open WebSocket and SSE stream;
createRoom by externalId twice at once makes one room. And the same on the embedded default."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support.graphql import GraphQLClient, sign_up
from tests.support.host_tokens import SECRET, claims, hs256
from tests.support.httpstream import open_multipart, open_sse, part_errors
from tests.support.processes import Server, served_on
from tests.support.wsclient import MESSAGE_CREATED, PROTOCOLS, GraphQLWebSocket

OLD_KEY, NEW_KEY = "old-service-key-" + "a" * 32, "new-service-key-" + "b" * 32

UPSERT = "mutation($u: [UserInput!]!) { upsertUsers(users: $u) { id name externalId avatar } }"
USER_BY = "query($e: ID!) { userByExternalId(externalId: $e) { id name externalId } }"
ROOM_BY = "query($e: ID!) { roomByExternalId(externalId: $e) { id name externalId memberCount } }"
ISSUE = "mutation($e: ID!, $t: Int) { issueToken(externalId: $e, ttlSeconds: $t) }"
REVOKE = "mutation($e: ID!) { revokeTokens(externalId: $e) }"
DELETE = "mutation($e: ID!, $erase: Boolean) { deleteUser(externalId: $e, erase: $erase) }"
SYSTEM = "mutation($r: ID!, $b: String!) { postSystemMessage(room: $r, body: $b) { id kind body sender { name } } }"
CREATE = """
mutation($n: String!, $k: RoomKind, $e: ID, $o: ID, $m: [ID!]) {
  createRoom(name: $n, kind: $k, externalId: $e, owner: $o, members: $m) {
    id name kind externalId memberCount memberships { user { id } role }
  }
}"""
ME = "{ me { id name externalId } }"
ROOM = "query($id: ID!) { room(id: $id) { id externalId memberCount } }"
MESSAGES = "query($id: ID!) { room(id: $id) { messages { edges { node { body kind deleted sender { name } } } } } }"
ADD = "mutation($r: ID!, $u: ID!) { addMember(room: $r, user: $u) { memberCount } }"
REMOVE = "mutation($r: ID!, $u: ID!) { removeMember(room: $r, user: $u) }"
SET_ROLE = "mutation($r: ID!, $u: ID!) { setRole(room: $r, user: $u, role: MODERATOR) { role } }"
MUTE = "mutation($r: ID!, $u: ID!) { muteMember(room: $r, user: $u, minutes: 5) { role } }"
UPDATE = 'mutation($r: ID!) { updateRoom(room: $r, topic: "set by the host") { topic } }'
DIRECT = "mutation($u: [ID!]!) { openDirect(users: $u) { id kind memberCount } }"
KINDED = "subscription($room: ID!) { messageCreated(room: $room) { body kind sender { name } } }"


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Postgres + Redis with two workers, and the embedded default (SQLite, one worker)."""
    keys = {"SERVICE_KEY": f"{OLD_KEY},{NEW_KEY}", "AUTH_JWT_SECRET": SECRET}
    database_url = request.getfixturevalue("database_url") if request.param == "postgres" else ""
    with served_on(request.param, keys, database_url, tmp_path_factory.mktemp("service")) as server:
        yield server


@pytest.fixture
def api(served: Server) -> Iterator[GraphQLClient]:
    client = GraphQLClient(served.url)
    yield client
    client.close()


def ext() -> str:
    return f"host-{uuid.uuid4().hex[:10]}"


def host_token(external_id: str, **extra: object) -> str:
    """The host's JWT for a user (no issuer or audience is configured on this server)."""
    payload = {k: v for k, v in claims(external_id, **extra).items() if k not in ("iss", "aud")}
    return hs256(payload)


def upsert(api: GraphQLClient, *names: str) -> list[dict]:
    users = [{"externalId": ext(), "name": name} for name in names]
    return api.data(UPSERT, {"u": users}, token=NEW_KEY)["upsertUsers"]


def codes(errors: list[dict]) -> list[str]:
    return [error["extensions"]["code"] for error in errors]


def test_users_are_refused_every_service_field(api: GraphQLClient) -> None:
    user = sign_up(api, "Ann")
    [host] = upsert(api, "Hal")
    room = api.data(CREATE, {"n": "r", "e": ext(), "o": host["id"]}, token=OLD_KEY)["createRoom"]["id"]
    calls = [
        (UPSERT, {"u": [{"externalId": ext(), "name": "x"}]}),
        (USER_BY, {"e": host["externalId"]}),
        (ROOM_BY, {"e": "anything"}),
        (ISSUE, {"e": host["externalId"]}),
        (REVOKE, {"e": host["externalId"]}),
        (DELETE, {"e": host["externalId"]}),
        (SYSTEM, {"r": room, "b": "hi"}),
        (CREATE, {"n": "mine", "e": ext()}),
        (CREATE, {"n": "mine", "o": user.id}),
        (CREATE, {"n": "mine", "m": [user.id]}),
    ]
    for query, variables in calls:
        assert api.error_codes(query, variables, token=user.token) == ["FORBIDDEN"], query
        assert api.error_codes(query, variables) == ["UNAUTHENTICATED"], query
        assert api.error_codes(query, variables, token="x" * 48) == ["UNAUTHENTICATED"], query
    # ... and on rooms the user is not in, the service's powers are not theirs.
    for query in (ADD, REMOVE, SET_ROLE, MUTE):
        assert api.error_codes(query, {"r": room, "u": host["id"]}, token=user.token) == ["NOT_FOUND"], query


async def test_the_service_key_works_over_plain_http_only(api: GraphQLClient, served: Server) -> None:
    assert api.data(ME, token=OLD_KEY)["me"]["name"] == "System"
    for protocol in PROTOCOLS:
        ws = await GraphQLWebSocket.open(served.ws_url, protocol)
        await ws.send({"type": "connection_init", "payload": {"authorization": f"Bearer {NEW_KEY}"}})
        if protocol != PROTOCOLS[0]:
            assert (await ws.receive())["type"] == "connection_error"
        assert await ws.close_code() == 4403
    async with await open_sse(served.url, MESSAGE_CREATED, {"room": "1"}, token=NEW_KEY) as stream:
        assert codes(await stream.refused()) == ["UNAUTHENTICATED"]
    async with await open_multipart(served.url, MESSAGE_CREATED, {"room": "1"}, token=NEW_KEY) as multipart:
        [part] = await multipart.payloads(1)
        assert codes(part_errors(part)) == ["UNAUTHENTICATED"]
    response = httpx.post(f"{served.url}/graphql/sse-session", headers={"authorization": f"Bearer {NEW_KEY}"})
    assert response.status_code == 401
    # Never from a cookie: not the SSE session's, not any.
    for cookie in (f"chat_sse_token={NEW_KEY}", f"chat_sse_token=sse.{NEW_KEY}"):
        headers = {"cookie": cookie}
        async with await open_sse(served.url, MESSAGE_CREATED, {"room": "1"}, method="GET", headers=headers) as stream:
            assert codes(await stream.refused()) == ["UNAUTHENTICATED"]
        assert api.data(ME, headers=headers) == {"me": None}


def test_users_upserted_tokens_issued_and_external_ids_shown_to_whom_they_may(api: GraphQLClient) -> None:
    ann_id, bob_id = ext(), ext()
    picture = "https://host.example/ann.png"
    users = [{"externalId": ann_id, "name": "Ann", "avatarUrl": picture}, {"externalId": bob_id, "name": "Bob"}]
    ann, bob = api.data(UPSERT, {"u": users}, token=OLD_KEY)["upsertUsers"]  # either key works
    assert (ann["name"], ann["externalId"], ann["avatar"]) == ("Ann", ann_id, picture)
    assert bob["externalId"] == bob_id
    again = api.data(UPSERT, {"u": [{"externalId": ann_id, "name": "Ann B"}]}, token=NEW_KEY)["upsertUsers"]
    assert again[0]["id"] == ann["id"] and again[0]["name"] == "Ann B"
    assert api.data(USER_BY, {"e": ann_id}, token=NEW_KEY)["userByExternalId"]["id"] == ann["id"]
    assert api.error_codes(USER_BY, {"e": "nobody-" + ext()}, token=NEW_KEY) == ["NOT_FOUND"]
    too_many = [{"externalId": ext(), "name": "x"} for _ in range(101)]
    assert api.error_codes(UPSERT, {"u": too_many}, token=NEW_KEY) == ["BAD_USER_INPUT"]
    twice = [{"externalId": bob_id, "name": "x"}, {"externalId": bob_id, "name": "y"}]
    assert api.error_codes(UPSERT, {"u": twice}, token=NEW_KEY) == ["BAD_USER_INPUT"]
    assert api.error_codes(UPSERT, {"u": [{"externalId": "a\x01b", "name": "x"}]}, token=NEW_KEY) == ["BAD_USER_INPUT"]
    # A token issued for Ann is Ann; she sees her own externalId, not Bob's.
    token = api.data(ISSUE, {"e": ann_id, "t": 600}, token=NEW_KEY)["issueToken"]
    assert api.data(ME, token=token)["me"] == {"id": ann["id"], "name": "Ann B", "externalId": ann_id}
    assert api.error_codes(ISSUE, {"e": ann_id, "t": 5}, token=NEW_KEY) == ["BAD_USER_INPUT"]
    assert api.error_codes(ISSUE, {"e": "nobody-" + ext()}, token=NEW_KEY) == ["NOT_FOUND"]
    room = api.data(CREATE, {"n": "shared", "k": "PUBLIC", "e": ext(), "o": ann["id"], "m": [bob["id"]]}, token=NEW_KEY)
    members = "query($id: ID!) { room(id: $id) { members { id externalId } } }"
    seen = api.data(members, {"id": room["createRoom"]["id"]}, token=token)["room"]["members"]
    assert {m["id"]: m["externalId"] for m in seen} == {ann["id"]: ann_id, bob["id"]: None}
    # The same JWT `sub` is the same user.
    assert api.data(ME, token=host_token(bob_id))["me"]["id"] == bob["id"]


def test_rooms_created_under_external_ids_and_driven_by_the_service(api: GraphQLClient) -> None:
    ann, bob, cy = upsert(api, "Ann", "Bob", "Cy")
    outsider = sign_up(api, "Out")
    room_ext = ext()
    variables = {"n": "Order 42", "k": "PUBLIC", "e": room_ext, "o": ann["id"], "m": [bob["id"]]}
    created = api.data(CREATE, variables, token=NEW_KEY)["createRoom"]
    assert created["externalId"] == room_ext and created["memberCount"] == 2
    roles = {m["user"]["id"]: m["role"] for m in created["memberships"]}
    assert roles == {ann["id"]: "OWNER", bob["id"]: "MEMBER"}
    # Idempotent: the same externalId gives the same room back, unchanged.
    again = api.data(CREATE, {**variables, "n": "other name", "m": [cy["id"]]}, token=NEW_KEY)["createRoom"]
    assert (again["id"], again["name"], again["memberCount"]) == (created["id"], "Order 42", 2)
    found = api.data(ROOM_BY, {"e": room_ext}, token=NEW_KEY)["roomByExternalId"]
    assert found["id"] == created["id"]
    assert api.error_codes(ROOM_BY, {"e": "none-" + ext()}, token=NEW_KEY) == ["NOT_FOUND"]
    # Members see the room's externalId; an outsider of this PUBLIC room does not.
    ann_token = host_token(ann["externalId"])
    assert api.data(ROOM, {"id": created["id"]}, token=ann_token)["room"]["externalId"] == room_ext
    assert api.data(ROOM, {"id": created["id"]}, token=outsider.token)["room"]["externalId"] is None
    # The service acts on a room it is no member of.
    room = created["id"]
    assert api.data(ADD, {"r": room, "u": cy["id"]}, token=NEW_KEY)["addMember"]["memberCount"] == 3
    assert api.data(SET_ROLE, {"r": room, "u": bob["id"]}, token=NEW_KEY)["setRole"]["role"] == "MODERATOR"
    assert api.data(MUTE, {"r": room, "u": cy["id"]}, token=NEW_KEY)["muteMember"]["role"] == "MEMBER"
    assert api.data(UPDATE, {"r": room}, token=NEW_KEY)["updateRoom"]["topic"] == "set by the host"
    assert api.data(REMOVE, {"r": room, "u": cy["id"]}, token=NEW_KEY)["removeMember"] is True
    assert api.data(ROOM, {"id": room}, token=NEW_KEY)["room"]["memberCount"] == 2
    ban = "mutation($r: ID!, $u: ID!) { removeMember(room: $r, user: $u, ban: true) }"
    unban = "mutation($r: ID!, $u: ID!) { unbanMember(room: $r, user: $u) }"
    assert api.data(ban, {"r": room, "u": cy["id"]}, token=NEW_KEY)["removeMember"] is True
    assert api.error_codes(ADD, {"r": room, "u": cy["id"]}, token=NEW_KEY) == ["FORBIDDEN"]  # banned
    assert api.data(unban, {"r": room, "u": cy["id"]}, token=NEW_KEY)["unbanMember"] is True
    assert api.data(ADD, {"r": room, "u": cy["id"]}, token=NEW_KEY)["addMember"]["memberCount"] == 3
    # Unknown users, and a list too long.
    assert api.error_codes(CREATE, {"n": "x", "e": ext(), "o": "999999"}, token=NEW_KEY) == ["NOT_FOUND"]
    long = {"n": "x", "e": ext(), "o": ann["id"], "m": [bob["id"]] * 101}
    assert api.error_codes(CREATE, long, token=NEW_KEY) == ["BAD_USER_INPUT"]
    # openDirect with `users` naming everyone.
    direct = api.data(DIRECT, {"u": [ann["id"], bob["id"], cy["id"]]}, token=NEW_KEY)["openDirect"]
    assert (direct["kind"], direct["memberCount"]) == ("DIRECT", 3)
    assert api.data(DIRECT, {"u": [cy["id"], ann["id"], bob["id"]]}, token=NEW_KEY)["openDirect"]["id"] == direct["id"]
    assert api.error_codes(DIRECT, {"u": [ann["id"]]}, token=NEW_KEY) == ["BAD_USER_INPUT"]


async def test_create_room_by_external_id_twice_at_once_makes_one_room(served: Server) -> None:
    api = GraphQLClient(served.url)
    try:
        [owner] = upsert(api, "Owner")
    finally:
        api.close()
    room_ext = ext()
    variables = {"n": "raced", "e": room_ext, "o": owner["id"]}
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:

        async def create() -> str:
            response = await http.post(
                "/graphql",
                json={"query": CREATE, "variables": variables},
                headers={"authorization": f"Bearer {NEW_KEY}"},
            )
            body = response.json()
            assert "errors" not in body, body
            return body["data"]["createRoom"]["id"]

        for _ in range(3):  # a few rounds: each pair at once, each round its own externalId
            ids = await asyncio.gather(*(create() for _ in range(4)))
            assert len(set(ids)) == 1, ids
            variables = {**variables, "e": ext()}


async def test_system_messages_reach_members_live(api: GraphQLClient, served: Server) -> None:
    ann, bob = upsert(api, "Ann", "Bob")
    room = api.data(CREATE, {"n": "sys", "e": ext(), "o": ann["id"], "m": [bob["id"]]}, token=NEW_KEY)["createRoom"]
    ws = await GraphQLWebSocket.open(served.ws_url, PROTOCOLS[0], host_token(bob["externalId"]))
    try:
        await ws.subscribe("1", KINDED, {"room": room["id"]})
        await ws.barrier()
        posted = api.data(SYSTEM, {"r": room["id"], "b": "Order shipped"}, token=NEW_KEY)["postSystemMessage"]
        assert (posted["kind"], posted["sender"]["name"]) == ("SYSTEM", "System")
        live = (await ws.result("1"))["data"]["messageCreated"]
        assert live == {"body": "Order shipped", "kind": "SYSTEM", "sender": {"name": "System"}}
    finally:
        await ws.close()
    assert api.error_codes(SYSTEM, {"r": "999999", "b": "x"}, token=NEW_KEY) == ["NOT_FOUND"]


async def test_revoke_tokens_ends_a_users_websocket_and_sse_stream(api: GraphQLClient, served: Server) -> None:
    [ann] = upsert(api, "Ann")
    jwt = host_token(ann["externalId"], iat=int(time.time()) - 5)
    issued = api.data(ISSUE, {"e": ann["externalId"]}, token=NEW_KEY)["issueToken"]
    room = api.data(CREATE, {"n": "rev", "e": ext(), "o": ann["id"]}, token=NEW_KEY)["createRoom"]["id"]
    variables = {"room": room}
    ws = await GraphQLWebSocket.open(served.ws_url, PROTOCOLS[0], jwt)
    legacy = await GraphQLWebSocket.open(served.ws_url, PROTOCOLS[1], issued)
    for socket in (ws, legacy):
        await socket.subscribe("1", MESSAGE_CREATED, variables)
        await socket.barrier()
    stream = await open_sse(served.url, MESSAGE_CREATED, variables, token=jwt)
    try:
        api.data(SYSTEM, {"r": room, "b": "before"}, token=NEW_KEY)
        for socket in (ws, legacy):
            assert (await socket.result("1"))["data"]["messageCreated"]["body"] == "before"
        assert [m["body"] for m in await stream.data("messageCreated", 1)] == ["before"]
        assert api.data(REVOKE, {"e": ann["externalId"]}, token=NEW_KEY)["revokeTokens"] >= 2
        for socket in (ws, legacy):
            assert codes((await socket.result("1"))["errors"]) == ["UNAUTHENTICATED"]
        assert codes(await stream.refused()) == ["UNAUTHENTICATED"]
    finally:
        await stream.aclose()
        await ws.close()
        await legacy.close()
    assert api.data(ME, token=jwt) == {"me": None}
    assert api.data(ME, token=issued) == {"me": None}
    assert api.data(ME, token=host_token(ann["externalId"], iat=int(time.time()) + 1))["me"]["id"] == ann["id"]
    assert api.error_codes(REVOKE, {"e": "nobody-" + ext()}, token=NEW_KEY) == ["NOT_FOUND"]


def test_delete_user_with_erase_leaves_tombstones(api: GraphQLClient) -> None:
    ann, bob = upsert(api, "Ann", "Bob")
    room = api.data(CREATE, {"n": "gdpr", "e": ext(), "o": ann["id"], "m": [bob["id"]]}, token=NEW_KEY)
    room_id = room["createRoom"]["id"]
    post = "mutation($r: ID!, $b: String!) { createMessage(room: $r, body: $b) { id } }"
    bob_token = host_token(bob["externalId"])
    api.data(post, {"r": room_id, "b": "my secret"}, token=bob_token)
    api.data(post, {"r": room_id, "b": "kept"}, token=host_token(ann["externalId"]))
    assert api.data(DELETE, {"e": bob["externalId"], "erase": True}, token=NEW_KEY) == {"deleteUser": True}
    assert api.error_codes(USER_BY, {"e": bob["externalId"]}, token=NEW_KEY) == ["NOT_FOUND"]
    assert api.data(ME, token=bob_token) == {"me": None}  # issued before the delete
    nodes = [e["node"] for e in api.data(MESSAGES, {"id": room_id}, token=NEW_KEY)["room"]["messages"]["edges"]]
    assert [(n["body"], n["deleted"], n["sender"]["name"]) for n in nodes] == [
        ("kept", False, "Ann"),
        ("", True, "Deleted user"),
    ]
    assert api.data(ROOM, {"id": room_id}, token=NEW_KEY)["room"]["memberCount"] == 1
    assert api.error_codes(DELETE, {"e": bob["externalId"]}, token=NEW_KEY) == ["NOT_FOUND"]
    # The host may bring a new user under the same id: its tokens issued after are that new user.
    fresh = api.data(ME, token=host_token(bob["externalId"], iat=int(time.time()) + 1))["me"]
    assert fresh is not None and fresh["id"] != bob["id"] and fresh["externalId"] == bob["externalId"]
