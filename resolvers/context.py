"""The context every resolver sees: the request, the signed-in viewer, the loaders and the
process's services (database, publisher, rate limiter...)."""

from __future__ import annotations

from typing import Any

from databases import Database
from graphql import GraphQLResolveInfo

from core.errors import Unauthenticated
from identity.auth import Viewer
from resolvers.loaders import Loaders
from resolvers.services import Services

# Said wherever a token or a membership is checked: by resolvers, and by a live subscription.
SIGN_IN_FIRST = "Sign in first: send `Authorization: Bearer <token>`."
NOT_A_MEMBER = "You are not a member of this room."


def make_context(
    services: Services, viewer: Viewer | None, request: Any = None, last_event_id: str | None = None
) -> dict[str, Any]:
    """`last_event_id`: the SSE client's `Last-Event-ID`, where a reconnecting EventSource stood."""
    return {
        "request": request,
        "viewer": viewer,
        "loaders": Loaders(services.db),
        "services": services,
        "last_event_id": last_event_id,
    }


def resume_point(info: GraphQLResolveInfo, after: str | None) -> str | None:
    """Where a subscription resumes: a reconnecting EventSource's `Last-Event-ID` (an event id the
    stream gave, so later than the `after` its URL still carries), else the argument."""
    return info.context.get("last_event_id") or after


def services_of(info: GraphQLResolveInfo) -> Services:
    return info.context["services"]


def db_of(info: GraphQLResolveInfo) -> Database:
    return info.context["services"].db


def viewer_of(info: GraphQLResolveInfo) -> Viewer | None:
    return info.context["viewer"]


def require_viewer(info: GraphQLResolveInfo) -> Viewer:
    viewer = viewer_of(info)
    if viewer is None:
        raise Unauthenticated(SIGN_IN_FIRST)
    return viewer


def client_address(info: GraphQLResolveInfo) -> str:
    """The client's address: the peer's, or behind a trusted router the rightmost
    X-Forwarded-For entry (forwarded.py sets it in the scope, where the access log reads it too)."""
    request = info.context["request"]
    client = request.client if request is not None else None
    return client.host if client else "unknown"


def loaders_of(info: GraphQLResolveInfo) -> Loaders:
    return info.context["loaders"]
