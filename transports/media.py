"""Which answer a request's `Accept` header asks for (RFC 9110 content negotiation, the parts
GraphQL clients use): a single result as `application/graphql-response+json` (GraphQL over HTTP)
or `application/json`, and a stream as Server-Sent Events (graphql-sse) or Apollo's multipart
subscriptions.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Single(Enum):
    GRAPHQL_RESPONSE = "application/graphql-response+json; charset=utf-8"
    JSON = "application/json"


class Streamed(Enum):
    SSE = "text/event-stream"
    MULTIPART = "multipart/mixed"


@dataclass(frozen=True, slots=True)
class Accepted:
    """The best single answer the client takes (None: none of ours), and the stream it asked for."""

    single: Single | None
    stream: Streamed | None


def _ranges(accept: str) -> list[tuple[str, dict[str, str], float]]:
    ranges = []
    for part in accept.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        if not media:
            continue
        parameters = {}
        for param in params:
            name, _, value = param.partition("=")
            parameters[name.strip().lower()] = value.strip().strip('"')
        try:
            quality = float(parameters.pop("q", "1"))
        except ValueError:
            quality = 0.0
        ranges.append((media.lower(), parameters, quality))
    return ranges


def negotiate(accept: str | None) -> Accepted:
    """No Accept header takes anything, and gets `application/json` as it always has."""
    if not accept or not accept.strip():
        return Accepted(Single.JSON, None)
    graphql_response = json = 0.0
    stream: Streamed | None = None
    for media, params, quality in _ranges(accept):
        if quality <= 0:
            continue
        if media == "application/graphql-response+json":
            graphql_response = max(graphql_response, quality)
        elif media == "application/json":
            json = max(json, quality)
        elif media in ("*/*", "application/*"):
            json = max(json, quality * 0.5)  # a wildcard takes JSON, as clients that send it expect
        elif media == "text/event-stream":
            stream = Streamed.SSE
        elif media == "multipart/mixed" and "subscriptionspec" in params and stream is None:
            stream = Streamed.MULTIPART
    if graphql_response and graphql_response >= json:
        return Accepted(Single.GRAPHQL_RESPONSE, stream)
    return Accepted(Single.JSON if json else None, stream)
