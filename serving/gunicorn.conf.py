"""gunicorn settings for Heroku and for `make run`. GUNICORN_CMD_ARGS still overrides these."""

import os
from typing import Any

from core.settings import load

settings = load()

bind = f"0.0.0.0:{settings.port}"
# WEB_CONCURRENCY, never the CPU count: a dyno reports the host's cores, not its share.
# (1 without REDIS_URL: the in-process broadcast reaches one worker only.)
workers = settings.web_concurrency
worker_class = "serving.worker.ChatWorker"
# Recycle workers, spread out: without jitter they would all restart at once.
max_requests = settings.max_requests
max_requests_jitter = settings.max_requests_jitter
# Heroku sends SIGKILL 30 s after SIGTERM: finish in-flight work well before that.
graceful_timeout = settings.graceful_timeout
timeout = 30
keepalive = 5
# X-Forwarded-For/-Proto are read by the app (forwarded.py, FORWARDED_ALLOW_IPS): the rightmost
# entry, the one Heroku's router appended. uvicorn's own handling is off (worker.py).
accesslog = "-"
errorlog = "-"
if settings.log_format == "json":
    logger_class = "serving.json_logs.JSONLogger"


def pre_fork(server: Any, worker: Any) -> None:
    """The worker's slot: the lowest one no live worker holds, so a recycled worker takes its
    predecessor's (telemetry's service.instance.id continues its series)."""
    held = {getattr(other, "slot", None) for other in server.WORKERS.values()}
    worker.slot = next(slot for slot in range(len(held) + 1) if slot not in held)


def post_fork(server: Any, worker: Any) -> None:
    """In the worker, before it loads the app: the slot, for the settings to read."""
    os.environ["CHAT_WORKER_SLOT"] = str(worker.slot)
