"""Every WebSocket close code the server sends, named in one place.

Apollo's clients retry on 1012 and 1013 (and graphql-ws also on 4403 and 4408); 4400, 4401,
4409 and 4429 end a graphql-ws client for good, as its protocol says.
"""

NORMAL = 1000
REFUSED = 1002  # sent before accepting: the handshake is refused (HTTP 403); no subprotocol we speak
TRY_AGAIN_LATER = 1013  # a consumer too slow for live traffic, or the database away: reconnect and resume
INVALID_MESSAGE = 4400
UNAUTHORIZED = 4401  # an operation before connection_init was acknowledged
FORBIDDEN = 4403  # connection_init without a valid token
INIT_TIMEOUT = 4408
DUPLICATE_OPERATION = 4409
TOO_MANY_INITIALISATION_REQUESTS = 4429
# Sent by uvicorn, not by us: 1009 for a frame over WS_MAX_SIZE, 1011 for an unanswered ping,
# 1012 when the worker restarts.
