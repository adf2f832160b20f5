"""A malformed query is parsed once, but each request gets an error of its own: re-raising the
cached instance grew its traceback with every request and kept each request's frames alive."""

from __future__ import annotations

from types import TracebackType

import httpx
import pytest
from graphql import GraphQLError, parse

from errors import code_for_request_error, format_error
from execution.documents import _parse, parse_document
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
