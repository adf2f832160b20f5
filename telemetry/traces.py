"""Spans, while the SDK runs (telemetry.running sets `tracer`; otherwise every helper returns a
shared no-op context at the cost of one `None` check).

Short spans only: a GraphQL request's server span, a publish after commit, one `deliver` per
event per worker (a child of the publish, and linked to it, carrying the counts), and a
subscription's setup and catch-up. Never a span for a connection's or a subscription's whole
life, and never a document, variables, a message body or a token on any of them: names and
attributes come from closed sets, plus the operation's name and Heroku's request id.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

tracer: Any = None

NOTHING: nullcontext[None] = nullcontext(None)
PROPAGATOR = TraceContextTextMapPropagator()
# Kept from a request's headers: the W3C trace context and Heroku's request id.
CARRIED = frozenset((b"traceparent", b"tracestate", b"x-request-id"))
# An operation's name is the client's: cut to this in a span's name.
NAME_CHARS = 100


def server(
    headers: Iterable[tuple[bytes, bytes]], operation_type: str, operation_name: str | None
) -> AbstractContextManager[Any]:
    """A GraphQL request's server span, in the trace of its `traceparent` when it has one; with
    Heroku's X-Request-ID as `heroku.request_id` (the id every log line of the request has)."""
    if tracer is None:
        return NOTHING
    carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in headers if name in CARRIED}
    attributes = {"graphql.operation.type": operation_type}
    if operation_name:
        attributes["graphql.operation.name"] = operation_name[:NAME_CHARS]
    request_id = carrier.get("x-request-id")
    if request_id:
        attributes["heroku.request_id"] = request_id[:200]
    name = f"{operation_type} {operation_name[:NAME_CHARS]}" if operation_name else operation_type
    return tracer.start_as_current_span(
        name, context=PROPAGATOR.extract(carrier), kind=trace.SpanKind.SERVER, attributes=attributes
    )


def errors(codes: list[str]) -> None:
    """The current span's errors, one event each with its code."""
    if tracer is None or not codes:
        return
    span = trace.get_current_span()
    for code in codes:
        span.add_event("graphql.error", {"graphql.error.code": code})
    span.set_status(trace.Status(trace.StatusCode.ERROR, codes[0]))


class Publishing:
    """A publish span, current while the message goes out; `traceparent` is its context."""

    __slots__ = ("_span", "traceparent")

    def __init__(self) -> None:
        self.traceparent: str | None = None
        self._span: Any = None

    def __enter__(self) -> Publishing:
        self._span = tracer.start_as_current_span(
            "chat publish",
            kind=trace.SpanKind.PRODUCER,
            attributes={"messaging.system": "redis", "messaging.operation.type": "publish"},
        )
        self._span.__enter__()
        carrier: dict[str, str] = {}
        PROPAGATOR.inject(carrier)
        self.traceparent = carrier.get("traceparent")
        return self

    def __exit__(self, *exc: Any) -> None:
        self._span.__exit__(*exc)


def publishing() -> AbstractContextManager[Publishing | None]:
    """A publish span (after commit), or a no-op giving None."""
    return NOTHING if tracer is None else Publishing()


def delivering(traceparent: str) -> AbstractContextManager[Any]:
    """One event's delivery on this worker: a child of its publish span, linked to it."""
    if tracer is None:
        return NOTHING
    parent = PROPAGATOR.extract({"traceparent": traceparent})
    published = trace.get_current_span(parent).get_span_context()
    links = [trace.Link(published)] if published.is_valid else []
    return tracer.start_as_current_span(
        "chat deliver",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        links=links,
        attributes={"messaging.system": "redis", "messaging.operation.type": "process"},
    )


def delivered(span: Any, subscribers: int, executions: int) -> None:
    if span is not None:
        span.set_attribute("chat.fanout.subscribers", subscribers)
        span.set_attribute("chat.fanout.executions", executions)


def step(name: str, field_name: str) -> AbstractContextManager[Any]:
    """A short internal span ("chat subscribe", "chat catch_up") for one subscription field."""
    if tracer is None:
        return NOTHING
    return tracer.start_as_current_span(name, attributes={"graphql.subscription.field": field_name})
