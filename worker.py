"""The gunicorn worker: uvicorn's maintained worker class, with what gunicorn can't pass and a
gentler shutdown."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys

from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from settings import settings

FRESH_CONNECTION_GRACE = 1.0
logger = logging.getLogger("uvicorn.error")


class DrainingServer(Server):
    """uvicorn's server, minus one way to drop a request.

    On shutdown (SIGTERM, or `max_requests` recycling) uvicorn closes at once every connection
    with no request in progress, including one it accepted a moment ago whose request is still
    on the wire: that client gets no response at all (Heroku's H13). Here the server stops
    accepting first, gives such fresh connections a moment to deliver their request, and only
    then shuts down as uvicorn does, which lets requests in progress finish.
    """

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        loop = asyncio.get_running_loop()
        started = loop.time()
        while loop.time() < started + FRESH_CONNECTION_GRACE and any(  # noqa: ASYNC110 (no event to wait on)
            getattr(connection, "cycle", False) is None for connection in self.server_state.connections
        ):
            await asyncio.sleep(0.02)
        if loop.time() - started > 0.02:
            logger.info("Waited %.2f s for requests on fresh connections", loop.time() - started)
        await super().shutdown(sockets)


class ChatWorker(UvicornWorker):
    CONFIG_KWARGS = {
        **UvicornWorker.CONFIG_KWARGS,
        "loop": "uvloop",
        "http": "httptools",
        "ws": "realtime.ws_protocol:LeanWebSocketProtocol",
        "lifespan": "on",
        "ws_ping_interval": settings.ws_keepalive_seconds,
        "ws_ping_timeout": settings.ws_keepalive_seconds,
        "ws_max_size": settings.ws_max_size,
        # zlib state costs ~50 KiB per connection; chat frames are too small to gain from it.
        "ws_per_message_deflate": False,
    }

    async def _serve(self) -> None:
        """UvicornWorker._serve with DrainingServer in place of uvicorn's Server."""
        self.config.app = self.wsgi
        server = DrainingServer(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
