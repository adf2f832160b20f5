"""Hostile input over HTTP gets a clear, cheap refusal, and the server keeps serving."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support.graphql import GraphQLClient, create_room, post_message, sign_up
from tests.support.processes import SHARED_REDIS_URL, Server

ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module")
def limited(database_url: str) -> Iterator[Server]:
    """A server with small limits, introspection and explorer off, CORS for one origin."""
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": SHARED_REDIS_URL,
        "CHANNEL_PREFIX": f"test-{uuid.uuid4().hex[:10]}:",
        "MAX_BODY_BYTES": "4000",
        # Windows of an hour (the convention here): a burst never straddles a window's end.
        "RATE_LIMIT_MESSAGES": "5/3600",
        "RATE_LIMIT_AUTH": "4/3600",
        "INTROSPECTION": "false",
        "EXPLORER": "false",
        "CORS_ORIGINS": ORIGIN,
        "QUERY_MAX_DEPTH": "6",
        "QUERY_MAX_ALIASES": "5",
        "QUERY_MAX_FIELDS": "40",
        "QUERY_MAX_COST": "500",
    }
    server = Server(env=env, workers=2).start()
    yield server
    server.stop()


@pytest.fixture
def api(limited: Server) -> Iterator[GraphQLClient]:
    client = GraphQLClient(limited.url)
    yield client
    client.close()


def assert_healthy(server: Server) -> None:
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    body = httpx.post(f"{server.url}/graphql", json={"query": "{ me { id } }"}).json()
    assert body == {"data": {"me": None}}


def forwarded(address: str) -> dict[str, str]:
    """Heroku's router names the client in X-Forwarded-For; the server trusts it."""
    return {"X-Forwarded-For": address}


def test_declared_oversized_body_is_refused_with_413(limited: Server) -> None:
    response = httpx.post(
        f"{limited.url}/graphql", content=b"{" + b" " * 5000 + b"}", headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
    assert_healthy(limited)


def test_streamed_oversized_body_is_refused_before_it_ends(limited: Server) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(1000):  # would be 1 MB; the server stops reading long before
            sent += 1000
            yield b" " * 1000

    try:
        response = httpx.post(f"{limited.url}/graphql", content=chunks(), headers={"content-type": "application/json"})
        assert response.status_code == 413
    except httpx.HTTPError:
        pass  # the server may close the connection while the client is still sending
    assert sent < 1_000_000
    assert_healthy(limited)


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b'{"query": "{ me { id } }"}', "text/plain", 415),
        (b"[1, 2]", "application/json", 400),
    ],
)
def test_malformed_requests_get_4xx_with_a_json_error(
    limited: Server, content: bytes, content_type: str, status: int
) -> None:
    response = httpx.post(f"{limited.url}/graphql", content=content, headers={"content-type": content_type})
    assert response.status_code == status
    error = response.json()["errors"][0]
    assert error["message"]
    assert "Traceback" not in response.text
    assert_healthy(limited)


def test_mutations_are_refused_over_get(limited: Server) -> None:
    response = httpx.get(f"{limited.url}/graphql", params={"query": "mutation { logOut }"})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["errors"][0]["extensions"]["code"] == "METHOD_NOT_ALLOWED"
    query = httpx.get(f"{limited.url}/graphql", params={"query": "{ me { id } }"})
    assert query.json() == {"data": {"me": None}}


@pytest.mark.parametrize(
    ("document", "code", "words"),
    [
        (
            "{ rooms { messages { edges { node { room { messages { edges { node { id } } } } } } } } }",
            "QUERY_TOO_COMPLEX",
            "deeper than 6",
        ),
        ("{ " + " ".join(f"a{i}: me {{ id }}" for i in range(6)) + " }", "QUERY_TOO_COMPLEX", "aliases"),
        ("{ me { " + " ".join(["id name"] * 25) + " } }", "QUERY_TOO_COMPLEX", "more than 40 fields"),
        (
            "{ rooms { messages(first: 100) { edges { node { id sender { name } room { name } } } } } }",
            "QUERY_TOO_COMPLEX",
            "maximum cost",
        ),
    ],
)
def test_hostile_documents_are_refused_before_any_resolver_runs(
    api: GraphQLClient, document: str, code: str, words: str
) -> None:
    alice = sign_up(api, "Alice", headers=forwarded("10.9.0.1"))
    body = api.post(document, token=alice.token)
    assert "data" not in body or body["data"] is None, body
    assert body["errors"][0]["extensions"]["code"] == code
    assert words in body["errors"][0]["message"]


