"""`webhookStatus`: each webhook endpoint's delivery state, for the host's server only."""

from __future__ import annotations

from typing import Any

from ariadne import ObjectType
from graphql import GraphQLResolveInfo

from core.errors import Forbidden
from db import webhooks
from resolvers.context import db_of, require_viewer, services_of

webhook_status_query = ObjectType("Query")
SERVICE_ONLY = "Only the host's server (its service key) can read the webhooks' state."


def require_service(info: GraphQLResolveInfo) -> None:
    """The host's server only: UNAUTHENTICATED without a viewer, FORBIDDEN for any user. The
    service viewer (SERVICE_KEY) is not in this branch, so nobody passes yet: at merge this
    becomes `resolvers.access.require_service`."""
    require_viewer(info)
    raise Forbidden(SERVICE_ONLY)


@webhook_status_query.field("webhookStatus")
async def resolve_webhook_status(_root: None, info: GraphQLResolveInfo) -> list[dict[str, Any]]:
    """One entry per endpoint of WEBHOOK_URL, in its order (one scan of rooms each)."""
    require_service(info)
    urls = services_of(info).settings.webhook_urls
    endpoints = {webhooks.endpoint_key(url): webhooks.endpoint_label(url) for url in urls}
    return [
        {
            "endpoint": row["label"],
            "backlog": row["backlog"],
            "rooms": row["rooms"],
            "failing": row["failing"],
            "oldestUndeliveredAt": row["oldest_at"],
            "lastError": row["last_error"],
            "lastErrorAt": row["last_error_at"],
        }
        for row in await webhooks.status(db_of(info), endpoints)
    ]
