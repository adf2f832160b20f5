"""The context every resolver sees: the request, the signed-in viewer and the loaders."""

from typing import Any

from ariadne.utils import get_operation_type
from graphql import GraphQLError, GraphQLResolveInfo, OperationType
from starlette.requests import HTTPConnection

from auth import Viewer, token_from_header, viewer_for_digest
from db import rooms
from errors import Forbidden, NotFound, Unauthenticated
from execution.documents import parse_document
from resolvers.loaders import Loaders
from viewer_cache import viewer_for_token

VIEWER_SCOPE_KEY = "chat.viewer"
# Said wherever a token or a membership is checked: by resolvers, and by a live subscription.
SIGN_IN_FIRST = "Sign in first: send `Authorization: Bearer <token>`."
NOT_A_MEMBER = "You are not a member of this room."


async def get_context(request: HTTPConnection, data: Any = None) -> dict[str, Any]:
    if request.scope["type"] == "websocket":
        # Authenticated at connection_init (see realtime.websocket) and kept on the scope; checked
        # again for each operation, so a token revoked since then opens nothing new: a
        # subscription's own access check reads the token with the membership, batched with the
        # other subscriptions starting at once. The viewer stays the connection's one object (a
        # user never changes), not a copy per subscription.
        connected = request.scope.get(VIEWER_SCOPE_KEY)
        if connected is None or _is_subscription(data):
            viewer = connected
        else:
            viewer = connected if await viewer_for_digest(connected.token_hash) else None
    else:  # remembered while this process would hear of a revocation (see viewer_cache)
        viewer = await viewer_for_token(token_from_header(request.headers.get("authorization")))
    return {"request": request, "viewer": viewer, "loaders": Loaders()}


def _is_subscription(data: Any) -> bool:
    try:
        document = parse_document(data["query"])
        return get_operation_type(document, data.get("operationName")) == OperationType.SUBSCRIPTION
    except (GraphQLError, RuntimeError, KeyError, TypeError):  # refused elsewhere, before anything runs
        return False


def viewer_of(info: GraphQLResolveInfo) -> Viewer | None:
    return info.context["viewer"]


def require_viewer(info: GraphQLResolveInfo) -> Viewer:
    viewer = viewer_of(info)
    if viewer is None:
        raise Unauthenticated(SIGN_IN_FIRST)
    return viewer


def client_address(info: GraphQLResolveInfo) -> str:
    """The client's address; behind Heroku's router uvicorn takes it from X-Forwarded-For."""
    client = info.context["request"].client
    return client.host if client else "unknown"


def loaders_of(info: GraphQLResolveInfo) -> Loaders:
    return info.context["loaders"]


async def require_member(info: GraphQLResolveInfo, room_id: int) -> dict:
    """The room, if it exists and the viewer belongs to it."""
    viewer = require_viewer(info)
    room = await loaders_of(info).rooms.load(room_id)
    if room is None:
        raise NotFound("Room not found.")
    if not await rooms.is_member(room_id, viewer.id):
        raise Forbidden(NOT_A_MEMBER)
    return room
