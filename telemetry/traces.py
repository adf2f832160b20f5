"""Spans, while the SDK runs (telemetry.running sets `tracer`; otherwise every helper returns a
shared no-op context at the cost of one `None` check).

Short spans only: a GraphQL request's server span, a publish after commit, one `deliver` per
event per worker (a child of the publish, and linked to it, carrying the counts), and a
subscription's setup and catch-up. Never a span for a connection's or a subscription's whole
life, and never a document, variables, a message body or a token on any of them: names and
attributes come from closed sets, plus the operation's name and Heroku's request id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from opentelemetry import context, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from core.logs import REQUEST_ID
from telemetry import record

tracer: Any = None

NOTHING: nullcontext[None] = nullcontext(None)
PROPAGATOR = TraceContextTextMapPropagator()
# Kept from a request's headers: the W3C trace context (its X-Request-ID is core.logs.REQUEST_ID).
CARRIED = frozenset((b"traceparent", b"tracestate"))
SERVER = trace.SpanKind.SERVER
# An operation's name is the client's: cut to this in a span's name.
NAME_CHARS = 100


class Answering:
    """One query's or mutation's telemetry, on whichever transport it came (the one place that
    does it): its server span, current while it runs (when tracing), and on `answered` its
    errors, as the span's events with their codes, and its duration and error counts
    (`record.graphql_request`)."""

    __slots__ = ("_span", "_token", "operation_type", "started", "transport")

    def __init__(self, span: Any, operation_type: str, transport: str, started: float) -> None:
        self._span = span  # None without tracing
        self._token: Any = None
        self.operation_type = operation_type
        self.transport = transport
        self.started = started

    def __enter__(self) -> Answering:
        if self._span is not None:
            self._token = context.attach(trace.set_span_in_context(self._span))
        return self

    def __exit__(self, kind: Any, error: Any, _traceback: Any) -> None:
        span = self._span
        if span is None:
            return
        context.detach(self._token)
        if error is not None and span.is_recording() and not isinstance(error, asyncio.CancelledError):
            # Its type only: an exception's message may quote a value (a body, an address).
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))
        span.end()

    def answered(self, result: dict) -> None:
        """The operation's formatted result (or the errors that refused it), as the client gets it."""
        codes = record.error_codes(result)
        span = self._span
        if codes and span is not None and span.is_recording():
            for code in codes:
                span.add_event("graphql.error", {"graphql.error.code": code})
            span.set_status(trace.Status(trace.StatusCode.ERROR, codes[0]))
        record.graphql_request(self.operation_type, codes, self.transport, self.started)


def server(
    headers: Iterable[tuple[bytes, bytes]],
    operation_type: str,
    operation_name: str | None,
    transport: str,
    started: float,
) -> Answering:
    """A query's or mutation's `Answering`: its server span in the trace of the `traceparent`
    among `headers` when there is one (a request's; a WebSocket's operations give none: each is
    a trace of its own, never one lasting the connection's life), with the request's (or the
    WebSocket's) X-Request-ID as `heroku.request_id`, the id its log lines have. The span's
    attributes are built only when the sampler kept it."""
    if tracer is None:
        return Answering(None, operation_type, transport, started)
    carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in headers if name in CARRIED}
    name = f"{operation_type} {operation_name[:NAME_CHARS]}" if operation_name else operation_type
    span = tracer.start_span(name, context=PROPAGATOR.extract(carrier) if carrier else None, kind=SERVER)
    if span.is_recording():
        attributes = {"graphql.operation.type": operation_type}
        if operation_name:
            attributes["graphql.operation.name"] = operation_name[:NAME_CHARS]
        request_id = REQUEST_ID.get()
        if request_id:
            attributes["heroku.request_id"] = request_id
        span.set_attributes(attributes)
    return Answering(span, operation_type, transport, started)


class Publishing:
    """A publish span, current while the message goes out; `traceparent` is its context when the
    sampler kept it (None otherwise: the message carries none, and no worker starts a `deliver`
    span for it, which the sampler would drop as it dropped the publish)."""

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
        span = self._span.__enter__()
        if span.is_recording():  # a publish the sampler dropped: its deliveries would be dropped too
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
