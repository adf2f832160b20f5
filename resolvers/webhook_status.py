"""`webhookStatus`: each webhook endpoint's delivery state, for the host's server only."""

from __future__ import annotations

from typing import Any

from ariadne import ObjectType
from graphql import GraphQLResolveInfo

from db import webhooks
from resolvers.access import require_service
from resolvers.context import db_of, services_of

webhook_status_query = ObjectType("Query")


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
