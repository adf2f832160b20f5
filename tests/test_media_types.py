"""GraphQL over HTTP's media types at /graphql. Asked for `application/graphql-response+json`, the
server answers in kind and with the status that says what happened: 400 when the request never
ran (it does not parse, validate, or its variables do not fit), 200 otherwise. Asked for
`application/json` (or anything, or nothing), it answers `application/json` and 200 for every
well-formed GraphQL request, errors in the body; 400 only for what is no GraphQL request at all.
An Accept it cannot meet is 406, a body that is not JSON 415, a mutation over GET 405."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.graphql import GraphQLClient, sign_up
from tests.support.processes import Server

GRAPHQL_RESPONSE = "application/graphql-response+json"
# What Apollo Client 4's HttpLink sends with every query and mutation.
APOLLO_ACCEPT = "application/graphql-response+json,application/json;q=0.9"
JSON_ACCEPTS = ["application/json", "*/*", None]  # None: no Accept header at all

REQUEST_ERRORS = [
    ("{ me { id ", None, "GRAPHQL_PARSE_FAILED"),
    ("{ nothing }", None, "GRAPHQL_VALIDATION_FAILED"),
    ("query($id: ID!) { room(id: $id) { id } }", {}, "BAD_USER_INPUT"),  # a required variable missing
    ("query($n: Int) { rooms(first: 5) { messages(first: $n) { edges { cursor } } } }", {"n": "x"}, "BAD_USER_INPUT"),
]
MALFORMED = [
    (b"{not json", "application/json"),
    (b'{"variables": {}}', "application/json"),  # no query
    (b'{"query": 42}', "application/json"),
    (b'{"query": "{ me { id } }", "variables": [1]}', "application/json"),
    (b"[1, 2]", "application/json"),
]


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A client that sends no Accept header of its own."""
    client = httpx.Client(timeout=30)
    del client.headers["accept"]
    yield client
    client.close()


def headers(accept: str | None, token: str | None = None, **more: str) -> dict[str, str]:
    found = {**more}
    if accept is not None:
        found["accept"] = accept
    if token is not None:
        found["authorization"] = f"Bearer {token}"
    return found


def post(
    http: httpx.Client,
    server: Server,
    query: str,
    variables: dict[str, Any] | None = None,
    accept: str | None = None,
    token: str | None = None,
) -> httpx.Response:
    body = {"query": query, **({"variables": variables} if variables is not None else {})}
    return http.post(f"{server.url}/graphql", json=body, headers=headers(accept, token))


def media_type(response: httpx.Response) -> str:
    return response.headers["content-type"].split(";")[0].strip().lower()


def error_codes(response: httpx.Response) -> list[str]:
    return [error["extensions"]["code"] for error in response.json()["errors"]]


@pytest.mark.parametrize("accept", [GRAPHQL_RESPONSE, APOLLO_ACCEPT])
def test_graphql_response_json_is_answered_in_kind(http: httpx.Client, server: Server, accept: str) -> None:
    response = post(http, server, "{ me { id } }", accept=accept)
    assert response.status_code == 200
    assert media_type(response) == GRAPHQL_RESPONSE
    assert response.json() == {"data": {"me": None}}
    by_get = http.get(f"{server.url}/graphql", params={"query": "{ me { id } }"}, headers=headers(accept))
    assert by_get.status_code == 200
    assert media_type(by_get) == GRAPHQL_RESPONSE
    assert by_get.json() == {"data": {"me": None}}


@pytest.mark.parametrize("accept", JSON_ACCEPTS)
def test_application_json_is_answered_in_kind(http: httpx.Client, server: Server, accept: str | None) -> None:
    response = post(http, server, "{ me { id } }", accept=accept)
    assert response.status_code == 200
    assert media_type(response) == "application/json"
    assert response.json() == {"data": {"me": None}}


@pytest.mark.parametrize("accept", [GRAPHQL_RESPONSE, APOLLO_ACCEPT])
@pytest.mark.parametrize(("query", "variables", "code"), REQUEST_ERRORS)
def test_with_graphql_response_json_a_request_that_never_ran_is_400(
    http: httpx.Client, server: Server, accept: str, query: str, variables: dict | None, code: str
) -> None:
    response = post(http, server, query, variables, accept=accept)
    assert response.status_code == 400, response.text
    assert media_type(response) == GRAPHQL_RESPONSE
    assert error_codes(response) == [code]
    assert "data" not in response.json()


