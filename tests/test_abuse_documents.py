"""Issue 24, documents: every document is measured before it runs, introspection included, and
each attack is sent as an attacker sends it (raw POST bodies and GET URLs, raw WebSocket
messages) to a real gunicorn on Postgres and Redis.

- Shape and cost limits apply inside `__schema`/`__type`: the issue's bombs are refused with
  QUERY_TOO_COMPLEX in well under a second, over POST and GET, while the standard introspection
  query (what GraphiQL sends) works under the default limits.
- Lists cost by `first`, and a list without one by its maximum: the issue's 23 aliases of
  `rooms { events(first: 100) { ... } }` are refused; every document of the web client passes.
- A subscription has its own, lower cost limit.
- A query text over MAX_QUERY_BYTES is refused before parsing on every transport.
- A response over MAX_RESPONSE_BYTES is replaced by a RESPONSE_TOO_LARGE error.
- Only a signed-in user registers a persisted query; the stores are bounded in bytes.
"""

from __future__ import annotations

import hashlib
import json
import string
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from graphql import get_introspection_query
from redis import Redis

from core.settings import load
from tests.support.graphql import GraphQLClient, create_room, sign_up
from tests.support.httpstream import open_multipart, open_sse
from tests.support.processes import ROOT, SHARED_REDIS_URL, Server, migrate
from tests.support.wsclient import GraphQLWebSocket

JSON = {"content-type": "application/json", "accept": "application/json"}
TOO_COMPLEX = "QUERY_TOO_COMPLEX"


def fragment_bomb(aliases: int, levels: int = 6) -> str:
    """The issue's document: aliased introspection fields nested through fragments, `aliases`
    a level (two: about 400 bytes, 1.1 MB answered in 3.6 s before; three: 13 MB and 40 s)."""
    names = string.ascii_uppercase
    parts = ["query{__schema{types{...A}}}"]
    for level in range(levels):
        inner = f"...{names[level + 1]}" if level + 1 < levels else "name"
        fields = "".join(f"{string.ascii_lowercase[i]}:fields{{type{{{inner}}}}}" for i in range(aliases))
        parts.append(f"fragment {names[level]} on __Type{{{fields}}}")
    return "".join(parts)


ALIASED_SCHEMA = "{" + " ".join(f"a{i}: __schema {{ queryType {{ name }} }}" for i in range(150)) + "}"
# Within every shape limit (150 fields, 30 aliases, depth 6), but its answer holds ~15,000 values.
WIDE_INTROSPECTION = (
    "{" + " ".join(f"a{i}: __schema {{ types {{ name fields {{ name args {{ name }} }} }} }}" for i in range(30)) + "}"
)
LIST_ATTACK = "{" + " ".join(f"a{i}: rooms {{ events(first: 100) {{ edges {{ cursor }} }} }}" for i in range(23)) + "}"


def codes(body: dict) -> list[str]:
    return [error.get("extensions", {}).get("code") for error in body.get("errors") or []]


def send(server: Server, method: str, query: str, token: str | None = None) -> tuple[httpx.Response, float]:
    """The raw request and how long the server took to answer it."""
    headers = {**JSON, **({"authorization": f"Bearer {token}"} if token else {})}
    started = time.perf_counter()
    if method == "POST":
        response = httpx.post(f"{server.url}/graphql", content=json.dumps({"query": query}), headers=headers)
    else:
        response = httpx.get(f"{server.url}/graphql", params={"query": query}, headers=headers)
    return response, time.perf_counter() - started


@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize(
    "document",
    [ALIASED_SCHEMA, fragment_bomb(2), fragment_bomb(3), WIDE_INTROSPECTION],
    ids=["150-aliased-schemas", "fragments-2-a-level", "fragments-3-a-level", "wide-within-shape"],
)
def test_introspection_bombs_are_refused_quickly(server: Server, method: str, document: str) -> None:
    response, elapsed = send(server, method, document)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body.get("data") is None, str(body)[:300]
    assert TOO_COMPLEX in codes(body), body
    assert elapsed < 1.0, elapsed
    # The worker is free: the next request is answered at once.
    assert send(server, "POST", "{ __typename }")[0].json() == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize(
    "options",
    [
        {},
        {
            "specified_by_url": True,
            "directive_is_repeatable": True,
            "schema_description": True,
            "input_value_deprecation": True,
            "one_of": True,
        },
    ],
    ids=["default", "every-option"],
)
def test_the_standard_introspection_query_works_under_the_default_limits(server: Server, options: dict) -> None:
    response, _ = send(server, "POST", get_introspection_query(**options))
    body = response.json()
    assert "errors" not in body, body
    names = {named["name"] for named in body["data"]["__schema"]["types"]}
    assert {"Query", "Room", "Message", "__Schema"} <= names


