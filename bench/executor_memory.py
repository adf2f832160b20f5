"""What a subscription's executor keeps per event it serves: graphql-core's Executor copied per
event (as graphql-core's own `subscribe` does) against ours, on a message with its sender and
reactions. tracemalloc, after a warm-up; prints figures, asserts nothing.

    python -m bench.executor_memory     # also a part of `make bench`
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

from graphql import Executor, build_schema, execute_subscription_event, parse

from execution.lean_executor import LeanExecutor

SCHEMA = """
type User { id: ID! name: String! }
type Reaction { emoji: String! count: Int! }
type Message { id: ID! body: String! sender: User! reactions: [Reaction!]! }
type Event { cursor: String! message: Message! }
type Query { unused: Int }
type Subscription { event: Event! }
"""
SELECTION = "subscription { event { cursor message { id body sender { id name } reactions { emoji count } } } }"
EVENTS = 10_000


def event(i: int) -> dict[str, Any]:
    message = {"id": i, "body": "hi", "sender": {"id": 1, "name": "a"}, "reactions": [{"emoji": "👍", "count": 2}]}
    return {"event": {"cursor": str(i), "message": message}}


def kept_per_event(kind: type[Executor]) -> tuple[float, int]:
    """Bytes still held after EVENTS events, per event; and the executor's memo entries."""
    executor = kind.build(build_schema(SCHEMA), parse(SELECTION))
    assert isinstance(executor, Executor)
    for i in range(100):
        execute_subscription_event(executor.build_per_event_executor(event(i)))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(EVENTS):
        execute_subscription_event(executor.build_per_event_executor(event(i)))
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / EVENTS, len(executor._relevant_sub_fields)


def main() -> None:
    print(f"\nA subscription's executor, {EVENTS:,} events (graphql-core's copies per event against ours)")
    for name, kind in (("graphql-core Executor", Executor), ("LeanExecutor", LeanExecutor)):
        kept, memo = kept_per_event(kind)
        print(f"  {name:24} {kept:10.1f} bytes kept per event   {memo:8,} memo entries")


if __name__ == "__main__":
    main()
