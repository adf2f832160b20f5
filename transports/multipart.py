"""Apollo's multipart HTTP subscriptions (subscriptionSpec 1.0), as Apollo Client's `HttpLink`
asks for them: `Accept: multipart/mixed;boundary="graphql";subscriptionSpec=1.0` on a POST.

    (at once, then every 5 s)  a heartbeat part: `{}`
    each result                a part `{"payload": <result>}`; a refusal or a revocation is a
                               result with its errors, then the end
    cannot be served now       a part `{"payload": null, "errors": [SERVICE_UNAVAILABLE]}`
    the end                    the closing delimiter `--graphql--`

Each part is followed at once by the delimiter (`\\r\\n--graphql`), as Apollo Router writes
them: a client hands a part on only when the delimiter after it has arrived. The stream opens
with a delimiter and ends with `--` after the last one.
"""

from __future__ import annotations

import orjson

from transports.stream import UNAVAILABLE, Stream

MEDIA_TYPE = b'multipart/mixed;boundary="graphql";subscriptionSpec="1.0"'
DELIMITER = b"\r\n--graphql"
PART = b"\r\ncontent-type: application/json; charset=utf-8\r\n\r\n"
HEARTBEAT = PART + b"{}" + DELIMITER
END = b"--\r\n"


class MultipartStream(Stream):
    HEADERS = ((b"content-type", MEDIA_TYPE), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no"))
    PREAMBLE = DELIMITER + HEARTBEAT
    HEARTBEAT = HEARTBEAT
    __slots__ = ()

    def result(self, payload: bytes, event_id: str | None) -> bytes:
        return PART + b'{"payload":' + payload + b"}" + DELIMITER

    def end_frame(self) -> bytes:
        return END

    def unavailable(self) -> bytes | None:
        return PART + orjson.dumps({"payload": None, "errors": [UNAVAILABLE]}) + DELIMITER
