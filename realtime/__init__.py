"""Live delivery: the broadcast, its Redis backend, the events and the WebSocket endpoint."""
