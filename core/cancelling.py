"""Stopping background tasks for sure.

On Python 3.11, `asyncio.wait_for` returns its inner result and drops the cancellation when the
inner future finishes in the same loop turn as the cancel (gh-86296, fixed in 3.12). redis-py
awaits its socket writes with it, so a task cancelled mid-command can go on with its loop: a stop
that cancels once may then wait until gunicorn kills the worker at the graceful timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

# How long a cancelled task has to end before it is cancelled again.
AGAIN_AFTER_SECONDS = 0.05


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel each until it has ended; what they raised is theirs (as `gather(return_exceptions=True)`)."""
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=AGAIN_AFTER_SECONDS)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved, so not logged as never retrieved
