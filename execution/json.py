"""orjson for everything we serialize on the hot path (responses and subscription frames)."""

from typing import Any

import orjson
from starlette.responses import JSONResponse


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class FastJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
