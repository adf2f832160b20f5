"""Every WebSocket close code the server sends, named in one place.

Apollo's clients retry on 1012 and 1013 (and graphql-ws also on 4403 and 4408); 4400, 4401,
4409 and 4429 end a graphql-ws client for good, as its protocol says, and so does every 1xxx code
but 1000, 1001, 1005, 1006, 1012, 1013 and 1014 (graphql-ws's `isFatalInternalCloseCode`).
"""

NORMAL = 1000
REFUSED = 1002  # sent before accepting: the handshake is refused (HTTP 403); no subprotocol we speak
# A signed-in user holding MAX_CONNECTIONS_PER_USER connections already: connection_init refused.
# 1008 (RFC 6455's Policy Violation) because a graphql-ws client (Apollo's GraphQLWsLink) takes it
# as fatal and does not retry: `isFatalInternalCloseCode` lets only 1000, 1001, 1005, 1006, 1012,
# 1013 and 1014 of the 1xxx codes be retried, so the refused connect rejects at once and its
# subscriptions get the error (the reason names TOO_MANY_CONNECTIONS), where a retried code
# (4403, 4408, 1013) would have each refused client come back `retryAttempts` times (5 by
# default, any number if configured so) with backoff; a fatal code is thrown before the client's
# `shouldRetry` is even asked. graphql-ws's own fatal 44xx codes each mean a protocol error this
# is not (4429 is a second connection_init); 1008 says what this is, a policy refusing it.
TOO_MANY_CONNECTIONS = 1008
TRY_AGAIN_LATER = 1013  # a consumer too slow for live traffic, or the database away: reconnect and resume
INVALID_MESSAGE = 4400
UNAUTHORIZED = 4401  # an operation before connection_init was acknowledged
FORBIDDEN = 4403  # connection_init without a valid token
# A host JWT expired under a live connection: 4403, which graphql-ws's client (Apollo's
# GraphQLWsLink) retries by default ("might grant access after retry"), calling a
# `connectionParams` function again, so a client that fetches a fresh token there reconnects and
# resubscribes; subscriptions-transport-ws reconnects on any close. Its subscriptions get no
# error first: an error would end them for good on the client.
TOKEN_EXPIRED = 4403
INIT_TIMEOUT = 4408
DUPLICATE_OPERATION = 4409
TOO_MANY_INITIALISATION_REQUESTS = 4429
# Sent by uvicorn, not by us: 1009 for a frame over WS_MAX_SIZE, 1011 for an unanswered ping,
# 1012 when the worker restarts.
