"""Errors carry `extensions.code`; an unexpected one is logged with its traceback and answered
with a generic message; the server keeps serving. Also GET queries, the explorer, /healthz."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support.graphql import GraphQLClient, create_room, sign_up
from tests.support.processes import PrivatePostgres, Server, migrate


def test_request_errors_have_codes(client: GraphQLClient) -> None:
    assert client.error_codes("{ me { id ") == ["GRAPHQL_PARSE_FAILED"]
    assert client.error_codes("{ nothing }") == ["GRAPHQL_VALIDATION_FAILED"]
    assert client.error_codes("query($id: ID!) { room(id: $id) { id } }", {}) == ["BAD_USER_INPUT"]
    assert client.error_codes("{ room(id: 1) { id } }") == ["UNAUTHENTICATED"]


def test_queries_work_over_get_and_the_explorer_is_served(any_server: Server) -> None:
    response = httpx.get(f"{any_server.url}/graphql", params={"query": "{ me { id } }"})
    assert response.json() == {"data": {"me": None}}
    refused = httpx.get(f"{any_server.url}/graphql", params={"query": 'mutation { createRoom(name: "x") { id } }'})
    assert refused.status_code == 405
    explorer = httpx.get(f"{any_server.url}/graphql", headers={"accept": "text/html"})
    assert explorer.status_code == 200 and "<html" in explorer.text.lower()
    health = httpx.get(f"{any_server.url}/healthz").json()
    assert health["status"] == "ok" and health["viewer_cache"]["live"] is True
    assert httpx.get(f"{any_server.url}/readyz").status_code == 200


@pytest.fixture
def fragile() -> Iterator[tuple[PrivatePostgres, Server]]:
    """A server on a Postgres of its own, which the test stops and starts again."""
    postgres = PrivatePostgres().start()
    env = {"DATABASE_URL": postgres.url, "REDIS_URL": "", "DATABASE_ACQUIRE_TIMEOUT": "2"}
    try:
        migrate(env)
        server = Server(env=env, workers=1).start()
        try:
            yield postgres, server
        finally:
            server.stop()
    finally:
        postgres.remove()


def test_an_unexpected_error_is_generic_to_the_client_and_logged_in_full(
    fragile: tuple[PrivatePostgres, Server],
) -> None:
    """A missing table is a bug, not an outage (that is SERVICE_UNAVAILABLE: test_database_outage)."""
    postgres, server = fragile
    client = GraphQLClient(server.url)
    ann = sign_up(client, "Ann")
    room = create_room(client, ann, f"room-{uuid.uuid4().hex[:6]}")
    postgres.sql("ALTER TABLE messages RENAME TO messages_elsewhere")
    body = client.post('mutation($r: ID!) { createMessage(room: $r, body: "lost?") { id } }', {"r": room}, ann.token)
    assert body.get("data") is None
    error = body["errors"][0]
    assert error["message"] == "Internal server error."
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR"}
    text = str(body).lower()
    for leak in ("traceback", "asyncpg", "select", "insert", "messages_elsewhere", "postgres", "relation"):
        assert leak not in text
    assert "Traceback" in server.log() and "UndefinedTableError" in server.log()
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert httpx.get(f"{server.url}/readyz").status_code == 200

    postgres.sql("ALTER TABLE messages_elsewhere RENAME TO messages")
    posted = client.data('mutation($r: ID!) { createMessage(room: $r, body: "kept") { body } }', {"r": room}, ann.token)
    assert posted == {"createMessage": {"body": "kept"}}
