"""The gunicorn worker: uvicorn's maintained worker class with the settings gunicorn can't pass."""

from uvicorn_worker import UvicornWorker

from settings import settings


class ChatWorker(UvicornWorker):
    CONFIG_KWARGS = {
        **UvicornWorker.CONFIG_KWARGS,
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "ws_ping_interval": settings.ws_keepalive_seconds,
        "ws_ping_timeout": settings.ws_keepalive_seconds,
        "ws_max_size": settings.ws_max_size,
        # zlib state costs ~50 KiB per connection; chat frames are too small to gain from it.
        "ws_per_message_deflate": False,
    }
