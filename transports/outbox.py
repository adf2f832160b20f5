"""A connection's outgoing frames (a WebSocket's, a streamed HTTP response's), and each
WebSocket operation's sink into them.

Live frames are written to the socket at once while its transport takes them; when the client
reads too slowly they wait in a bounded queue, and a client that lets `limit` of them pile up is
closed with the close its protocol gives for a slow consumer (1013 on both WebSocket protocols:
the client reconnects and resumes). History (a resume) is not the client's backlog but
what we chose to send: it is not counted against that bound but paced, the engine awaiting
`drained` before it reads the next batch. Nothing here holds a task or a buffer while idle.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from contextlib import suppress
from typing import Protocol

from starlette.types import Send
from starlette.websockets import WebSocket

from telemetry import record

logger = logging.getLogger("chat.live")

ENDED = (0, "")  # a streamed response's close: it ends (HTTP has no close code)


class DirectWriter(Protocol):
    """Writes a whole frame to the transport now (uvicorn_protocols: a WebSocket frame, an HTTP chunk)."""

    def write(self, data: bytes) -> bool: ...

    @property
    def open(self) -> bool: ...

    async def wait_writable(self) -> None: ...


class Outbox:
    """A connection's outgoing frames; a transport gives how a frame goes out without the direct
    writer (`_send`) and how the connection ends (`_close`). The frames themselves, and the
    close (`overflow`: code, reason) of a client that lets `limit` live frames pile up, come
    from the protocol."""

    __slots__ = (
        "_closer",
        "_history",
        "_live",
        "_waiters",
        "_writer",
        "close_reason",
        "closed",
        "direct",
        "limit",
        "overflow",
    )

    def __init__(self, direct: DirectWriter | None, limit: int, overflow: tuple[int, str]) -> None:
        self.direct = direct
        self.limit = limit
        self.overflow = overflow
        self.closed = False
        self.close_reason = record.CLIENT  # who ended it (telemetry.record), until we close it
        self._live: deque[bytes] | None = None
        self._history: deque[bytes] | None = None
        self._waiters: list[asyncio.Future[None]] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None

    def put(self, frame: bytes) -> None:
        """A live frame (or a protocol message)."""
        if self.closed:
            return
        if self._writer is None and self.direct is not None and self.direct.write(frame):
            return
        if self._live is None:
            self._live = deque()
        elif len(self._live) >= self.limit:
            logger.warning("Closing a slow consumer: %d frames unsent", self.limit)
            self.close(*self.overflow)
            self.close_reason = record.SLOW_CONSUMER
            return
        self._live.append(frame)
        self._start_writer()

    def put_history(self, frames: list[bytes]) -> None:
        """Frames we chose to send, ahead of live frames that come later."""
        if self.closed or not frames:
            return
        if self._writer is None and self.direct is not None:
            for index, frame in enumerate(frames):
                if not self.direct.write(frame):
                    frames = frames[index:]
                    break
            else:
                return
        if self._history is None:
            self._history = deque()
        self._history.extend(frames)
        self._start_writer()

    async def drained(self) -> None:
        """Returns once every history frame is written and the transport takes more."""
        if not self.closed and self._history:
            waiter = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            await waiter
        if not self.closed and self.direct is not None:
            await self.direct.wait_writable()

    def close(self, code: int, reason: str) -> None:
        """Close at once, dropping what is unsent: a resuming client asks for it again."""
        if self.closed:
            return
        self.close_reason = record.SERVER
        self._stop()
        self._closer = asyncio.create_task(self._close(code, reason))

    async def aclose(self) -> None:
        """The connection is over: let go of everything."""
        self._stop()
        if self._writer is not None:
            self._writer.cancel()
            with suppress(asyncio.CancelledError):
                await self._writer

    async def _send(self, frame: bytes) -> None:
        raise NotImplementedError

    async def _close(self, code: int, reason: str) -> None:
        raise NotImplementedError

    def _idle(self) -> None:
        """Everything queued is written."""

    def _stop(self) -> None:
        self.closed = True
        self._live = self._history = None
        if self._writer is not None and self._writer is not asyncio.current_task():
            self._writer.cancel()
        self._release()

    def _release(self) -> None:
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def _start_writer(self) -> None:
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while True:
                if self._history:
                    frame = self._history.popleft()
                    if not self._history:
                        self._release()
                elif self._live:
                    frame = self._live.popleft()
                else:
                    break
                await self._write(frame)
            self._live = self._history = None
        except asyncio.CancelledError:
            raise
        except Exception:  # the connection went away; its handler cleans up the operations
            self.closed = True
            self._live = self._history = None
            self._release()
        finally:
            self._writer = None
        self._idle()

    async def _write(self, frame: bytes) -> None:
        direct = self.direct
        if direct is None:
            await self._send(frame)
            return
        while not direct.write(frame):
            if not direct.open:
                raise ConnectionError("the connection is closed")
            await direct.wait_writable()


class WebSocketOutbox(Outbox):
    __slots__ = ("websocket",)

    def __init__(
        self, websocket: WebSocket, direct: DirectWriter | None, limit: int, overflow: tuple[int, str]
    ) -> None:
        super().__init__(direct, limit, overflow)
        self.websocket = websocket

    async def _send(self, frame: bytes) -> None:
        await self.websocket.send_text(frame.decode())

    async def _close(self, code: int, reason: str) -> None:
        """uvicorn sends the close frame once the client reads again; a client that never does is
        dropped by the ping timeout, which ends this wait too. No timeout of ours: cutting it short
        would leave the client with no close code at all."""
        with suppress(Exception):
            await self.websocket.close(code=code, reason=reason)


class StreamOutbox(Outbox):
    """A streamed HTTP response's chunks (SSE, multipart). Closing ends the response: HTTP has
    no close code (a slow consumer's response just ends), the client reconnects (an EventSource
    by itself) and resumes."""

    __slots__ = ("_ending", "_send_message")

    def __init__(self, send: Send, direct: DirectWriter | None, limit: int) -> None:
        super().__init__(direct, limit, ENDED)
        self._send_message = send
        self._ending = False

    def finish(self, tail: bytes) -> None:
        """`tail` after everything queued, then the response's end."""
        if self.closed:
            return
        self.close_reason = record.COMPLETED
        self.put(tail)
        self._ending = True
        if self._writer is None:
            self._idle()

    def _idle(self) -> None:
        if self._ending and not self.closed:
            self.close(0, "")

    async def _send(self, frame: bytes) -> None:
        await self._send_message({"type": "http.response.body", "body": frame, "more_body": True})

    async def _close(self, code: int, reason: str) -> None:
        with suppress(Exception):
            await self._send_message({"type": "http.response.body", "body": b"", "more_body": False})
