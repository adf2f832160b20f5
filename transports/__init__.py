"""The wire protocols, one module each: GraphQL over HTTP (http), graphql-transport-ws
(transport_ws), graphql-ws (legacy_ws), Server-Sent Events (sse), Apollo's multipart HTTP
(multipart), and what they share as helpers they call (the outbox they write through, the
WebSocket endpoint, streamed responses)."""
