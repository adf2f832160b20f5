"""Apollo's multipart HTTP subscriptions (subscriptionSpec 1.0), as Apollo Client's `HttpLink`
asks for them: `Accept: multipart/mixed;boundary="graphql";subscriptionSpec=1.0` on a POST.

    (at once, then every 5 s)  a heartbeat part: `{}`
    each result                a part `{"payload": <result>}`; a refusal or a revocation is a
                               result with its errors, then the end
    cannot be served now       a part `{"payload": null, "errors": [SERVICE_UNAVAILABLE]}`
    the end                    the closing delimiter `--graphql--`

Each part is `\\r\\n--graphql\\r\\ncontent-type: application/json; charset=utf-8\\r\\n\\r\\n<json>`.
"""

from __future__ import annotations

import orjson

from realtime.stream import UNAVAILABLE, Stream

MEDIA_TYPE = b'multipart/mixed;boundary="graphql";subscriptionSpec="1.0"'
PART = b"\r\n--graphql\r\ncontent-type: application/json; charset=utf-8\r\n\r\n"
HEARTBEAT = PART + b"{}"
END = b"\r\n--graphql--\r\n"


class MultipartStream(Stream):
    HEADERS = ((b"content-type", MEDIA_TYPE), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no"))
    PREAMBLE = HEARTBEAT
    HEARTBEAT = HEARTBEAT
    __slots__ = ()

    def result(self, payload: bytes, event_id: str | None) -> bytes:
        return PART + b'{"payload":' + payload + b"}"

    def end_frame(self) -> bytes:
        return END

    def unavailable(self) -> bytes | None:
        return PART + orjson.dumps({"payload": None, "errors": [UNAVAILABLE]})