def test_the_explorer_page_loads_under_the_default_settings(server: Server) -> None:
    page = httpx.get(f"{server.url}/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()


def test_a_list_without_first_counts_as_its_maximum_and_the_issues_attack_is_refused(server: Server) -> None:
    with_account = GraphQLClient(server.url)
    try:
        ann = sign_up(with_account, "Ann")
        for name in ("one", "two"):
            create_room(with_account, ann, name)
        response, elapsed = send(server, "POST", LIST_ATTACK, ann.token)
        body = response.json()
        assert body.get("data") is None and codes(body) == [TOO_COMPLEX], body
        assert "maximum cost of 20000" in body["errors"][0]["message"]
        assert elapsed < 1.0
        # One alias with explicit, small pages is an ordinary request.
        small = with_account.data("{ rooms(first: 2) { events(first: 5) { edges { cursor } } } }", token=ann.token)
        assert len(small["rooms"]) == 2
    finally:
        with_account.close()


def web_client_operations() -> list[str]:
    """Each operation of web/src/operations.graphql, with the fragments it uses."""
    lines = (ROOT / "web" / "src" / "operations.graphql").read_text().splitlines()
    text = "\n".join(line for line in lines if not line.startswith("#"))
    blocks = [block.strip() for block in text.split("\n\n") if block.strip()]
    fragments = [block for block in blocks if block.startswith("fragment")]
    operations = [block for block in blocks if not block.startswith("fragment")]
    return [
        operation + "\n" + "\n".join(f for f in fragments if f"...{f.split()[1]}" in operation)
        for operation in operations
    ]


def test_every_web_client_document_is_within_the_default_limits(server: Server) -> None:
    """Validated by the server as sent (the variables' values do not matter to the limits: an
    absent `first` already counts as its maximum); refused only for what the request lacks."""
    operations = web_client_operations()
    source = (ROOT / "web" / "src" / "operations.graphql").read_text()
    assert len(operations) == sum(source.count(f"\n{kind} ") for kind in ("query", "mutation", "subscription")) + 1
    for operation in operations:
        response, _ = send(server, "POST", operation)
        assert TOO_COMPLEX not in codes(response.json()), (operation, response.json())


@pytest.fixture(scope="module")
def tight(database_url: str) -> Iterator[Server]:
    """Small documents and responses, a subscription cost limit the web client's fits under."""
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": SHARED_REDIS_URL,
        "CHANNEL_PREFIX": f"test-{uuid.uuid4().hex[:10]}:",
        "MAX_QUERY_BYTES": "2048",
        "MAX_RESPONSE_BYTES": "2000",
        "QUERY_MAX_SUBSCRIPTION_COST": "100",
    }
    server = Server(env=env, workers=1).start()
    yield server
    server.stop()


def padded(size: int) -> str:
    """A valid document padded with a comment to `size` bytes: the issue's cache filler."""
    head = "{ __typename }\n#"
    return head + "x" * (size - len(head))


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_a_query_text_over_the_limit_is_refused_before_parsing_over_http(tight: Server, method: str) -> None:
    body = send(tight, method, padded(2049))[0].json()
    assert codes(body) == ["QUERY_TOO_LARGE"], body
    assert "2048 bytes" in body["errors"][0]["message"]
    # Multi-byte characters count as their UTF-8 bytes: 1,000 of them are 3,000 bytes.
    assert codes(send(tight, method, "{ __typename } #" + "€" * 1000)[0].json()) == ["QUERY_TOO_LARGE"]
    assert send(tight, method, padded(2048))[0].json() == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_a_query_text_over_the_limit_is_refused_over_both_websocket_protocols(
    tight: Server, protocol: str
) -> None:
    client = GraphQLClient(tight.url)
    try:
        token = sign_up(client, "Ann").token
    finally:
        client.close()
    ws = await GraphQLWebSocket.open(f"ws://127.0.0.1:{tight.port}/graphql", protocol)
    try:
        await ws.init({"authorization": f"Bearer {token}"})
        await ws.subscribe("big", padded(2049))
        assert [error["extensions"]["code"] for error in await ws.error("big")] == ["QUERY_TOO_LARGE"]
        await ws.subscribe("small", padded(2000))
        assert (await ws.result("small"))["data"] == {"__typename": "Query"}
    finally:
        await ws.close()


