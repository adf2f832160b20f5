# ruff: noqa: ASYNC109 (the timeouts are parameters of httpcore's interface)
"""httpcore's network backend on asyncio's own streams, for webhook delivery (transports.webhooks).

httpcore's default backend on asyncio is AnyIO's: each read and write goes through a cancel
scope (even without a timeout) and a checkpoint of its own, which cost a delivery more of the
process's CPU than its HTTP does. Here a read is a StreamReader's read, a write a write and a
drain, and a timeout (when httpcore gives one) an `asyncio.timeout`. Failures are httpcore's
exceptions, as AnyIO's backend raises them (ConnectError, ReadError, WriteError and their
timeouts), so the pool and its callers see what they saw before.

Only TCP (with TLS for https): a webhook endpoint is a URL, never a Unix socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import ssl
from collections.abc import Iterable, Iterator
from typing import Any

import httpcore
from httpcore import AsyncNetworkBackend, AsyncNetworkStream

# A read asks for at most this much (httpcore asks for 64 KiB).
READ_BYTES = 64 * 1024

SocketOption = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]


@contextlib.contextmanager
def _mapped(timeout_error: type[Exception], other: type[Exception]) -> Iterator[None]:
    """A timeout as `timeout_error`, a socket's or TLS's failure as `other`."""
    try:
        yield
    except TimeoutError as error:
        raise timeout_error(error) from error
    except (OSError, ssl.SSLError, EOFError) as error:
        raise other(error) from error


def _readable(sock: socket.socket | None) -> bool:
    """Whether a read would return at once (data, or the end: the peer closed it); a socket
    that is gone counts as readable (its next read ends it), as httpcore's own check does."""
    fileno = -1 if sock is None else sock.fileno()
    if fileno < 0:
        return True
    poll = select.poll()
    poll.register(fileno, select.POLLIN)
    return bool(poll.poll(0))


class AsyncioStream(AsyncNetworkStream):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _mapped(httpcore.ReadTimeout, httpcore.ReadError):
            if timeout is None:
                return await self._reader.read(min(max_bytes, READ_BYTES))
            async with asyncio.timeout(timeout):
                return await self._reader.read(min(max_bytes, READ_BYTES))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        with _mapped(httpcore.WriteTimeout, httpcore.WriteError):
            self._writer.write(buffer)
            if timeout is None:
                await self._writer.drain()
            else:
                async with asyncio.timeout(timeout):
                    await self._writer.drain()

    async def aclose(self) -> None:
        """Closed without waiting on the peer (as AnyIO's backend closes): what is still
        buffered gets one turn of the loop, then the connection is dropped."""
        transport = self._writer.transport
        if transport.is_closing():
            return
        transport.close()
        await asyncio.sleep(0)
        transport.abort()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> AsyncNetworkStream:
        try:
            with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
                async with asyncio.timeout(timeout):
                    await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except Exception:
            await self.aclose()
            raise
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        if info == "is_readable":
            # An idle connection the peer closed (its end already read), or with bytes waiting.
            return self._reader.at_eof() or _readable(self._writer.get_extra_info("socket"))
        return None


class AsyncioBackend(AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> AsyncNetworkStream:
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, local_addr=(local_address, 0) if local_address else None, limit=READ_BYTES
                )
        sock = writer.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return AsyncioStream(reader, writer)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[SocketOption] | None = None
    ) -> AsyncNetworkStream:
        raise httpcore.UnsupportedProtocol("a webhook endpoint is a URL, not a Unix socket")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
