"""The gunicorn worker: uvicorn's maintained worker class, with what gunicorn can't pass and a
shutdown that answers every request it was sent."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from typing import Any

from gunicorn.arbiter import Arbiter
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from settings import load

logger = logging.getLogger("uvicorn.error")
RESTARTING = b"Restarting, retry"


class DrainingHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol, stopping the way a client that keeps connections alive expects.

    uvicorn's own `shutdown` closes at once every connection that is between requests, so a
    request already on its way over a kept-alive connection (Heroku's Router 2.0 reuses them) is
    lost. Draining instead: each connection's next response says `Connection: close` and the
    connection closes after it; a connection nobody uses closes once it has been idle for the
    keep-alive timeout, as it would have anyway, so stopping adds no race that serving doesn't.
    """

    draining = False
    opened_at = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.opened_at = self.loop.time()

    def shutdown(self) -> None:
        self.draining = True
        cycle = self.cycle
        if self.pipeline:
            # The last request already read closes the connection: later ones were never sent.
            self.pipeline[0][0].keep_alive = False
        elif cycle is not None and not cycle.response_complete:
            if not cycle.response_started:
                cycle.keep_alive = False
            # Otherwise its headers already promised keep-alive: the connection drains after it.
        elif cycle is None and self.scope is None:
            # Not a byte of a request yet: idle since it was opened, and no keep-alive timer runs.
            self.timeout_keep_alive_task = self.loop.call_at(
                self.opened_at + self.timeout_keep_alive, self.timeout_keep_alive_handler
            )
        # Idle after a response: its keep-alive timer is already running. Partway through a
        # request: that request's response will close the connection.

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.draining and self.cycle is not None:
            self.cycle.keep_alive = False

    def handle_websocket_upgrade(self) -> None:
        """A WebSocket opened while draining would only be closed with 1012 at once."""
        if not self.draining:
            super().handle_websocket_upgrade()
            return
        content = [STATUS_LINE[503]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: text/plain; charset=utf-8\r\n",
                b"content-length: %d\r\n" % len(RESTARTING),
                b"retry-after: 1\r\n",
                b"connection: close\r\n\r\n",
                RESTARTING,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()


def take_backlog(listener: socket.socket) -> list[socket.socket]:
    """Connections the kernel has completed but nobody accepted yet: when the last process closes
    the listening socket they are reset, after their client may have written its request."""
    listener.setblocking(False)
    accepted = []
    try:
        while True:
            try:
                connection, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            accepted.append(connection)
    finally:
        listener.close()
    return accepted


class DrainingServer(Server):
    """uvicorn's server, stopping with DrainingHttpProtocol's connections: it also takes in what
    waits in the listening socket's backlog, to drain it like any other connection."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        listeners = [sock.dup() for sock in sockets or []]
        for server in self.servers:
            server.close()  # uvloop closes the listening sockets it was given
        backlog = [connection for listener in listeners for connection in take_backlog(listener)]
        loop = asyncio.get_running_loop()
        for connection in backlog:
            await loop.connect_accepted_socket(self.create_protocol, connection)
        logger.info("Draining %d connections (%d from the backlog)", len(self.server_state.connections), len(backlog))
        await super().shutdown(sockets)

    def create_protocol(self) -> asyncio.Protocol:
        return self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state
        )


class ChatWorker(UvicornWorker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = load()
        self.CONFIG_KWARGS = {
            **UvicornWorker.CONFIG_KWARGS,
            "loop": "uvloop",
            "http": DrainingHttpProtocol,
            "ws": "realtime.ws_protocol:LeanWebSocketProtocol",
            "lifespan": "on",
            "ws_ping_interval": settings.ws_keepalive_seconds,
            "ws_ping_timeout": settings.ws_keepalive_seconds,
            "ws_max_size": settings.ws_max_size,
            # zlib state costs ~50 KiB per connection; chat frames are too small to gain from it.
            "ws_per_message_deflate": False,
            # A recycling worker's own bound (gunicorn enforces graceful_timeout only after SIGTERM).
            "timeout_graceful_shutdown": settings.graceful_timeout,
        }
        super().__init__(*args, **kwargs)

    async def _serve(self) -> None:
        """UvicornWorker._serve with DrainingServer in place of uvicorn's Server."""
        self.config.app = self.wsgi
        server = DrainingServer(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
