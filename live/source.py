"""The live engine's public names, all that resolvers import from it: what a subscription's
source resolver returns for the engine to serve it (`LiveSource`, its `Event`s and `TopicLog`),
and how a field that depends on who asks says so (`Audience`, `Keyer`, `per_viewer`).

The engine knows topics, not rooms: a source names a topic, says where the subscriber resumes
(for a topic with a log) and how to check that its viewer may still receive it. Adding a live
field is SDL, a source resolver returning a `LiveSource`, and a field resolver that turns one
event into the field's value.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from graphql import GraphQLError

from core.reaches import written_against
from identity.auth import Viewer

WRITTEN_AGAINST = written_against("graphql-core")  # LiveSource.__aiter__, a reach

Event = dict[str, Any]
# An event's keys, on a topic that follows others, for the topic its feed starts or stops following.
FOLLOW = "follow"
UNFOLLOW = "unfollow"
# A viewer's key for one event: viewers with equal keys see the same result.
Keyer = Callable[[Viewer], Hashable]
# What tells viewers apart for an event (a field's `mine`, say), or None when all see the same.
Audience = Callable[[Event], Keyer | None]
# What the executions of one followed topic's event need, read once for all of a process's
# following viewers: a value per viewer id (live.following).
Prepare = Callable[[Event, list[Viewer]], Awaitable[Mapping[int, Any]]]
# The key of an execution's context under which it finds its viewer's prepared value.
PREPARED = "prepared"


def _viewer_id(viewer: Viewer) -> Hashable:
    return viewer.id


def per_viewer(_event: Event) -> Keyer:
    """The audience of a field each viewer sees differently whatever the event."""
    return _viewer_id


class TopicLog(Protocol):
    """A topic's durable log, whose events carry a gap-free `seq` (1, 2, 3...)."""

    async def after(self, seq: int, limit: int) -> list[Event]:
        """Up to `limit` events after `seq`, oldest first."""
        ...

    async def newest(self, limit: int) -> list[Event]:
        """The last `limit` events, oldest first (the last one is the log's head)."""
        ...

    def revised(self, earlier: Event, later: Event) -> Event | None:
        """How `earlier` reads once `later` has happened, or None when it reads the same: a
        replay from memory must show what a replay from the log would (an edit or a delete
        reaching back to the message's earlier events)."""
        ...


@dataclass(frozen=True, eq=False, slots=True)
class LiveSource:
    topic: str
    viewer: Viewer
    # Why the viewer may not (or no longer) receive the topic, or None: run once the subscription
    # is in its feed (so a revocation racing the start cannot slip by) and after a reconnect.
    check: Callable[[], Awaitable[GraphQLError | None]]
    # A logged topic: events are numbered, resumable and filled from here when missed.
    log: TopicLog | None = None
    # Resume after this seq of the log; None: from now on.
    after: int | None = None
    # The event kinds this field delivers (None: every event of the topic).
    kinds: frozenset[str] | None = None
    # The id a transport gives each result (SSE's `id:`), which the client passes back to resume.
    event_id: Callable[[Event], str | None] | None = None
    # An ephemeral topic's state: read for a new subscriber, and again on every change announced
    # on the topic (once per process), and when the state says it expires (`refresh_at`, epoch
    # seconds); subscribers get it when it changed.
    state: Callable[[], Awaitable[Event]] | None = None
    # A topic that also follows others (live.following): the topics its subscribers hear too,
    # read when the topic's feed starts and after a resync. An event on the topic itself that
    # names a topic under FOLLOW or UNFOLLOW changes the set first, then is delivered.
    follows: Callable[[], Awaitable[Iterable[str]]] | None = None
    # A topic that follows others: read, for each event of a followed topic, what the executions
    # of every following subscriber of this process need (their own rows, say) in one go, before
    # any executes; each finds its viewer's value in its context under PREPARED, and one whose
    # viewer got none reads for itself. Sources whose `prepare` is the same function (bound
    # methods of one function) prepare for each other's viewers: an engine serves one app.
    prepare: Prepare | None = None

    @property
    def logged(self) -> bool:
        return self.log is not None

    def __aiter__(self) -> AsyncIterator[Event]:
        """graphql-core accepts only an async iterable from a source resolver; the live engine
        serves this one, nothing iterates it. A reach (core/reaches.py, WRITTEN_AGAINST):
        `create_source_event_stream` hands the source back untouched, and the transports take
        the LiveSource from it; tests/test_library_reaches.py fails loudly when it stops."""
        raise TypeError("A LiveSource is served by the live engine (live.engine), not iterated")
