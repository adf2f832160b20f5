"""gunicorn's own log lines (the arbiter's, and the workers' error and access logs, which
uvicorn's worker shares) as JSON objects when LOG_FORMAT=json: set as gunicorn's
`logger_class` by serving/gunicorn.conf.py, so even the arbiter's first line is one."""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

from core.logs import JSONFormatter


class JSONLogger(Logger):
    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        formatter = JSONFormatter()
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(formatter)