async def test_a_query_text_over_the_limit_is_refused_over_sse_and_multipart(tight: Server) -> None:
    for method in ("POST", "GET"):
        async with await open_sse(tight.url, padded(2049), method=method) as stream:
            assert codes(await stream.json()) == ["QUERY_TOO_LARGE"]
    async with await open_multipart(tight.url, padded(2049)) as stream:
        assert codes(await stream.json()) == ["QUERY_TOO_LARGE"]


def test_a_response_over_the_limit_is_replaced_by_an_error(tight: Server) -> None:
    client = GraphQLClient(tight.url)
    try:
        ann = sign_up(client, "Ann")
        for index in range(20):  # (at most 20 rooms an hour by default)
            create_room(client, ann, f"room {index} " + "n" * 90)
        body = client.post("{ rooms { id name } }", token=ann.token)  # about 2.5 KB
        assert body["data"] is None and codes(body) == ["RESPONSE_TOO_LARGE"], str(body)[:300]
        assert "2000 bytes" in body["errors"][0]["message"]
        assert len(client.data("{ rooms { id } }", token=ann.token)["rooms"]) == 20  # smaller: served
    finally:
        client.close()


async def test_a_live_event_over_the_limit_is_replaced_by_an_error_and_the_next_one_arrives(tight: Server) -> None:
    """The same guard on a subscription's results: the event whose result is too long arrives as
    RESPONSE_TOO_LARGE in its place (resumed and live alike), and the subscription goes on."""
    client = GraphQLClient(tight.url)
    try:
        ann = sign_up(client, "Ann")
        room = create_room(client, ann)
        start = client.data("query($r: ID!) { room(id: $r) { latestEventCursor } }", {"r": room}, ann.token)
        post = "mutation($r: ID!, $b: String!) { createMessage(room: $r, body: $b) { id } }"
        for body in ("x" * 2500, "short"):  # about 2.6 KB of result against MAX_RESPONSE_BYTES=2000
            assert client.data(post, {"r": room, "b": body}, ann.token)["createMessage"]["id"]
    finally:
        client.close()
    ws = await GraphQLWebSocket.open(f"ws://127.0.0.1:{tight.port}/graphql", "graphql-transport-ws")
    try:
        await ws.init({"authorization": f"Bearer {ann.token}"})
        events = (
            "subscription($r: ID!, $a: String) { roomEvents(room: $r, after: $a) "
            "{ cursor ... on MessageCreated { message { body } } } }"
        )
        await ws.subscribe("events", events, {"r": room, "a": start["room"]["latestEventCursor"]})
        too_long = await ws.result("events")
        assert too_long["data"] is None and codes(too_long) == ["RESPONSE_TOO_LARGE"], str(too_long)[:300]
        assert "2000 bytes" in too_long["errors"][0]["message"]
        assert (await ws.result("events"))["data"]["roomEvents"]["message"]["body"] == "short"
    finally:
        await ws.close()


