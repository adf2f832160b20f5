"""Issue 24, resumes: the results a resumer's executions leave with the feed's last events (for
the next resume of the same selection) are bounded per event by KEPT_BYTES_PER_EVENT. Without
the bound, a loop of resumes, each with a new selection, adds one result per event per
selection for as long as the event stays in `recent` (in a quiet room, for good)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from live.logged import KEPT_BYTES_PER_EVENT, RECENT, LoggedFeed, _keep
from live.replay import Allowance

RESULT = 10_000  # bytes of one resumer's result: 26 of them fill an event's allowance
LIVE = 30_000  # bytes of the live groups' own results for an event


def kept_bytes(payloads: dict) -> int:
    return sum(map(len, payloads.values()))


def test_keep_bounds_a_loop_of_new_selections() -> None:
    live_key = (("live", None, ""), ())
    payloads: dict[Any, bytes] = {live_key: b"L" * LIVE}
    for turn in range(1_000):
        _keep(payloads, ((f"selection {turn}", None, ""), ()), b"r" * RESULT)
        assert kept_bytes(payloads) <= max(LIVE, KEPT_BYTES_PER_EVENT)
    kept = len(payloads) - 1
    assert kept == (KEPT_BYTES_PER_EVENT - LIVE) // RESULT  # kept while they fit, none after
    assert payloads[live_key] == b"L" * LIVE  # the live groups' own are never given up

    # A result already kept stays as it is; one larger than the bound is never kept.
    first = (("selection 0", None, ""), ())
    _keep(payloads, first, b"other")
    assert payloads[first] == b"r" * RESULT
    alone: dict[Any, bytes] = {}
    _keep(alone, first, b"x" * (KEPT_BYTES_PER_EVENT + 1))
    assert alone == {}

    # Live groups' results over the bound already: nothing of a resumer's is added.
    crowded: dict[Any, bytes] = {live_key: b"L" * (KEPT_BYTES_PER_EVENT + 1)}
    _keep(crowded, first, b"r")
    assert list(crowded) == [live_key]


class StubEngine:
    """What a feed's resume path asks of its engine: audiences (none: one result a selection)
    and the resumer's own execution of an event."""

    def __init__(self) -> None:
        self.executed = 0

    def audiences(self, selection: Any) -> tuple:
        return ()

    async def execute_resumed(self, subscription: Any, event: dict) -> bytes:
        self.executed += 1
        return b"r" * RESULT


async def test_a_loop_of_resumes_with_new_selections_keeps_at_most_the_bound_per_event() -> None:
    """A feed's resume path (`_prepare`, what a catch-up runs before its hand-over) for 200
    resumers from the start of `recent`, each with a selection of its own: each event's results
    stay within KEPT_BYTES_PER_EVENT beyond the live groups' (2 MB an event without it)."""
    engine = StubEngine()
    feed = LoggedFeed(engine, SimpleNamespace(topic="room:1", log=object(), state=None))  # type: ignore[arg-type]
    live_key = (("live", None, ""), ())
    for seq in range(1, RECENT + 1):
        feed.recent.append(({"seq": seq, "kind": "message_created"}, {live_key: b"L" * LIVE}))
    for turn in range(200):
        resumer = SimpleNamespace(
            source=SimpleNamespace(kinds=None, event_id=None),
            seq=0,
            key=(f"selection {turn}", None, ""),
            selection=None,
            viewer=SimpleNamespace(id=1),
            feed=feed,
        )
        await feed._prepare(resumer, list(feed.recent), Allowance(None, 1))  # type: ignore[arg-type]
    assert engine.executed == 200 * RECENT  # every resumer had its results (executed when not kept)
    for _, payloads in feed.recent:
        assert kept_bytes(payloads) <= KEPT_BYTES_PER_EVENT
        assert payloads[live_key] == b"L" * LIVE
        assert len(payloads) - 1 == (KEPT_BYTES_PER_EVENT - LIVE) // RESULT
