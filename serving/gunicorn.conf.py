"""gunicorn settings for Heroku and for `make run`. GUNICORN_CMD_ARGS still overrides these."""

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
