"""Waiting for a condition with a deadline, in place of a fixed sleep.

A fixed sleep is either too short on a loaded machine (the test flakes) or too long everywhere
(the suite slows). Where the server offers no acknowledgement to wait for, poll the condition
the test needs, often, until a deadline that only a broken server reaches."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

POLL_SECONDS = 0.01


async def until(condition: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 10.0) -> None:
    """Returns once `condition()` (sync or async) is true; fails naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = condition()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(POLL_SECONDS)


def until_sync(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """`until` for tests without an event loop."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(POLL_SECONDS)


def at_window_start(seconds: float, needed: float) -> None:
    """Wait (polling the clock) until at least `needed` seconds of the current fixed window of
    `seconds` remain, so a burst of rate-limited calls lands in one window."""
    deadline = time.monotonic() + needed + 1
    while seconds - time.time() % seconds < needed:
        assert time.monotonic() < deadline
        time.sleep(0.05)
