"""Streamed GraphQL over HTTP for tests, on httpx: GraphQL over SSE (graphql-sse's "distinct
connections" mode), read as a browser's EventSource reads it (the WHATWG parser: `id`, `event`,
`data`, comments, an event dispatched on a blank line only when it has data); and Apollo's
multipart subscriptions, read as Apollo Client's HttpLink reads them (a part is taken when the
boundary after it arrives; `--graphql--` ends the body). A reader task collects everything with
the time it arrived; the helpers wait for the next N results, or for the end, with a timeout."""

from __future__ import annotations

import asyncio
import codecs
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

SSE_ACCEPT = "text/event-stream"
# What Apollo Client's HttpLink sends for a subscription.
MULTIPART_ACCEPT = 'multipart/mixed;boundary="graphql";subscriptionSpec=1.0,application/json'
STREAM_TIMEOUT = httpx.Timeout(10.0, read=None)


def graphql_request(
    method: str,
    query: str | None,
    variables: dict[str, Any] | None = None,
    operation_name: str | None = None,
    extensions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """httpx keyword arguments for a GraphQL request: a JSON body for POST, query parameters for GET."""
    if method == "GET":
        params: dict[str, str] = {}
        if query is not None:
            params["query"] = query
        if variables is not None:
            params["variables"] = json.dumps(variables)
        if operation_name is not None:
            params["operationName"] = operation_name
        if extensions is not None:
            params["extensions"] = json.dumps(extensions)
        return {"params": params}
    body: dict[str, Any] = {"variables": variables or {}}
    if query is not None:
        body["query"] = query
    if operation_name is not None:
        body["operationName"] = operation_name
    if extensions is not None:
        body["extensions"] = extensions
    return {"json": body}


class _Stream:
    """A streamed response and the task reading it."""

    def __init__(self, http: httpx.AsyncClient, response: httpx.Response, opened_at: float, own_client: bool) -> None:
        self.http = http
        self.response = response
        self.opened_at = opened_at
        self.own_client = own_client
        self.raw = bytearray()
        self.first_byte_at: float | None = None
        self.ended = False
        self.ended_at: float | None = None
        self.error: BaseException | None = None  # how the body ended when it did not end cleanly
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._read())

    @property
    def status(self) -> int:
        return self.response.status_code

    @property
    def headers(self) -> httpx.Headers:
        return self.response.headers

    async def _read(self) -> None:
        try:
            async for chunk in self.response.aiter_raw():
                if not chunk:
                    continue
                if self.first_byte_at is None:
                    self.first_byte_at = time.monotonic()
                self.raw.extend(chunk)
                self._feed(chunk)
                await self._notify()
        except (httpx.HTTPError, OSError) as error:
            self.error = error
        finally:
            self._finish()
            self.ended = True
            self.ended_at = time.monotonic()
            await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _feed(self, chunk: bytes) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        pass

    async def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                async with self._changed:
                    await self._changed.wait_for(predicate)
        except TimeoutError:
            raise AssertionError(f"waited {timeout} s for {what}; received so far: {bytes(self.raw)!r}") from None

    async def wait_end(self, timeout: float = 10.0) -> None:
        await self.wait_until(lambda: self.ended, timeout, "the end of the response")

    async def body(self, timeout: float = 10.0) -> bytes:
        """The whole body (of a response that ends by itself, such as an error)."""
        await self.wait_end(timeout)
        return bytes(self.raw)

    async def json(self, timeout: float = 10.0) -> Any:
        return json.loads(await self.body(timeout))

    async def aclose(self) -> None:
        """Drop the connection, as a closed browser tab does."""
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        await self.response.aclose()
        if self.own_client:
            await self.http.aclose()

    async def __aenter__(self) -> _Stream:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()


