"""Property-based fuzzing of the running server: whatever arrives, no 5xx, no traceback or
INTERNAL_SERVER_ERROR in any answer, protocol-conformant WebSocket closes, and the server is
healthy afterwards."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.support.graphql import GraphQLClient, create_room, sign_up
from tests.support.processes import Server

FIELDS = ["me", "rooms", "room", "id", "name", "avatar", "members", "messages", "edges", "node", "cursor",
          "pageInfo", "hasNextPage", "endCursor", "body", "sender", "createdAt", "seq", "__typename",
          "__schema", "types", "signUp", "logIn", "logOut", "createRoom", "joinRoom", "leaveRoom",
          "createMessage", "messageCreated", "token", "user", "createInvite", "joinByInvite", "revokeInvite",
          "code", "usesLeft", "externalId", "kind", "upsertUsers", "issueToken", "revokeTokens",
          "postSystemMessage", "deleteUser", "roomByExternalId", "userByExternalId", "nope"]  # fmt: skip
PUNCTUATION = ["{", "}", "(", ")", ":", "$", "!", "...", "@", "[", "]", "=", ",", "|", '"', '"""', "#"]
KEYWORDS = ["query", "mutation", "subscription", "fragment", "on", "true", "false", "null", "Int", "ID"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@st.composite
def selections(draw: st.DrawFn, depth: int = 0) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        name = draw(st.sampled_from(FIELDS))
        if draw(st.booleans()):
            name = f"{draw(st.sampled_from(['a', 'b', 'x1']))}: {name}"
        if draw(st.integers(0, 3)) == 0:
            arg = draw(st.sampled_from(["id", "room", "first", "after", "size", "body", "name", "email"]))
            values = ['"1"', "1", "-1", "999999999999", '"9223372036854775807"', "9223372036854775808", '"x"', "$v"]
            value = draw(st.sampled_from([*values, "null", "[1]", "{a: 1}"]))
            name += f"({arg}: {value})"
        if depth < 4 and draw(st.booleans()):
            name += " { " + draw(selections(depth + 1)) + " }"
        parts.append(name)
    return " ".join(parts)


@st.composite
def documents(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["structured", "tokens", "text"]))
    if kind == "structured":
        operation = draw(st.sampled_from(["", "query ", "mutation ", "query Q($v: ID) ", "fragment F on User "]))
        return operation + "{ " + draw(selections()) + " }"
    if kind == "tokens":
        tokens = st.sampled_from(FIELDS + PUNCTUATION + KEYWORDS)
        return " ".join(draw(st.lists(tokens, max_size=40)))
    return draw(st.text(max_size=200))


@pytest.fixture(scope="module")
def fuzz_client(server: Server) -> GraphQLClient:
    return GraphQLClient(server.url)


@pytest.fixture(scope="module")
def token(fuzz_client: GraphQLClient) -> str:
    account = sign_up(fuzz_client, "Fuzzer")
    create_room(fuzz_client, account, "fuzz")
    return account.token


def assert_clean(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    assert "Traceback" not in response.text
    assert "INTERNAL_SERVER_ERROR" not in response.text, response.text
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        for error in body.get("errors") or []:
            assert error["extensions"]["code"], error


def assert_healthy(server: Server) -> None:
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
    assert httpx.post(f"{server.url}/graphql", json={"query": "{ me { id } }"}).json() == {"data": {"me": None}}


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(
    document=documents(), variables=st.one_of(st.none(), st.dictionaries(st.sampled_from(["v", "r", "x"]), json_values))
)
def test_graphql_documents_and_variables(
    fuzz_client: GraphQLClient, token: str, document: str, variables: dict[str, Any] | None
) -> None:
    response = fuzz_client.http.post(
        "/graphql",
        json={"query": document, "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert_clean(response)


@FUZZ
@given(payload=json_values)
def test_arbitrary_json_bodies(fuzz_client: GraphQLClient, payload: Any) -> None:
    assert_clean(fuzz_client.http.post("/graphql", json=payload))


@FUZZ
@given(raw=st.binary(max_size=300), content_type=st.sampled_from(["application/json", "multipart/form-data", "x/y"]))
def test_arbitrary_bytes(fuzz_client: GraphQLClient, raw: bytes, content_type: str) -> None:
    assert_clean(fuzz_client.http.post("/graphql", content=raw, headers={"content-type": content_type}))


frames = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    json_values.map(json.dumps),
    st.builds(
        lambda kind, op_id, payload: json.dumps({"type": kind, "id": op_id, "payload": payload}),
        st.sampled_from(["subscribe", "start", "stop", "complete", "ping", "pong", "connection_init", "x", ""]),
        st.one_of(st.none(), st.text(max_size=5), st.integers()),
        st.one_of(json_values, st.builds(lambda q: {"query": q}, documents())),
    ),
)

# What either protocol may answer with when a client misbehaves.
ALLOWED_CLOSES = {1000, 1002, 1003, 1007, 1009, 1011, 4400, 4401, 4403, 4408, 4409, 4429}


@FUZZ
@given(protocol=st.sampled_from(["graphql-transport-ws", "graphql-ws"]), sequence=st.lists(frames, max_size=5))
def test_websocket_frames(server: Server, token: str, protocol: str, sequence: list[str | bytes]) -> None:
    with connect(server.ws_url, subprotocols=[protocol], open_timeout=5, close_timeout=2) as ws:  # type: ignore[list-item]
        ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}))
        assert "connection_ack" in str(ws.recv(timeout=5))
        try:
            for frame in sequence:
                ws.send(frame)
            ws.send(json.dumps({"type": "ping"} if protocol == "graphql-transport-ws" else {"type": "stop", "id": "z"}))
            while True:
                message = ws.recv(timeout=0.3)
                assert "Traceback" not in str(message)
                assert "INTERNAL_SERVER_ERROR" not in str(message), message
        except TimeoutError:
            pass  # the connection is still open and quiet: fine
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code in ALLOWED_CLOSES, closed
    assert_healthy(server)