async def test_subscriptions_have_their_own_lower_cost_limit(tight: Server) -> None:
    client = GraphQLClient(tight.url)
    try:
        ann = sign_up(client, "Ann")
        room = create_room(client, ann)
    finally:
        client.close()
    ws = await GraphQLWebSocket.open(f"ws://127.0.0.1:{tight.port}/graphql", "graphql-transport-ws")
    try:
        await ws.init({"authorization": f"Bearer {ann.token}"})
        # Each event would read the room's members: 500 of them at most.
        heavy = "subscription($r: ID!) { messageCreated(room: $r) { id room { members { id name } } } }"
        await ws.subscribe("heavy", heavy, {"r": room})
        errors = await ws.error("heavy")
        assert [error["extensions"]["code"] for error in errors] == [TOO_COMPLEX]
        assert "subscription exceeds the maximum cost of 100" in errors[0]["message"]
        # The same selection as a query is within the query limit.
        query = "query($r: ID!) { room(id: $r) { id members { id name } } }"
        await ws.subscribe("query", query, {"r": room})
        assert (await ws.result("query"))["data"]["room"]["members"][0]["id"] == ann.id
    finally:
        await ws.close()


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def persisted(server: Server, query: str | None, digest: str, token: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": digest}}}
    if query is not None:
        body["query"] = query
    headers = {**JSON, **({"authorization": f"Bearer {token}"} if token else {})}
    return httpx.post(f"{server.url}/graphql", content=json.dumps(body), headers=headers).json()


def test_an_anonymous_request_with_hash_and_text_is_served_but_not_stored(server: Server) -> None:
    query = f"query Anonymous{uuid.uuid4().hex} {{ me {{ id }} }}"
    assert persisted(server, query, sha256(query)) == {"data": {"me": None}}
    assert codes(persisted(server, None, sha256(query))) == ["PERSISTED_QUERY_NOT_FOUND"]
    # A forged or expired token registers nothing either.
    assert persisted(server, query, sha256(query), token="forged") == {"data": {"me": None}}
    assert codes(persisted(server, None, sha256(query))) == ["PERSISTED_QUERY_NOT_FOUND"]


def test_padded_persisted_queries_over_the_limit_are_neither_run_nor_stored(tight: Server) -> None:
    client = GraphQLClient(tight.url)
    try:
        token = sign_up(client, "Ann").token
    finally:
        client.close()
    query = padded(2049)
    assert codes(persisted(tight, query, sha256(query), token)) == ["QUERY_TOO_LARGE"]
    assert codes(persisted(tight, None, sha256(query), token)) == ["PERSISTED_QUERY_NOT_FOUND"]


def test_introspection_and_the_explorer_default_to_off_on_a_dyno() -> None:
    assert (load({}).introspection, load({}).explorer) == (True, True)
    on_dyno = load({"DYNO": "web.1"})
    assert (on_dyno.introspection, on_dyno.explorer) == (False, False)
    forced = load({"DYNO": "web.1", "INTROSPECTION": "true", "EXPLORER": "yes"})
    assert (forced.introspection, forced.explorer) == (True, True)


@pytest.fixture(scope="module")
def dyno(database_url: str) -> Iterator[Server]:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": SHARED_REDIS_URL,
        "CHANNEL_PREFIX": f"test-{uuid.uuid4().hex[:10]}:",
        "DYNO": "web.1",
    }
    server = Server(env=env, workers=1).start()
    yield server
    server.stop()


def test_on_a_dyno_introspection_is_refused_and_there_is_no_explorer(dyno: Server) -> None:
    body = send(dyno, "GET", "{ __schema { types { name } } }")[0].json()
    assert set(codes(body)) == {"GRAPHQL_VALIDATION_FAILED"} and "introspection" in body["errors"][0]["message"].lower()
    assert httpx.get(f"{dyno.url}/graphql", headers={"accept": "text/html"}).status_code == 405
    assert send(dyno, "POST", "{ __typename }")[0].json() == {"data": {"__typename": "Query"}}


@pytest.fixture(params=["memory", "redis"])
def byte_bounded(
    request: pytest.FixtureRequest, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, str]]:
    """One worker keeping at most 3,000 bytes of persisted documents: in memory or in Redis."""
    prefix = f"test-{uuid.uuid4().hex[:10]}:"
    if request.param == "memory":
        path = tmp_path_factory.mktemp("apq-bytes") / "chat.db"
        env = {"DATABASE_URL": f"sqlite:///{path}", "REDIS_URL": ""}
        migrate(env)
    else:
        env = {"DATABASE_URL": database_url, "REDIS_URL": SHARED_REDIS_URL, "CHANNEL_PREFIX": prefix}
    server = Server(env={**env, "PERSISTED_QUERIES_MAX_BYTES": "3000"}, workers=1).start()
    yield server, prefix if request.param == "redis" else ""
    server.stop()


def test_the_persisted_query_store_is_bounded_in_bytes(byte_bounded: tuple[Server, str]) -> None:
    server, prefix = byte_bounded
    client = GraphQLClient(server.url)
    try:
        token = sign_up(client, "Ann").token
    finally:
        client.close()
    # Five valid documents of about 1 KB each (a comment pads them): at most two fit in 3,000 bytes.
    queries = [f"query Q{uuid.uuid4().hex} {{ me {{ id }} }}\n#" + "x" * 1000 for _ in range(5)]
    for query in queries:
        assert persisted(server, query, sha256(query), token)["data"]["me"] is not None
    kept = [codes(persisted(server, None, sha256(query))) != ["PERSISTED_QUERY_NOT_FOUND"] for query in queries]
    assert kept == [False, False, False, True, True]
    if prefix:
        redis = Redis.from_url(SHARED_REDIS_URL)
        try:
            assert int(redis.get(f"{prefix}apq-bytes") or 0) <= 3000
            assert redis.zcard(f"{prefix}apq-index") == 2
            assert len(list(redis.scan_iter(f"{prefix}apq:*"))) == 2
        finally:
            redis.close()