async def _open(
    cls: type[_Stream],
    url: str,
    method: str,
    accept: str,
    request: dict[str, Any],
    token: str | None,
    headers: dict[str, str] | None,
    http: httpx.AsyncClient | None,
) -> Any:
    own_client = http is None
    client = http or httpx.AsyncClient(timeout=STREAM_TIMEOUT)
    sent_headers = {"accept": accept, **({"authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
    built = client.build_request(method, url, headers=sent_headers, timeout=STREAM_TIMEOUT, **request)
    opened_at = time.monotonic()
    response = await client.send(built, stream=True)
    return cls(client, response, opened_at, own_client)


# --- Server-sent events -------------------------------------------------------------------------


@dataclass
class SSEEvent:
    type: str  # the `event` field, "message" without one
    data: str
    id: str | None  # this event's own `id` field, if it had one
    last_event_id: str  # what EventSource would report as `lastEventId` (and send back on reconnect)
    at: float

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class SSEComment:
    text: str
    at: float


class SSEStream(_Stream):
    """A `text/event-stream` response, parsed as EventSource parses it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.events: list[SSEEvent] = []
        self.comments: list[SSEComment] = []
        self.timeline: list[SSEEvent | SSEComment] = []
        self.taken = 0  # events handed out by take()
        self._buffer = b""
        self._data: list[str] = []
        self._type = ""
        self._block_id: str | None = None
        self._last_event_id = ""
        super().__init__(*args, **kwargs)

    def _feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        while True:
            match = re.search(rb"\r\n|\n|\r", self._buffer)
            if match is None:
                return
            if match.group() == b"\r" and match.end() == len(self._buffer):
                return  # a CR at the end: wait, it may be the first half of a CRLF
            line, self._buffer = self._buffer[: match.start()], self._buffer[match.end() :]
            self._line(line.decode("utf-8", errors="replace"))

    def _line(self, line: str) -> None:
        now = time.monotonic()
        if line == "":
            if self._data:
                data = "\n".join(self._data)
                event = SSEEvent(self._type or "message", data, self._block_id, self._last_event_id, now)
                self.events.append(event)
                self.timeline.append(event)
            self._data, self._type, self._block_id = [], "", None
            return
        if line.startswith(":"):
            comment = SSEComment(line[1:], now)
            self.comments.append(comment)
            self.timeline.append(comment)
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._type = value
        elif name == "id" and "\0" not in value:
            self._last_event_id = self._block_id = value

    async def take(self, count: int = 1, timeout: float = 10.0) -> list[SSEEvent]:
        """The next `count` events (of any type)."""
        wanted = self.taken + count
        await self.wait_until(lambda: len(self.events) >= wanted or self.ended, timeout, f"{count} event(s)")
        assert len(self.events) >= wanted, f"the stream ended after {self.events[self.taken :]}: {bytes(self.raw)!r}"
        taken, self.taken = self.events[self.taken : wanted], wanted
        return taken

    async def next_events(self, count: int, timeout: float = 10.0) -> list[SSEEvent]:
        """The next `count` events, each a `next`."""
        events = await self.take(count, timeout)
        for event in events:
            assert event.type == "next", event
        return events

    async def results(self, count: int, timeout: float = 10.0) -> list[dict]:
        """The ExecutionResults of the next `count` `next` events."""
        return [event.json() for event in await self.next_events(count, timeout)]

    async def data(self, field: str, count: int, timeout: float = 10.0) -> list[dict]:
        """`data[field]` of the next `count` results, none with errors."""
        found = []
        for result in await self.results(count, timeout):
            assert "errors" not in result, result
            found.append(result["data"][field])
        return found

    async def completes(self, timeout: float = 10.0) -> None:
        """The next event is `complete` (with empty data), and then the response ends cleanly."""
        [event] = await self.take(1, timeout)
        assert event.type == "complete" and event.data == "", event
        await self.wait_end(timeout)
        assert self.error is None, self.error
        assert self.events[self.taken :] == [], self.events[self.taken :]

    async def refused(self, timeout: float = 10.0) -> list[dict]:
        """A `next` with only errors, then `complete`: the errors."""
        [result] = await self.results(1, timeout)
        assert result.get("errors") and not result.get("data"), result
        await self.completes(timeout)
        return result["errors"]

    async def silent(self, seconds: float = 0.8) -> bool:
        """True when no event (comments aside) arrives for `seconds`."""
        before = len(self.events)
        await asyncio.sleep(seconds)
        assert len(self.events) == before, self.events[before:]
        return True

    async def wait_comments(self, count: int, timeout: float = 10.0) -> None:
        await self.wait_until(lambda: len(self.comments) >= count or self.ended, timeout, f"{count} comment(s)")
        assert len(self.comments) >= count, bytes(self.raw)


async def open_sse(
    base_url: str,
    query: str | None,
    variables: dict[str, Any] | None = None,
    *,
    token: str | None = None,
    method: str = "POST",
    last_event_id: str | None = None,
    headers: dict[str, str] | None = None,
    operation_name: str | None = None,
    extensions: dict[str, Any] | None = None,
    http: httpx.AsyncClient | None = None,
    accept: str = SSE_ACCEPT,
) -> SSEStream:
    """A GraphQL request to /graphql asking for `text/event-stream`; returns once the response's
    headers are in (its body is read by a task). `http`: a client of the caller's (its cookies)."""
    extra = {**({"last-event-id": last_event_id} if last_event_id is not None else {}), **(headers or {})}
    request = graphql_request(method, query, variables, operation_name, extensions)
    return await _open(SSEStream, f"{base_url}/graphql", method, accept, request, token, extra, http)


# --- Apollo multipart subscriptions ---------------------------------------------------------------


@dataclass
class Part:
    headers: dict[str, str]
    body: Any  # the part's JSON
    at: float

    @property
    def heartbeat(self) -> bool:
        return self.body == {}


class MultipartStream(_Stream):
    """A `multipart/mixed` response, read with Apollo Client's algorithm
    (parseAndCheckHttpResponse's consumeMultipartBody)."""

    def __init__(self, http: httpx.AsyncClient, response: httpx.Response, opened_at: float, own_client: bool) -> None:
        self.parts: list[Part] = []
        self.finished = False  # the final boundary arrived
        self.taken = 0  # payload parts (not heartbeats) handed out by payloads()
        self._text = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._encountered = False
        match = re.search(
            r";\s*boundary=(?:'([^']+)'|\"([^\"]+)\"|([^\"'].+?))\s*(?:;|$)",
            response.headers.get("content-type", ""),
            re.I,
        )
        self.boundary = "\r\n--" + ((match.group(1) or match.group(2) or match.group(3)) if match else "-")
        super().__init__(http, response, opened_at, own_client)

    def _passed_final_boundary(self) -> bool:
        return self._encountered and self._text[:2] == "--"

    def _feed(self, chunk: bytes) -> None:
        search_from = max(0, len(self._text) - len(self.boundary) + 1)
        self._text += self._decoder.decode(chunk)
        index = self._text.find(self.boundary, search_from)
        while index > -1 and not self._passed_final_boundary():
            self._encountered = True
            message, self._text = self._text[:index], self._text[index + len(self.boundary) :]
            split = message.find("\r\n\r\n")
            headers = {}
            for line in message[: max(split, 0)].split("\r\n"):
                name, colon, value = line.partition(":")
                if colon:
                    headers[name.strip().lower()] = value.strip()
            body = message[split:] if split > -1 else message[-1:]
            if body.strip():
                content_type = headers.get("content-type")
                assert content_type is None or "application/json" in content_type.lower(), headers
                self.parts.append(Part(headers, json.loads(body), time.monotonic()))
            index = self._text.find(self.boundary)
        if self._passed_final_boundary():
            self.finished = True

    @property
    def payload_parts(self) -> list[Part]:
        return [part for part in self.parts if not part.heartbeat]

    @property
    def heartbeats(self) -> list[Part]:
        return [part for part in self.parts if part.heartbeat]

    async def payloads(self, count: int = 1, timeout: float = 10.0) -> list[dict]:
        """The bodies of the next `count` parts that are not heartbeats."""
        wanted = self.taken + count

        def arrived() -> bool:
            return len(self.payload_parts) >= wanted or self.ended or self.finished

        await self.wait_until(arrived, timeout, f"{count} part(s)")
        parts = self.payload_parts
        assert len(parts) >= wanted, f"the body ended after {parts[self.taken :]}: {bytes(self.raw)!r}"
        taken, self.taken = parts[self.taken : wanted], wanted
        return [part.body for part in taken]

    async def data(self, field: str, count: int, timeout: float = 10.0) -> list[dict]:
        """`payload.data[field]` of the next `count` parts, none with errors."""
        found = []
        for body in await self.payloads(count, timeout):
            assert set(body) == {"payload"} and "errors" not in body["payload"], body
            found.append(body["payload"]["data"][field])
        return found

    async def finishes(self, timeout: float = 10.0) -> None:
        """The final boundary arrives with no payload before it, then the response ends cleanly."""
        await self.wait_until(lambda: self.finished or self.ended, timeout, "the final boundary")
        assert self.finished, f"no final boundary: {bytes(self.raw)!r}"
        assert self.payload_parts[self.taken :] == [], self.payload_parts[self.taken :]
        await self.wait_end(timeout)
        assert self.error is None, self.error

    async def silent(self, seconds: float = 0.8) -> bool:
        """True when no part but heartbeats arrives for `seconds`."""
        before = len(self.payload_parts)
        await asyncio.sleep(seconds)
        assert len(self.payload_parts) == before, self.payload_parts[before:]
        return True


def part_errors(body: dict) -> list[dict]:
    """The errors of a multipart part: a result's (`payload.errors`), or transport-level ones
    (`payload: null` and top-level `errors`)."""
    if body.get("payload") is None:
        assert body.get("errors"), body
        return body["errors"]
    assert body["payload"].get("errors"), body
    return body["payload"]["errors"]


async def open_multipart(
    base_url: str,
    query: str | None,
    variables: dict[str, Any] | None = None,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    accept: str = MULTIPART_ACCEPT,
    http: httpx.AsyncClient | None = None,
) -> MultipartStream:
    """A subscription POSTed as Apollo Client's HttpLink posts it; returns once the headers are in."""
    request = graphql_request("POST", query, variables)
    return await _open(MultipartStream, f"{base_url}/graphql", "POST", accept, request, token, headers, http)