def test_cost_reads_the_variables(api: GraphQLClient) -> None:
    alice = sign_up(api, "Alice", headers=forwarded("10.9.0.2"))
    query = (
        "query($n: Int) { rooms(first: 1) { messages(first: $n) "
        "{ edges { node { id sender { name } room { name } } } } } }"
    )
    refused = api.post(query, {"n": 100}, token=alice.token)
    assert refused["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    assert api.data(query, {"n": 5}, token=alice.token) == {"rooms": []}


def test_introspection_and_explorer_can_be_switched_off(limited: Server, api: GraphQLClient) -> None:
    body = api.post("{ __schema { types { name } } }")
    assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "introspection" in body["errors"][0]["message"].lower()
    explorer = httpx.get(f"{limited.url}/graphql", headers={"accept": "text/html"})
    assert explorer.status_code == 405


def test_cors_allows_the_configured_origin_only(limited: Server) -> None:
    allowed = httpx.options(
        f"{limited.url}/graphql",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    other = httpx.options(
        f"{limited.url}/graphql",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers


def test_messages_are_rate_limited_per_user_across_workers(api: GraphQLClient) -> None:
    alice = sign_up(api, "Alice", headers=forwarded("10.9.0.3"))
    bob = sign_up(api, "Bob", headers=forwarded("10.9.0.3"))
    room = create_room(api, alice)
    for i in range(5):  # fresh connections: the requests spread over both workers
        post_message(api, alice, room, f"message {i}")
    body = api.post(
        'mutation($r: ID!) { createMessage(room: $r, body: "one too many") { id } }', {"r": room}, token=alice.token
    )
    error = body["errors"][0]
    assert error["extensions"]["code"] == "RATE_LIMITED"
    assert 1 <= error["extensions"]["retryAfter"] <= 3600  # within the window
    api.data("mutation($r: ID!) { joinRoom(room: $r) { id } }", {"r": room}, token=bob.token)
    assert post_message(api, bob, room, "another user is not limited")["seq"] == 6


def test_sign_up_and_log_in_are_rate_limited_per_client_address(api: GraphQLClient) -> None:
    address = forwarded("10.9.1.1")
    account = sign_up(api, "Carol", headers=address)
    login = "mutation($e: String!, $p: String!) { logIn(email: $e, password: $p) { token } }"
    codes = []
    for _ in range(4):
        body = api.post(login, {"e": account.email, "p": "wrong password!"}, headers=address)
        codes.append(body["errors"][0]["extensions"]["code"])
    assert codes[:3] == ["UNAUTHENTICATED"] * 3
    assert codes[3] == "RATE_LIMITED"
    # Another client address still gets through, with the right password.
    other = api.post(login, {"e": account.email, "p": account.password}, headers=forwarded("10.9.1.2"))
    assert other["data"]["logIn"]["token"]


def test_logs_hold_no_passwords_tokens_or_message_bodies(limited: Server, api: GraphQLClient) -> None:
    secret_body = f"body-{uuid.uuid4().hex}"
    account = sign_up(api, "Dave", headers=forwarded("10.9.2.1"))
    room = create_room(api, account)
    post_message(api, account, room, secret_body)
    api.post(
        "mutation($e: String!, $p: String!) { logIn(email: $e, password: $p) { token } }",
        {"e": account.email, "p": "not-the-password-xyz"},
        headers=forwarded("10.9.2.1"),
    )
    httpx.get(
        f"{limited.url}/graphql",
        params={"query": f'mutation {{ logIn(email: "x", password: "{secret_body}") {{ token }} }}'},
    )
    api.post(f'{{ me {{ id }} }} {{ "{secret_body}" }}', token=account.token)  # a syntax error echoing the body
    log = limited.log()
    assert "POST /graphql" in log
    for secret in (account.password, "not-the-password-xyz", account.token, secret_body):
        assert secret not in log
    assert not re.search(r"password[^\n]*correct horse", log)
