"""A malformed query is parsed once, but each request gets an error of its own: re-raising the
cached instance grew its traceback with every request and kept each request's frames alive. And
a verdict that depends on the variables is kept for the variables it depends on."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx
import pytest
from graphql import ASTValidationRule, GraphQLError, parse, specified_rules

from core.errors import code_for_request_error, format_error
from execution.documents import Validator, VariableRule, _parse, parse_document
from limits.query_shape import cost_rule
from resolvers import LIST_BOUNDS, build_schema
from tests.support.processes import Server

MALFORMED = "{ me { id "


def depth(traceback: TracebackType | None) -> int:
    frames = 0
    while traceback is not None:
        frames, traceback = frames + 1, traceback.tb_next
    return frames


def request(text: str) -> GraphQLError:
    """What a request does: parse inside a handler, often while handling another exception."""
    try:
        raise KeyError("an earlier exception the request was handling")
    except KeyError:
        try:
            parse_document(text)
        except GraphQLError as error:
            return error
    raise AssertionError("the malformed text parsed")


def test_every_request_gets_a_fresh_error_whose_traceback_does_not_grow() -> None:
    errors: list[GraphQLError] = []
    depths: list[int] = []  # as each request sees it, before the next one raises
    for _ in range(1000):
        errors.append(request(MALFORMED))
        depths.append(depth(errors[-1].__traceback__))
    assert depths[-1] <= depths[0], depths[:: len(depths) // 4]
    cached = _parse(MALFORMED)
    assert isinstance(cached, GraphQLError)
    assert all(error is not cached for error in errors)
    assert len({id(error) for error in errors}) == len(errors)
    # Its context is this request's own exception, not a chain through earlier requests.
    assert isinstance(errors[-1].__context__, KeyError) and errors[-1].__context__.__context__ is None
    assert cached.__traceback__ is None  # nor does the cache hold the first request's frames
    first, last = errors[0], errors[-1]
    assert (last.message, last.source, last.positions, last.locations) == (
        first.message,
        first.source,
        first.positions,
        first.locations,
    )
    assert last.message.startswith("Syntax Error:") and last.locations
    assert code_for_request_error(last) == "GRAPHQL_PARSE_FAILED"
    assert format_error(last) == format_error(first)


@pytest.mark.parametrize("text", ["{ me { id ", "query {", "{ me(: 1) { id } }", "}"])
def test_the_fresh_error_says_what_the_parser_said(text: str) -> None:
    with pytest.raises(GraphQLError) as original:
        parse(text)
    fresh = request(text)
    assert type(fresh) is type(original.value)
    assert format_error(fresh) == format_error(original.value)


def test_a_malformed_query_sent_again_and_again_is_answered_the_same(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        bodies = [http.post("/graphql", json={"query": MALFORMED}).json() for _ in range(50)]
    assert all(body == bodies[0] for body in bodies)
    assert [error["extensions"]["code"] for error in bodies[0]["errors"]] == ["GRAPHQL_PARSE_FAILED"]
    assert bodies[0]["errors"][0]["locations"] == [{"line": 1, "column": 11}]


def test_the_cost_is_validated_again_only_for_new_values_of_the_variables_it_reads() -> None:
    """Keyed by every variable, each message posted (its body unlike any other) was validated
    again; the cost reads only the variables in `first`."""
    rule = cost_rule(500, list_bounds=LIST_BOUNDS)
    built: list[dict] = []

    def counting(variables: dict[str, Any]) -> type[ASTValidationRule]:
        built.append(variables)
        return rule.build(variables)

    validator = Validator(build_schema(), specified_rules, VariableRule(counting, rule.arguments))
    post = "mutation($room: ID!, $body: String!) { createMessage(room: $room, body: $body) { id } }"
    for body in ("one", "two", "three"):
        assert validator.errors(post, parse(post), {"room": "1", "body": body}) == ()
    assert len(built) == 1

    page = (
        "query($n: Int, $after: String) { rooms(first: 1) { messages(first: $n, after: $after) "
        "{ edges { node { id sender { name } room { name } } } } } }"
    )
    costs = [validator.errors(page, parse(page), {"n": n, "after": after}) for n, after in PAGES]
    refused = ["maximum cost" in errors[0].message if errors else False for errors in costs]
    assert refused == [False, False, True, True, False]
    assert [variables["n"] for variables in built[1:]] == [5, 100]  # once per value of `first`


PAGES = [(5, None), (5, "b:7"), (100, None), (100, "b:3"), (5, "b:9")]
