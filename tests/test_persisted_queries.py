"""Automatic persisted queries, Apollo's protocol: an unknown hash is PERSISTED_QUERY_NOT_FOUND
(HTTP 200, so Apollo's link sends the text); the text with its hash registers it once it validated;
a hash that is not the text's is refused (400) and registers nothing; GET with the hash only
works. Only a signed-in user's request registers (tests/test_abuse_documents.py: an anonymous one
is served, not kept). The store is Redis, shared by every worker and server on it, or the process's memory on
the embedded default; either way bounded, the oldest going first."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.graphql import GraphQLClient, create_room, post_message, sign_up
from tests.support.httpstream import open_sse
from tests.support.processes import SHARED_REDIS_URL, Server, migrate

NOT_FOUND = [{"message": "PersistedQueryNotFound", "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"}}]
JSON = {"accept": "application/json"}


def sha256(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()


def persisted(digest: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": digest}}


def unique_query() -> str:
    """A document no other test (nor an earlier run on the same Redis) registered."""
    return f"query Q{uuid.uuid4().hex} {{ me {{ id name }} }}"


def post(
    server: Server,
    query: str | None,
    digest: str,
    variables: dict[str, Any] | None = None,
    token: str | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {"variables": variables or {}, "extensions": persisted(digest)}
    if query is not None:
        body["query"] = query
    headers = {**JSON, **({"authorization": f"Bearer {token}"} if token else {})}
    return httpx.post(f"{server.url}/graphql", json=body, headers=headers)


def get(
    server: Server, digest: str, variables: dict[str, Any] | None = None, token: str | None = None
) -> httpx.Response:
    """What Apollo's link sends with `useGETForHashedQueries`: no `query` at all."""
    params = {"variables": compact(variables or {}), "extensions": compact(persisted(digest))}
    headers = {**JSON, **({"authorization": f"Bearer {token}"} if token else {})}
    return httpx.get(f"{server.url}/graphql", params=params, headers=headers)


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def assert_not_found(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["errors"] == NOT_FOUND, body
    assert body.get("data") is None


def token_on(server: Server) -> str:
    """A signed-in user of `server`: registering a persisted query takes one."""
    client = GraphQLClient(server.url)
    try:
        return sign_up(client, "Registrar").token
    finally:
        client.close()


def registered(server: Server, query: str) -> bool:
    response = post(server, None, sha256(query))
    assert response.status_code == 200, response.text
    body = response.json()
    if body.get("errors") == NOT_FOUND:
        return False
    assert body == {"data": {"me": None}}, body
    return True


@pytest.fixture
def api(server: Server) -> Iterator[GraphQLClient]:
    client = GraphQLClient(server.url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def sibling(database_url: str, channel_prefix: str) -> Iterator[Server]:
    """Another server (another dyno) on the same database and Redis as `server`."""
    env = {"DATABASE_URL": database_url, "REDIS_URL": SHARED_REDIS_URL, "CHANNEL_PREFIX": channel_prefix}
    server = Server(env=env, workers=1).start()
    yield server
    server.stop()


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_an_unknown_hash_is_not_found(any_server: Server, method: str) -> None:
    digest = sha256(unique_query())
    assert_not_found(post(any_server, None, digest) if method == "POST" else get(any_server, digest))


def test_the_text_registers_then_the_hash_alone_runs_over_post_and_get(server: Server, api: GraphQLClient) -> None:
    ann = sign_up(api, "Ann")
    room = create_room(api, ann, "persisted")
    query = f"query Room{uuid.uuid4().hex}($id: ID!) {{ room(id: $id) {{ id name }} }}"
    digest = sha256(query)
    assert_not_found(post(server, None, digest, {"id": room}, ann.token))

    first = post(server, query, digest, {"id": room}, ann.token)
    assert first.status_code == 200
    assert first.json() == {"data": {"room": {"id": room, "name": "persisted"}}}
    for _ in range(4):  # fresh connections: either worker
        by_post = post(server, None, digest, {"id": room}, ann.token)
        assert by_post.json() == {"data": {"room": {"id": room, "name": "persisted"}}}
        by_get = get(server, digest, {"id": room}, ann.token)
        assert by_get.status_code == 200
        assert by_get.json() == {"data": {"room": {"id": room, "name": "persisted"}}}
    # The stored document takes any variables.
    other = create_room(api, ann, "another")
    assert get(server, digest, {"id": other}, ann.token).json() == {"data": {"room": {"id": other, "name": "another"}}}


def test_a_persisted_mutation_runs_over_post_but_not_get(server: Server, api: GraphQLClient) -> None:
    ann = sign_up(api, "Ann")
    query = f'mutation M{uuid.uuid4().hex} {{ createRoom(name: "by hash") {{ name }} }}'
    digest = sha256(query)
    assert post(server, query, digest, token=ann.token).json() == {"data": {"createRoom": {"name": "by hash"}}}
    assert post(server, None, digest, token=ann.token).json() == {"data": {"createRoom": {"name": "by hash"}}}
    refused = get(server, digest, token=ann.token)
    assert refused.status_code == 405
    assert refused.headers["allow"] == "POST"
    assert api.data("{ rooms { name } }", token=ann.token) == {"rooms": [{"name": "by hash"}] * 2}


def test_a_hash_that_is_not_the_texts_is_refused_and_registers_nothing(server: Server) -> None:
    query, claimed = unique_query(), sha256(unique_query())
    response = post(server, query, claimed)
    assert response.status_code == 400, response.text
    assert [error["extensions"]["code"] for error in response.json()["errors"]] == ["PERSISTED_QUERY_HASH_MISMATCH"]
    assert_not_found(post(server, None, claimed))
    assert not registered(server, query)


@pytest.mark.parametrize(
    "query",
    [
        "query Broken{0} {{ me {{ id ",  # does not parse
        "query Invalid{0} {{ me {{ nothing }} }}",  # does not validate
        "query Missing{0}($id: ID!) {{ me {{ id }} }}",  # unused variable: does not validate
    ],
)
def test_a_document_that_does_not_validate_is_not_registered(any_server: Server, query: str) -> None:
    text = query.format(uuid.uuid4().hex)
    digest = sha256(text)
    response = post(any_server, text, digest)
    # (graphql-core's "Variable '$id' is never used" is coded BAD_USER_INPUT by errors.py, as before.)
    assert response.json()["errors"][0]["extensions"]["code"] in (
        "GRAPHQL_PARSE_FAILED",
        "GRAPHQL_VALIDATION_FAILED",
        "BAD_USER_INPUT",
    )
    assert_not_found(post(any_server, None, digest))
    assert_not_found(get(any_server, digest))


def test_a_hash_registered_on_one_server_works_on_another_on_the_same_redis(server: Server, sibling: Server) -> None:
    here, there = unique_query(), unique_query()
    token = token_on(server)  # the same database: valid on both
    assert post(server, here, sha256(here), token=token).json()["data"]["me"]["name"] == "Registrar"
    assert post(sibling, there, sha256(there), token=token).json()["data"]["me"]["name"] == "Registrar"
    assert registered(sibling, here)
    assert get(sibling, sha256(here)).json() == {"data": {"me": None}}
    assert registered(server, there)
    assert get(server, sha256(there)).json() == {"data": {"me": None}}


def test_the_embedded_default_keeps_them_in_memory(sqlite_server: Server) -> None:
    query = unique_query()
    assert_not_found(get(sqlite_server, sha256(query)))
    token = token_on(sqlite_server)
    assert post(sqlite_server, query, sha256(query), token=token).json()["data"]["me"]["name"] == "Registrar"
    assert registered(sqlite_server, query)
    assert get(sqlite_server, sha256(query)).json() == {"data": {"me": None}}


@pytest.fixture(params=["memory", "redis"])
def bounded(
    request: pytest.FixtureRequest, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One worker keeping at most 3 documents: in its memory, or in Redis (a prefix of its own)."""
    if request.param == "memory":
        path = tmp_path_factory.mktemp("apq") / "chat.db"
        env = {"DATABASE_URL": f"sqlite:///{path}", "REDIS_URL": ""}
        migrate(env)
    else:
        prefix = f"test-{uuid.uuid4().hex[:10]}:"
        env = {"DATABASE_URL": database_url, "REDIS_URL": SHARED_REDIS_URL, "CHANNEL_PREFIX": prefix}
    server = Server(env={**env, "PERSISTED_QUERIES_MAX": "3"}, workers=1).start()
    yield server
    server.stop()


def test_the_store_is_bounded_and_the_oldest_go_first(bounded: Server) -> None:
    queries = [unique_query() for _ in range(5)]
    token = token_on(bounded)
    for query in queries:
        assert post(bounded, query, sha256(query), token=token).json()["data"]["me"]["name"] == "Registrar"
    # Checked oldest first: a lookup that finds one makes it the most recent.
    assert [registered(bounded, query) for query in queries] == [False, False, True, True, True]
    # Registering again is how a client gets an evicted one back.
    assert post(bounded, queries[0], sha256(queries[0]), token=token).json()["data"]["me"]["name"] == "Registrar"
    assert registered(bounded, queries[0])


async def test_a_persisted_document_streams_over_sse_by_hash(server: Server, api: GraphQLClient) -> None:
    """An EventSource can carry a persisted subscription in its URL: `extensions` with the hash only."""
    ann = sign_up(api, "Ann")
    room = create_room(api, ann)
    anchor = post_message(api, ann, room, "anchor")
    query = (
        f"subscription S{uuid.uuid4().hex}($room: ID!, $after: ID) "
        "{ messageCreated(room: $room, after: $after) { body } }"
    )
    variables = {"room": room, "after": anchor["id"]}
    extensions = persisted(sha256(query))
    unknown = await open_sse(server.url, None, variables, token=ann.token, method="GET", extensions=extensions)
    async with unknown:
        assert (await unknown.json())["errors"] == NOT_FOUND
    registering = await open_sse(server.url, query, variables, token=ann.token, extensions=extensions)
    async with registering:
        post_message(api, ann, room, "one")
        assert await registering.data("messageCreated", 1) == [{"body": "one"}]
    by_hash = await open_sse(server.url, None, variables, token=ann.token, method="GET", extensions=extensions)
    async with by_hash:
        assert await by_hash.data("messageCreated", 1) == [{"body": "one"}]
        post_message(api, ann, room, "two")
        assert await by_hash.data("messageCreated", 1) == [{"body": "two"}]
