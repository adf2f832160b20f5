"""The wire protocols, one module each, holding its whole state machine and every frame, refusal
and close it sends: GraphQL over HTTP (http), graphql-transport-ws (transport_ws), graphql-ws
(legacy_ws), Server-Sent Events (sse), Apollo's multipart HTTP (multipart). What they share are
helpers they call, never a base class that calls them: a WebSocket connection's state and
operations (websocket_session), the WebSocket endpoint (websocket), starting a subscription on
the live engine (operations), one streamed operation (stream, http_streams), the outbox they
write through, close codes and keepalives."""
