"""One WebSocket endpoint, both GraphQL-over-WebSocket protocols.

The client's offered subprotocol picks the protocol: `graphql-transport-ws` (graphql-ws,
Apollo's GraphQLWsLink) is preferred, `graphql-ws` (subscriptions-transport-ws, Apollo's
WebSocketLink) is the fallback, and anything else is refused before the handshake completes.
"""

from __future__ import annotations

from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from serving.uvicorn_protocols import frame_writer
from transports import close_codes, legacy_ws, transport_ws
from transports.operations import LiveServer


class WebSocketEndpoint:
    def __init__(self, server: LiveServer) -> None:
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive=receive, send=send)
        offered = scope.get("subprotocols") or []
        connection: transport_ws.TransportWSConnection | legacy_ws.LegacyWSConnection
        if transport_ws.TransportWSConnection.SUBPROTOCOL in offered:
            connection = transport_ws.TransportWSConnection(self.server, websocket, frame_writer(send))
        elif legacy_ws.LegacyWSConnection.SUBPROTOCOL in offered:
            connection = legacy_ws.LegacyWSConnection(self.server, websocket, frame_writer(send))
        else:
            await websocket.close(code=close_codes.REFUSED)  # before accept: HTTP 403
            return
        # Nothing reads the handshake's headers after this (the token comes in connection_init):
        # an idle connection need not keep them for its whole life.
        scope["headers"] = []
        await connection.serve()
