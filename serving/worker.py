"""The gunicorn worker: uvicorn's maintained worker class (uvicorn-worker 0.4.0, pinned), with
what gunicorn can't pass and the server and protocols of uvicorn_protocols.py. Its `_serve`
override is the one reach into uvicorn-worker's internals (tests/test_library_reaches.py)."""

from __future__ import annotations

import sys
from typing import Any

from gunicorn.arbiter import Arbiter
from uvicorn_worker import UvicornWorker

from core.reaches import written_against
from core.settings import load
from serving.uvicorn_protocols import DrainingHttpProtocol, DrainingServer

WRITTEN_AGAINST = written_against("uvicorn-worker")


class ChatWorker(UvicornWorker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = load()
        self.CONFIG_KWARGS = {
            **UvicornWorker.CONFIG_KWARGS,
            "loop": "uvloop",
            "http": DrainingHttpProtocol,
            "ws": "serving.uvicorn_protocols:LeanWebSocketProtocol",
            "lifespan": "on",
            # The client's address and scheme are the app's to read (forwarded.py): uvicorn's
            # middleware takes the leftmost X-Forwarded-For entry, the one the client wrote.
            "proxy_headers": False,
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