@pytest.mark.parametrize("accept", JSON_ACCEPTS)
@pytest.mark.parametrize(("query", "variables", "code"), REQUEST_ERRORS)
def test_with_application_json_a_well_formed_request_is_200_with_errors_in_the_body(
    http: httpx.Client, server: Server, accept: str | None, query: str, variables: dict | None, code: str
) -> None:
    response = post(http, server, query, variables, accept=accept)
    assert response.status_code == 200, response.text
    assert media_type(response) == "application/json"
    assert error_codes(response) == [code]


@pytest.mark.parametrize("accept", [GRAPHQL_RESPONSE, "application/json"])
def test_errors_of_a_request_that_ran_are_200_in_either_type(http: httpx.Client, server: Server, accept: str) -> None:
    """A resolver's error, even one that nulls all the data, is not a request error."""
    nulled = post(http, server, 'mutation { createRoom(name: "no one") { id } }', accept=accept)
    assert nulled.status_code == 200, nulled.text
    assert nulled.json()["data"] is None
    assert error_codes(nulled) == ["UNAUTHENTICATED"]
    partial = post(http, server, "{ room(id: 1) { id } }", accept=accept)
    assert partial.status_code == 200, partial.text
    assert error_codes(partial) == ["UNAUTHENTICATED"]
    assert media_type(nulled) == media_type(partial) == accept


@pytest.mark.parametrize("accept", [GRAPHQL_RESPONSE, "application/json", None])
@pytest.mark.parametrize(("content", "content_type"), MALFORMED)
def test_what_is_no_graphql_request_is_400_in_either_type(
    http: httpx.Client, server: Server, accept: str | None, content: bytes, content_type: str
) -> None:
    response = http.post(
        f"{server.url}/graphql", content=content, headers=headers(accept, **{"content-type": content_type})
    )
    assert response.status_code == 400, response.text
    assert media_type(response) == (GRAPHQL_RESPONSE if accept == GRAPHQL_RESPONSE else "application/json")
    assert response.json()["errors"][0]["message"]


@pytest.mark.parametrize("accept", ["image/png", "text/plain", "application/xml, text/csv;q=0.5"])
def test_an_accept_that_cannot_be_met_is_406(http: httpx.Client, server: Server, accept: str) -> None:
    for response in (
        post(http, server, "{ me { id } }", accept=accept),
        http.get(f"{server.url}/graphql", params={"query": "{ me { id } }"}, headers=headers(accept)),
    ):
        assert response.status_code == 406, response.text
        assert error_codes(response) == ["NOT_ACCEPTABLE"]


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "text/plain;charset=UTF-8"]
)
@pytest.mark.parametrize("accept", [GRAPHQL_RESPONSE, "application/json"])
def test_a_body_that_is_not_json_is_415(http: httpx.Client, server: Server, content_type: str, accept: str) -> None:
    response = http.post(
        f"{server.url}/graphql",
        content=json.dumps({"query": "{ me { id } }"}).encode(),
        headers=headers(accept, **{"content-type": content_type}),
    )
    assert response.status_code == 415, response.text
    assert response.json()["errors"][0]["message"]


def test_json_with_a_charset_is_json(http: httpx.Client, server: Server) -> None:
    response = http.post(
        f"{server.url}/graphql",
        content=json.dumps({"query": "{ me { id } }"}).encode(),
        headers={"content-type": "application/json; charset=utf-8", "accept": GRAPHQL_RESPONSE},
    )
    assert response.status_code == 200 and response.json() == {"data": {"me": None}}


@pytest.mark.parametrize("accept", [GRAPHQL_RESPONSE, "application/json", None])
def test_a_mutation_over_get_is_405(http: httpx.Client, server: Server, accept: str | None) -> None:
    api = GraphQLClient(server.url)
    ann = sign_up(api, "Ann")
    response = http.get(
        f"{server.url}/graphql",
        params={"query": 'mutation { createRoom(name: "over get") { id } }'},
        headers=headers(accept, ann.token),
    )
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert error_codes(response) == ["METHOD_NOT_ALLOWED"]
    assert api.data("{ rooms { id } }", token=ann.token) == {"rooms": []}
    api.close()
