"""A loopback TCP forwarder whose target can be switched while it runs.

It plays the part DNS plays in Heroku Postgres's high-availability failover: the app keeps one
address, and after the failover that address leads to the promoted standby. Connections open at
the switch are cut, as the old primary's going away cuts them.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from tests.support.processes import free_port

CHUNK = 65536


@dataclass
class TCPProxy:
    target_port: int
    port: int = field(default_factory=free_port)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: asyncio.Server | None = None
    _open: set[asyncio.StreamWriter] = field(default_factory=set)

    def start(self) -> TCPProxy:
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(asyncio.start_server(self._forward, "127.0.0.1", self.port))
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="tcp-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the proxy did not start")
        return self

    def switch(self, target_port: int) -> None:
        """From now on connect to `target_port`; connections open now are cut."""
        self._call(self._switch, target_port)

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._call(self._close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    def _call(self, function: object, *args: object) -> None:
        assert self._loop is not None

        async def call() -> None:
            function(*args)  # type: ignore[operator]

        asyncio.run_coroutine_threadsafe(call(), self._loop).result(10)

    def _switch(self, target_port: int) -> None:
        self.target_port = target_port
        self._cut()

    def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._cut()

    def _cut(self) -> None:
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    async def _forward(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:  # nothing listens there: the client sees its connection end
            client_writer.transport.abort()
            return
        pair = (client_writer, server_writer)
        self._open.update(pair)
        try:
            await asyncio.gather(_pipe(client_reader, server_writer), _pipe(server_reader, client_writer))
        finally:
            for writer in pair:
                self._open.discard(writer)
                writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Until either side ends: then both directions end (Postgres never half-closes)."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.transport.abort()
